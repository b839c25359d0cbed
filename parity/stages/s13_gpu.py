"""Stage 13, "Using your GPU": torch moves the batches and the model to CUDA when it has one.

tinynn runs on the CPU only, so its ``dev`` is "cpu" and ``model.to(dev)`` changes nothing; the
runner compares torch-on-the-GPU with tinynn-on-the-CPU here whenever torch sees a GPU.
"""

from __future__ import annotations

from parity.events import Start

NAME = "gpu"
TITLE = "Using your GPU"
KIND = "cnn"


def torch_version(ctx):
    import torch
    import torch.nn.functional as F
    from torch import nn, optim
    from torch.utils.data import TensorDataset

    from parity.stages.torch_tutorial import Lambda, WrappedDataLoader, bs, fit, get_data

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    train_ds = TensorDataset(x_train, y_train)
    valid_ds = TensorDataset(x_valid, y_valid)
    loss_func = F.cross_entropy
    lr = 0.1

    dev = torch.device(
        "cuda") if torch.cuda.is_available() else torch.device("cpu")

    def preprocess(x, y):
        return x.view(-1, 1, 28, 28).to(dev), y.to(dev)

    train_dl, valid_dl = get_data(train_ds, valid_ds, bs, ctx.shuffle_generator())
    train_dl = WrappedDataLoader(train_dl, preprocess)
    valid_dl = WrappedDataLoader(valid_dl, preprocess)

    model = nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        Lambda(lambda x: x.view(x.size(0), -1)),
    )
    model.to(dev)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    yield Start.of(model, opt)

    yield from fit(ctx.epochs, model, loss_func, opt, train_dl, valid_dl)


def tinynn_version(ctx):
    from parity.stages.tinynn_tutorial import WrappedDataLoader, bs, fit, get_data
    from tinynn import nn, optim
    from tinynn.nn import Lambda
    from tinynn.utils.data import TensorDataset

    x_train, y_train, x_valid, y_valid = ctx.data()
    train_ds = TensorDataset(x_train, y_train)
    valid_ds = TensorDataset(x_valid, y_valid)
    loss_func = nn.CrossEntropyLoss()  # F.cross_entropy as a module: it keeps what its backward needs
    lr = 0.1

    dev = "cpu"  # tinynn computes with NumPy, on the CPU

    def preprocess(x, y):
        return x.reshape(-1, 1, 28, 28), y

    train_dl, valid_dl = get_data(train_ds, valid_ds, bs, ctx.shuffle_sampler(len(train_ds)))
    train_dl = WrappedDataLoader(train_dl, preprocess)
    valid_dl = WrappedDataLoader(valid_dl, preprocess)

    model = nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        Lambda(lambda x: x.reshape(x.shape[0], -1)),
    )
    model.to(dev)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    yield Start.of(model, opt)

    yield from fit(ctx.epochs, model, loss_func, opt, train_dl, valid_dl)
