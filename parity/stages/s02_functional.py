"""Stage 2, "Using torch.nn.functional": ``F.cross_entropy`` replaces log_softmax + nll.

tinynn's ``F.cross_entropy_backward`` gives the gradient of the fused loss in one step:
(softmax(pred) - onehot(yb)) / bs.
"""

# The tutorial's code as written: its class names, and loop and shape names it does not use.
# ruff: noqa: B007, RUF059

from __future__ import annotations

import math

import numpy as np

from parity.events import Start, Step

NAME = "functional"
TITLE = "Using torch.nn.functional"
KIND = "linear"


def torch_version(ctx):
    import torch
    import torch.nn.functional as F

    from parity.stages.torch_tutorial import bs, validate

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    n, c = x_train.shape

    weights = torch.randn(784, 10) / math.sqrt(784)
    weights.requires_grad_()
    bias = torch.zeros(10, requires_grad=True)
    yield Start({"weights": weights, "bias": bias})

    loss_func = F.cross_entropy

    def model(xb):
        return xb @ weights + bias

    lr = 0.5
    for epoch in range(ctx.epochs):
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
    from parity.stages.tinynn_tutorial import bs, validate

    x_train, y_train, x_valid, y_valid = ctx.data()
    n, c = x_train.shape

    weights = tinynn.default_generator().standard_normal((784, 10)).astype(x_train.dtype) / math.sqrt(784)
    bias = np.zeros(10, dtype=x_train.dtype)
    yield Start({"weights": weights, "bias": bias})

    loss_func = F.cross_entropy

    def model(xb):
        return xb @ weights + bias

    lr = 0.5
    for epoch in range(ctx.epochs):
        for i in range((n - 1) // bs + 1):
            start_i = i * bs
            end_i = start_i + bs
            xb = x_train[start_i:end_i]
            yb = y_train[start_i:end_i]
            pred = model(xb)
            loss = loss_func(pred, yb)

            # loss.backward(), by hand: through cross_entropy, then xb @ weights + bias
            grad_pred = F.cross_entropy_backward(1.0, pred, yb)
            weights_grad = xb.T @ grad_pred
            bias_grad = grad_pred.sum(0)
            weights -= weights_grad * lr
            bias -= bias_grad * lr
            yield Step(loss, {"weights": weights, "bias": bias}, grads={"weights": weights_grad, "bias": bias_grad})

        yield validate(model, loss_func, x_valid, y_valid)
