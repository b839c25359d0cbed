"""Stage 10, "Switch to CNN": three stride-2 convolutions, ReLU, average pooling; SGD with momentum.

tinynn's ``Mnist_CNN`` keeps each ReLU's output in ``forward`` and walks the same layers in
reverse in ``backward``: pooling, then for each conv its ReLU's mask and its own backward.
"""

# The tutorial's code as written: its class names, and loop and shape names it does not use.
# ruff: noqa: N801

from __future__ import annotations

from parity.events import Start

NAME = "cnn"
TITLE = "Switch to CNN"
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

    class Mnist_CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1)
            self.conv2 = nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1)
            self.conv3 = nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1)

        def forward(self, xb):
            xb = xb.view(-1, 1, 28, 28)
            xb = F.relu(self.conv1(xb))
            xb = F.relu(self.conv2(xb))
            xb = F.relu(self.conv3(xb))
            xb = F.avg_pool2d(xb, 4)
            return xb.view(-1, xb.size(1))

    lr = 0.1

    model = Mnist_CNN()
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    yield Start.of(model, opt)

    yield from fit(ctx.epochs, model, loss_func, opt, train_dl, valid_dl)


def tinynn_version(ctx):
    import tinynn.nn.functional as F
    from parity.stages.tinynn_tutorial import bs, fit, get_data
    from tinynn import nn, optim
    from tinynn.utils.data import TensorDataset

    x_train, y_train, x_valid, y_valid = ctx.data()
    train_ds = TensorDataset(x_train, y_train)
    valid_ds = TensorDataset(x_valid, y_valid)
    loss_func = nn.CrossEntropyLoss()  # F.cross_entropy as a module: it keeps what its backward needs
    train_dl, valid_dl = get_data(train_ds, valid_ds, bs, ctx.shuffle_sampler(len(train_ds)))

    class Mnist_CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1)
            self.conv2 = nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1)
            self.conv3 = nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1)

        def forward(self, xb):
            input_shape = xb.shape
            xb = xb.reshape(-1, 1, 28, 28)
            xb = relu1 = F.relu(self.conv1(xb))
            xb = relu2 = F.relu(self.conv2(xb))
            xb = relu3 = F.relu(self.conv3(xb))
            xb = F.avg_pool2d(xb, 4)
            self.save_for_backward(input_shape, relu1, relu2, relu3)
            return xb.reshape(-1, xb.shape[1])

        def backward(self, grad_output, needs_input_grad=True):
            input_shape, relu1, relu2, relu3 = self.saved_tensors()
            grad = grad_output.reshape(-1, grad_output.shape[1], 1, 1)
            grad = F.avg_pool2d_backward(grad, relu3, 4)
            grad = self.conv3.backward(F.relu_backward(grad, relu3))
            grad = self.conv2.backward(F.relu_backward(grad, relu2))
            grad = self.conv1.backward(F.relu_backward(grad, relu1), needs_input_grad)
            return grad.reshape(input_shape) if needs_input_grad else None

    lr = 0.1

    model = Mnist_CNN()
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    yield Start.of(model, opt)

    yield from fit(ctx.epochs, model, loss_func, opt, train_dl, valid_dl)
