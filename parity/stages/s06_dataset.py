"""Stage 6, "Refactor using Dataset": ``TensorDataset`` slices x and y together."""

# The tutorial's code as written: its class names, and loop and shape names it does not use.
# ruff: noqa: B007, RUF059

from __future__ import annotations

from parity.events import Start, Step

NAME = "dataset"
TITLE = "Refactor using Dataset"
KIND = "linear"


def torch_version(ctx):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import TensorDataset

    from parity.stages.torch_tutorial import bs, get_model, validate

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    n, c = x_train.shape
    loss_func = F.cross_entropy

    train_ds = TensorDataset(x_train, y_train)

    model, opt = get_model()
    yield Start.of(model, opt)

    for epoch in range(ctx.epochs):
        for i in range((n - 1) // bs + 1):
            xb, yb = train_ds[i * bs: i * bs + bs]
            pred = model(xb)
            loss = loss_func(pred, yb)

            loss.backward()
            opt.step()
            yield Step.of(loss, model, opt)  # parity: the runner compares here
            opt.zero_grad()

        yield validate(model, loss_func, x_valid, y_valid)


def tinynn_version(ctx):
    import tinynn.nn.functional as F
    from parity.stages.tinynn_tutorial import bs, get_model, validate
    from tinynn.utils.data import TensorDataset

    x_train, y_train, x_valid, y_valid = ctx.data()
    n, c = x_train.shape
    loss_func = F.cross_entropy

    train_ds = TensorDataset(x_train, y_train)

    model, opt = get_model()
    yield Start.of(model, opt)

    for epoch in range(ctx.epochs):
        for i in range((n - 1) // bs + 1):
            xb, yb = train_ds[i * bs: i * bs + bs]
            pred = model(xb)
            loss = loss_func(pred, yb)

            model.backward(F.cross_entropy_backward(1.0, pred, yb), needs_input_grad=False)  # loss.backward()
            opt.step()
            yield Step.of(loss, model, opt)  # parity: the runner compares here
            opt.zero_grad()

        yield validate(model, loss_func, x_valid, y_valid)
