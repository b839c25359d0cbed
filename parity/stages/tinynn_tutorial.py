"""The tutorial's definitions that several stages reuse, in tinynn (torch_tutorial.py: the torch twin).

What differs from torch is what autograd did for free: each model has a ``backward`` that runs
its forward's chain rule in reverse, and ``loss.backward()`` becomes
``model.backward(loss_func.backward(), needs_input_grad=False)``. Lines marked ``parity:`` are the
harness's, not the tutorial's.
"""

# The tutorial's code as written: its class names, and loop and shape names it does not use.
# ruff: noqa: N801, B007

from __future__ import annotations

import numpy as np

import tinynn
from parity.events import Epoch, record_step, recorded_step
from tinynn import nn, optim
from tinynn.utils.data import DataLoader

bs = 64  # batch size
lr = 0.5  # learning rate of the logistic-regression stages


def accuracy(out, yb):
    preds = np.argmax(out, axis=1)
    return (preds == yb).astype(np.float32).mean()


def validate(model, loss_func, x_valid, y_valid):
    """parity: the first stages of the tutorial never validate; this measures them as fit() does later."""
    with tinynn.no_grad():
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

    def backward(self, grad_output, needs_input_grad=True):
        return self.lin.backward(grad_output, needs_input_grad)


def get_model():
    model = Mnist_Logistic()
    return model, optim.SGD(model.parameters(), lr=lr)


def loss_batch(model, loss_func, xb, yb, opt=None):
    loss = loss_func(model(xb), yb)

    if opt is not None:
        model.backward(loss_func.backward(), needs_input_grad=False)  # torch: loss.backward()
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
        with tinynn.no_grad():
            losses, nums = zip(
                *[loss_batch(model, loss_func, xb, yb) for xb, yb in valid_dl]
            )
            corrects = [accuracy(model(xb), yb).item() * len(xb) for xb, yb in valid_dl]  # parity
        val_loss = np.sum(np.multiply(losses, nums)) / np.sum(nums)

        yield Epoch(val_loss, np.sum(corrects) / np.sum(nums))  # the tutorial: print(epoch, val_loss)


def get_data(train_ds, valid_ds, bs, sampler):
    return (
        DataLoader(train_ds, batch_size=bs, sampler=sampler),  # parity: torch's shuffle, replayed
        DataLoader(valid_ds, batch_size=bs * 2),
    )


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
