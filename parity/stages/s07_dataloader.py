"""Stage 7, "Refactor using DataLoader": the loader hands out the minibatches."""

# The tutorial's code as written: its class names, and loop and shape names it does not use.
# ruff: noqa: B007

from __future__ import annotations

from parity.events import Start, Step

NAME = "dataloader"
TITLE = "Refactor using DataLoader"
KIND = "linear"


def torch_version(ctx):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from parity.stages.torch_tutorial import bs, get_model, validate

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    loss_func = F.cross_entropy

    train_ds = TensorDataset(x_train, y_train)
    train_dl = DataLoader(train_ds, batch_size=bs)

    model, opt = get_model()
    yield Start.of(model, opt)

    for epoch in range(ctx.epochs):
        for xb, yb in train_dl:
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
    from tinynn.utils.data import DataLoader, TensorDataset

    x_train, y_train, x_valid, y_valid = ctx.data()
    loss_func = F.cross_entropy

    train_ds = TensorDataset(x_train, y_train)
    train_dl = DataLoader(train_ds, batch_size=bs)

    model, opt = get_model()
    yield Start.of(model, opt)

    for epoch in range(ctx.epochs):
        for xb, yb in train_dl:
            pred = model(xb)
            loss = loss_func(pred, yb)

            model.backward(F.cross_entropy_backward(1.0, pred, yb), needs_input_grad=False)  # loss.backward()
            opt.step()
            yield Step.of(loss, model, opt)  # parity: the runner compares here
            opt.zero_grad()

        yield validate(model, loss_func, x_valid, y_valid)
