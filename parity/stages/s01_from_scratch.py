"""Stage 1, "Neural net from scratch (no torch.nn)": logistic regression with hand-made weights.

torch: the tutorial's code. tinynn: the same code on NumPy arrays; where torch calls
``loss.backward()``, tinynn runs the chain rule by hand, from the loss back to the weights,
with the pure backward functions of ``tinynn.nn.functional``.
"""

# The tutorial's code as written: its class names, and loop and shape names it does not use.
# ruff: noqa: B007, RUF059

from __future__ import annotations

import math

import numpy as np

from parity.events import Start, Step

NAME = "from_scratch"
TITLE = "Neural net from scratch (no torch.nn)"
KIND = "linear"


def torch_version(ctx):
    import torch

    from parity.stages.torch_tutorial import validate

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    n, c = x_train.shape

    weights = torch.randn(784, 10) / math.sqrt(784)
    weights.requires_grad_()
    bias = torch.zeros(10, requires_grad=True)
    yield Start({"weights": weights, "bias": bias})

    def log_softmax(x):
        return x - x.exp().sum(-1).log().unsqueeze(-1)

    def model(xb):
        return log_softmax(xb @ weights + bias)

    bs = 64  # batch size

    def nll(input, target):
        return -input[range(target.shape[0]), target].mean()

    loss_func = nll

    lr = 0.5  # learning rate
    epochs = ctx.epochs  # how many epochs to train for (the tutorial: 2)

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
                weights -= weights.grad * lr
                bias -= bias.grad * lr
                step = Step(loss, {"weights": weights, "bias": bias})  # parity: before the grads are zeroed
                weights.grad.zero_()
                bias.grad.zero_()
            yield step

        yield validate(model, loss_func, x_valid, y_valid)


def tinynn_version(ctx):
    import tinynn
    import tinynn.nn.functional as F
    from parity.stages.tinynn_tutorial import validate

    x_train, y_train, x_valid, y_valid = ctx.data()
    n, c = x_train.shape

    weights = tinynn.default_generator().standard_normal((784, 10)).astype(x_train.dtype) / math.sqrt(784)
    bias = np.zeros(10, dtype=x_train.dtype)
    yield Start({"weights": weights, "bias": bias})

    def log_softmax(x):
        return x - np.log(np.exp(x).sum(-1))[..., None]

    def model(xb):
        return log_softmax(xb @ weights + bias)

    bs = 64  # batch size

    def nll(input, target):
        return -input[range(target.shape[0]), target].mean()

    loss_func = nll

    lr = 0.5  # learning rate
    epochs = ctx.epochs  # how many epochs to train for (the tutorial: 2)

    for epoch in range(epochs):
        for i in range((n - 1) // bs + 1):
            start_i = i * bs
            end_i = start_i + bs
            xb = x_train[start_i:end_i]
            yb = y_train[start_i:end_i]
            pred = model(xb)
            loss = loss_func(pred, yb)

            # loss.backward(), by hand: through nll, then log_softmax, then xb @ weights + bias
            grad_pred = F.nll_loss_backward(1.0, pred, yb)  # -1/bs at each target, 0 elsewhere
            grad_logits = F.log_softmax_backward(grad_pred, pred, dim=-1)  # g - softmax * sum(g)
            weights_grad = xb.T @ grad_logits
            bias_grad = grad_logits.sum(0)
            weights -= weights_grad * lr
            bias -= bias_grad * lr
            yield Step(loss, {"weights": weights, "bias": bias}, grads={"weights": weights_grad, "bias": bias_grad})

        yield validate(model, loss_func, x_valid, y_valid)
