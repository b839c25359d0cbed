"""Stage 3, "Refactor using nn.Module": a class holding ``nn.Parameter`` weights.

tinynn's module has no autograd behind it, so it carries its own ``backward``: ``forward`` keeps
its input (``save_for_backward``) and ``backward`` turns dL/d(output) into the parameters' grads.
"""

# The tutorial's code as written: its class names, and loop and shape names it does not use.
# ruff: noqa: N801, B007, RUF059

from __future__ import annotations

import math

import numpy as np

from parity.events import Start, Step

NAME = "module"
TITLE = "Refactor using nn.Module"
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
            self.weights = nn.Parameter(torch.randn(784, 10) / math.sqrt(784))
            self.bias = nn.Parameter(torch.zeros(10))

        def forward(self, xb):
            return xb @ self.weights + self.bias

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
    import tinynn
    import tinynn.nn.functional as F
    from parity.stages.tinynn_tutorial import bs, validate
    from tinynn import nn

    x_train, y_train, x_valid, y_valid = ctx.data()
    n, c = x_train.shape
    loss_func = F.cross_entropy

    class Mnist_Logistic(nn.Module):
        def __init__(self):
            super().__init__()
            randn = tinynn.default_generator().standard_normal
            self.weights = nn.Parameter(randn((784, 10), dtype=np.float32) / math.sqrt(784))
            self.bias = nn.Parameter(np.zeros(10, dtype=np.float32))

        def forward(self, xb):
            self.save_for_backward(xb)
            return xb @ self.weights.data + self.bias.data

        def backward(self, grad_output, needs_input_grad=True):
            (xb,) = self.saved_tensors()
            self.weights.accumulate_grad(xb.T @ grad_output)  # out = xb @ W + b: dW = xb.T @ dout
            self.bias.accumulate_grad(grad_output.sum(0))  # db = dout summed over the batch
            return grad_output @ self.weights.data.T if needs_input_grad else None  # dxb = dout @ W.T

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
