"""Stage 5, "Refactor using optim": ``opt.step()`` and ``opt.zero_grad()`` replace the manual update."""

# The tutorial's code as written: its class names, and loop and shape names it does not use.
# ruff: noqa: B007, RUF059

from __future__ import annotations

from parity.events import Start, Step

NAME = "optim"
TITLE = "Refactor using optim"
KIND = "linear"


def torch_version(ctx):
    import torch
    import torch.nn.functional as F
    from torch import optim

    from parity.stages.torch_tutorial import Mnist_Logistic, bs, lr, validate

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    n, c = x_train.shape
    loss_func = F.cross_entropy

    def get_model():
        model = Mnist_Logistic()
        return model, optim.SGD(model.parameters(), lr=lr)

    model, opt = get_model()
    yield Start.of(model, opt)

    for epoch in range(ctx.epochs):
        for i in range((n - 1) // bs + 1):
            start_i = i * bs
            end_i = start_i + bs
            xb = x_train[start_i:end_i]
            yb = y_train[start_i:end_i]
            pred = model(xb)
            loss = loss_func(pred, yb)

            loss.backward()
            opt.step()
            yield Step.of(loss, model, opt)  # parity: the runner compares here
            opt.zero_grad()

        yield validate(model, loss_func, x_valid, y_valid)


def tinynn_version(ctx):
    import tinynn.nn.functional as F
    from parity.stages.tinynn_tutorial import Mnist_Logistic, bs, lr, validate
    from tinynn import optim

    x_train, y_train, x_valid, y_valid = ctx.data()
    n, c = x_train.shape
    loss_func = F.cross_entropy

    def get_model():
        model = Mnist_Logistic()
        return model, optim.SGD(model.parameters(), lr=lr)

    model, opt = get_model()
    yield Start.of(model, opt)

    for epoch in range(ctx.epochs):
        for i in range((n - 1) // bs + 1):
            start_i = i * bs
            end_i = start_i + bs
            xb = x_train[start_i:end_i]
            yb = y_train[start_i:end_i]
            pred = model(xb)
            loss = loss_func(pred, yb)

            model.backward(F.cross_entropy_backward(1.0, pred, yb), needs_input_grad=False)  # loss.backward()
            opt.step()
            yield Step.of(loss, model, opt)  # parity: the runner compares here
            opt.zero_grad()

        yield validate(model, loss_func, x_valid, y_valid)
