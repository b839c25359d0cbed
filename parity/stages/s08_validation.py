"""Stage 8, "Add validation": shuffled training batches, ``model.train()``/``eval()``, ``no_grad``.

The shuffle is torch's: its seeded order is replayed into tinynn's DataLoader as a ``sampler``.
"""

# The tutorial's code as written: its class names, and loop and shape names it does not use.
# ruff: noqa: B007

from __future__ import annotations

from parity.events import Epoch, Start, Step

NAME = "validation"
TITLE = "Add validation"
KIND = "linear"


def torch_version(ctx):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from parity.stages.torch_tutorial import accuracy, bs, get_model

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    loss_func = F.cross_entropy

    train_ds = TensorDataset(x_train, y_train)
    train_dl = DataLoader(train_ds, batch_size=bs, shuffle=True, generator=ctx.shuffle_generator())

    valid_ds = TensorDataset(x_valid, y_valid)
    valid_dl = DataLoader(valid_ds, batch_size=bs * 2)

    model, opt = get_model()
    yield Start.of(model, opt)

    for epoch in range(ctx.epochs):
        model.train()
        for xb, yb in train_dl:
            pred = model(xb)
            loss = loss_func(pred, yb)

            loss.backward()
            opt.step()
            yield Step.of(loss, model, opt)  # parity: the runner compares here
            opt.zero_grad()

        model.eval()
        with torch.no_grad():
            valid_loss = sum(loss_func(model(xb), yb) for xb, yb in valid_dl)
            valid_acc = sum(accuracy(model(xb), yb) for xb, yb in valid_dl)  # parity: accuracy too

        yield Epoch(valid_loss / len(valid_dl), valid_acc / len(valid_dl))  # print(epoch, valid_loss / len(valid_dl))


def tinynn_version(ctx):
    import tinynn
    from parity.stages.tinynn_tutorial import accuracy, bs, get_model
    from tinynn import nn
    from tinynn.utils.data import DataLoader, TensorDataset

    x_train, y_train, x_valid, y_valid = ctx.data()
    loss_func = nn.CrossEntropyLoss()  # F.cross_entropy as a module: it keeps what its backward needs

    train_ds = TensorDataset(x_train, y_train)
    train_dl = DataLoader(train_ds, batch_size=bs, sampler=ctx.shuffle_sampler(len(train_ds)))

    valid_ds = TensorDataset(x_valid, y_valid)
    valid_dl = DataLoader(valid_ds, batch_size=bs * 2)

    model, opt = get_model()
    yield Start.of(model, opt)

    for epoch in range(ctx.epochs):
        model.train()
        for xb, yb in train_dl:
            pred = model(xb)
            loss = loss_func(pred, yb)

            model.backward(loss_func.backward(), needs_input_grad=False)  # loss.backward()
            opt.step()
            yield Step.of(loss, model, opt)  # parity: the runner compares here
            opt.zero_grad()

        model.eval()
        with tinynn.no_grad():
            valid_loss = sum(loss_func(model(xb), yb) for xb, yb in valid_dl)
            valid_acc = sum(accuracy(model(xb), yb) for xb, yb in valid_dl)  # parity: accuracy too

        yield Epoch(valid_loss / len(valid_dl), valid_acc / len(valid_dl))  # print(epoch, valid_loss / len(valid_dl))
