"""The tutorial's torch definitions that several stages reuse (tinynn_tutorial.py: the same in tinynn).

Read this file beside tinynn_tutorial.py: each definition has its twin at the same place there.
Lines marked ``parity:`` are the harness's, not the tutorial's.
"""

# The tutorial's code as written: its class names, and loop and shape names it does not use.
# ruff: noqa: N801, B007

from __future__ import annotations

import numpy as np
import torch
from torch import nn, optim
from torch.utils.data import DataLoader

from parity.events import Epoch, record_step, recorded_step

bs = 64  # batch size
lr = 0.5  # learning rate of the logistic-regression stages


def accuracy(out, yb):
    preds = torch.argmax(out, dim=1)
    return (preds == yb).float().mean()


def validate(model, loss_func, x_valid, y_valid):
    """parity: the first stages of the tutorial never validate; this measures them as fit() does later."""
    with torch.no_grad():
        losses, corrects, nums = [], [], []
        for start in range(0, len(x_valid), bs * 2):
            xb, yb = x_valid[start:start + bs * 2], y_valid[start:start + bs * 2]
            pred = model(xb)
            losses.append(loss_func(pred, yb).item())
            corrects.append(accuracy(pred, yb).item() * len(xb))
            nums.append(len(xb))
    return Epoch(np.sum(np.multiply(losses, nums)) / np.sum(nums), np.sum(corrects) / np.sum(nums))


class Mnist_Logistic(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(784, 10)

    def forward(self, xb):
        return self.lin(xb)


def get_model():
    model = Mnist_Logistic()
    return model, optim.SGD(model.parameters(), lr=lr)


def loss_batch(model, loss_func, xb, yb, opt=None):
    loss = loss_func(model(xb), yb)

    if opt is not None:
        loss.backward()
        opt.step()
        record_step(loss, model, opt)  # parity: keep the loss, gradients and new weights
        opt.zero_grad()

    return loss.item(), len(xb)


def fit(epochs, model, loss_func, opt, train_dl, valid_dl):
    for epoch in range(epochs):
        model.train()
        for xb, yb in train_dl:
            loss_batch(model, loss_func, xb, yb, opt)
            yield recorded_step()  # parity: the runner compares the two frameworks here

        model.eval()
        with torch.no_grad():
            losses, nums = zip(
                *[loss_batch(model, loss_func, xb, yb) for xb, yb in valid_dl]
            )
            corrects = [accuracy(model(xb), yb).item() * len(xb) for xb, yb in valid_dl]  # parity
        val_loss = np.sum(np.multiply(losses, nums)) / np.sum(nums)

        yield Epoch(val_loss, np.sum(corrects) / np.sum(nums))  # the tutorial: print(epoch, val_loss)


def get_data(train_ds, valid_ds, bs, generator):
    return (
        DataLoader(train_ds, batch_size=bs, shuffle=True, generator=generator),  # parity: seeded
        DataLoader(valid_ds, batch_size=bs * 2),
    )


class Lambda(nn.Module):
    def __init__(self, func):
        super().__init__()
        self.func = func

    def forward(self, x):
        return self.func(x)


class WrappedDataLoader:
    def __init__(self, dl, func):
        self.dl = dl
        self.func = func

    def __len__(self):
        return len(self.dl)

    def __iter__(self):
        batches = iter(self.dl)
        for b in batches:
            yield (self.func(*b))
