"""Stage 11, "nn.Sequential": the CNN as a chain of layers, with ``Lambda`` for the reshapes.

tinynn's ``Sequential.backward`` runs the children's backwards in reverse, so the model needs no
hand-written backward at all. ``nn.Lambda`` checks that its function is a pure reshape before it
reshapes the gradient back.
"""

from __future__ import annotations

from parity.events import Start

NAME = "sequential"
TITLE = "nn.Sequential"
KIND = "cnn"


def torch_version(ctx):
    import torch
    import torch.nn.functional as F
    from torch import nn, optim
    from torch.utils.data import TensorDataset

    from parity.stages.torch_tutorial import bs, fit, get_data

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    train_ds = TensorDataset(x_train, y_train)
    valid_ds = TensorDataset(x_valid, y_valid)
    loss_func = F.cross_entropy
    train_dl, valid_dl = get_data(train_ds, valid_ds, bs, ctx.shuffle_generator())
    lr = 0.1

    class Lambda(nn.Module):
        def __init__(self, func):
            super().__init__()
            self.func = func

        def forward(self, x):
            return self.func(x)

    def preprocess(x):
        return x.view(-1, 1, 28, 28)

    model = nn.Sequential(
        Lambda(preprocess),
        nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(4),
        Lambda(lambda x: x.view(x.size(0), -1)),
    )

    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    yield Start.of(model, opt)

    yield from fit(ctx.epochs, model, loss_func, opt, train_dl, valid_dl)


def tinynn_version(ctx):
    from parity.stages.tinynn_tutorial import bs, fit, get_data
    from tinynn import nn, optim
    from tinynn.nn import Lambda
    from tinynn.utils.data import TensorDataset

    x_train, y_train, x_valid, y_valid = ctx.data()
    train_ds = TensorDataset(x_train, y_train)
    valid_ds = TensorDataset(x_valid, y_valid)
    loss_func = nn.CrossEntropyLoss()  # F.cross_entropy as a module: it keeps what its backward needs
    train_dl, valid_dl = get_data(train_ds, valid_ds, bs, ctx.shuffle_sampler(len(train_ds)))
    lr = 0.1

    def preprocess(x):
        return x.reshape(-1, 1, 28, 28)

    model = nn.Sequential(
        Lambda(preprocess),
        nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(4),
        Lambda(lambda x: x.reshape(x.shape[0], -1)),
    )

    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    yield Start.of(model, opt)

    yield from fit(ctx.epochs, model, loss_func, opt, train_dl, valid_dl)
