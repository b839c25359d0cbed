"""Stage 9, "Create fit() and get_data()": the training loop as three reusable functions.

``loss_batch``, ``fit`` and ``get_data`` live in torch_tutorial.py and tinynn_tutorial.py, where
stages 10-13 reuse them; read them there, side by side.
"""

from __future__ import annotations

from parity.events import Start

NAME = "fit"
TITLE = "Create fit() and get_data()"
KIND = "linear"


def torch_version(ctx):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import TensorDataset

    from parity.stages.torch_tutorial import bs, fit, get_data, get_model

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    train_ds = TensorDataset(x_train, y_train)
    valid_ds = TensorDataset(x_valid, y_valid)
    loss_func = F.cross_entropy

    train_dl, valid_dl = get_data(train_ds, valid_ds, bs, ctx.shuffle_generator())
    model, opt = get_model()
    yield Start.of(model, opt)
    yield from fit(ctx.epochs, model, loss_func, opt, train_dl, valid_dl)


def tinynn_version(ctx):
    from parity.stages.tinynn_tutorial import bs, fit, get_data, get_model
    from tinynn import nn
    from tinynn.utils.data import TensorDataset

    x_train, y_train, x_valid, y_valid = ctx.data()
    train_ds = TensorDataset(x_train, y_train)
    valid_ds = TensorDataset(x_valid, y_valid)
    loss_func = nn.CrossEntropyLoss()  # F.cross_entropy as a module: it keeps what its backward needs

    train_dl, valid_dl = get_data(train_ds, valid_ds, bs, ctx.shuffle_sampler(len(train_ds)))
    model, opt = get_model()
    yield Start.of(model, opt)
    yield from fit(ctx.epochs, model, loss_func, opt, train_dl, valid_dl)
