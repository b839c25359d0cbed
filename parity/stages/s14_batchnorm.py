"""Stage 14, after the tutorial: the stage-10 CNN with ``BatchNorm2d`` after each convolution and
``Dropout`` before the pooling; SGD with momentum, as in stage 10.

New in tinynn's backward: each ``bn.backward`` (the compact BatchNorm gradient, derived in
tinynn/nn/batchnorm.py) between a ReLU's mask and its convolution, and ``dropout.backward`` (the
same mask, the same 1 / (1 - p)). The runner also compares the running statistics (buffers) at
every step, and hands tinynn torch's dropout masks, read from torch's own draws
(``tinynn.testing.replay_torch_dropout``), as it hands it torch's initial weights.

The convolutions have no bias: BatchNorm subtracts each channel's mean right after, so a bias
there would do nothing, and its gradient would be rounding noise (zero in exact arithmetic).
"""

# The tutorial's code as written: its class names, and loop and shape names it does not use.
# ruff: noqa: N801

from __future__ import annotations

from parity.events import Start

NAME = "batchnorm"
TITLE = "BatchNorm and Dropout"
KIND = "cnn"
LR, P_DROP = 0.1, 0.2


def torch_model():
    import torch.nn.functional as F
    from torch import nn

    class Mnist_BN_CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(16)
            self.conv3 = nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1, bias=False)
            self.bn3 = nn.BatchNorm2d(10)
            self.dropout = nn.Dropout(P_DROP)

        def forward(self, xb):
            xb = xb.view(-1, 1, 28, 28)
            xb = F.relu(self.bn1(self.conv1(xb)))
            xb = F.relu(self.bn2(self.conv2(xb)))
            xb = F.relu(self.bn3(self.conv3(xb)))
            xb = F.avg_pool2d(self.dropout(xb), 4)
            return xb.view(-1, xb.size(1))

    return Mnist_BN_CNN()


def tinynn_model():
    import tinynn.nn.functional as F
    from tinynn import nn

    class Mnist_BN_CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(16)
            self.conv3 = nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1, bias=False)
            self.bn3 = nn.BatchNorm2d(10)
            self.dropout = nn.Dropout(P_DROP)

        def forward(self, xb):
            input_shape = xb.shape
            xb = xb.reshape(-1, 1, 28, 28)
            xb = relu1 = F.relu(self.bn1(self.conv1(xb)))
            xb = relu2 = F.relu(self.bn2(self.conv2(xb)))
            xb = relu3 = F.relu(self.bn3(self.conv3(xb)))
            xb = dropped = self.dropout(xb)
            xb = F.avg_pool2d(xb, 4)
            self.save_for_backward(input_shape, relu1, relu2, relu3, dropped)
            return xb.reshape(-1, xb.shape[1])

        def backward(self, grad_output, needs_input_grad=True):
            input_shape, relu1, relu2, relu3, dropped = self.saved_tensors()
            grad = grad_output.reshape(-1, grad_output.shape[1], 1, 1)
            grad = self.dropout.backward(F.avg_pool2d_backward(grad, dropped, 4))
            grad = self.conv3.backward(self.bn3.backward(F.relu_backward(grad, relu3)))
            grad = self.conv2.backward(self.bn2.backward(F.relu_backward(grad, relu2)))
            grad = self.conv1.backward(self.bn1.backward(F.relu_backward(grad, relu1)), needs_input_grad)
            return grad.reshape(input_shape) if needs_input_grad else None

    return Mnist_BN_CNN()


def torch_version(ctx):
    import torch
    import torch.nn.functional as F
    from torch import optim
    from torch.utils.data import TensorDataset

    from parity.stages.torch_tutorial import bs, fit, get_data

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    train_ds = TensorDataset(x_train, y_train)
    valid_ds = TensorDataset(x_valid, y_valid)
    loss_func = F.cross_entropy
    train_dl, valid_dl = get_data(train_ds, valid_ds, bs, ctx.shuffle_generator())

    model = torch_model()
    opt = optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    yield Start.of(model, opt)

    yield from fit(ctx.epochs, model, loss_func, opt, train_dl, valid_dl)


def tinynn_version(ctx):
    from parity.stages.tinynn_tutorial import bs, fit, get_data
    from tinynn import nn, optim
    from tinynn.utils.data import TensorDataset

    x_train, y_train, x_valid, y_valid = ctx.data()
    train_ds = TensorDataset(x_train, y_train)
    valid_ds = TensorDataset(x_valid, y_valid)
    loss_func = nn.CrossEntropyLoss()
    train_dl, valid_dl = get_data(train_ds, valid_ds, bs, ctx.shuffle_sampler(len(train_ds)))

    model = tinynn_model()
    opt = optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    yield Start.of(model, opt)

    yield from fit(ctx.epochs, model, loss_func, opt, train_dl, valid_dl)
