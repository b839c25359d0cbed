"""Stage 4, "Refactor using nn.Linear": the layer holds the weights and computes ``xb @ W.T + b``.

tinynn's model passes its backward on to the layer: ``Linear.backward`` does the matrix calculus.
"""

# The tutorial's code as written: its class names, and loop and shape names it does not use.
# ruff: noqa: N801, B007, RUF059

from __future__ import annotations

from parity.events import Start, Step

NAME = "linear"
TITLE = "Refactor using nn.Linear"
KIND = "linear"


def torch_version(ctx):
    import torch
    import torch.nn.functional as F
    from torch import nn

    from parity.stages.torch_tutorial import bs, validate

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    n, c = x_train.shape
    loss_func = F.cross_entropy

    class Mnist_Logistic(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(784, 10)

        def forward(self, xb):
            return self.lin(xb)

    model = Mnist_Logistic()
    yield Start.of(model)

    lr = 0.5
    epochs = ctx.epochs

    def fit():
        for epoch in range(epochs):
            for i in range((n - 1) // bs + 1):
                start_i = i * bs
                end_i = start_i + bs
                xb = x_train[start_i:end_i]
                yb = y_train[start_i:end_i]
                pred = model(xb)
                loss = loss_func(pred, yb)

                loss.backward()
                with torch.no_grad():
                    for p in model.parameters():
                        p -= p.grad * lr
                    step = Step.of(loss, model)  # parity: before zero_grad drops the grads
                    model.zero_grad()
                yield step

            yield validate(model, loss_func, x_valid, y_valid)

    yield from fit()


def tinynn_version(ctx):
    import tinynn.nn.functional as F
    from parity.stages.tinynn_tutorial import bs, validate
    from tinynn import nn

    x_train, y_train, x_valid, y_valid = ctx.data()
    n, c = x_train.shape
    loss_func = F.cross_entropy

    class Mnist_Logistic(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(784, 10)

        def forward(self, xb):
            return self.lin(xb)

        def backward(self, grad_output, needs_input_grad=True):
            return self.lin.backward(grad_output, needs_input_grad)

    model = Mnist_Logistic()
    yield Start.of(model)

    lr = 0.5
    epochs = ctx.epochs

    def fit():
        for epoch in range(epochs):
            for i in range((n - 1) // bs + 1):
                start_i = i * bs
                end_i = start_i + bs
                xb = x_train[start_i:end_i]
                yb = y_train[start_i:end_i]
                pred = model(xb)
                loss = loss_func(pred, yb)

                model.backward(F.cross_entropy_backward(1.0, pred, yb), needs_input_grad=False)  # loss.backward()
                for p in model.parameters():
                    p.data -= p.grad * lr
                step = Step.of(loss, model)  # parity: before zero_grad drops the grads
                model.zero_grad()
                yield step

            yield validate(model, loss_func, x_valid, y_valid)

    yield from fit()
