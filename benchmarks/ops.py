"""Per-op benchmarks: each layer's forward and its backward, timed separately.

An op is benchmarked through its module (``nn.Conv2d``, ``nn.MaxPool2d``...), as a network
uses it: the tinynn forward keeps what its backward needs, the torch forward records the graph.
The backward is timed alone: a fresh forward runs untimed before each timed backward, and the
gradients are cleared first (``zero_grad``, as in a training loop), so both frameworks store
new gradients rather than add into old ones.

``input_grad=False`` marks a layer whose input is the data (the first layer): torch computes no
gradient for it, and tinynn is told ``needs_input_grad=False``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from benchmarks.timing import Framework, Runner


@dataclass(frozen=True)
class OpCase:
    """One layer on one input shape; ``make(nn)`` builds the layer from ``tinynn.nn`` or ``torch.nn``."""

    op: str
    name: str
    input_shape: tuple[int, ...]
    make: Callable[[ModuleType], Any]
    layer: str
    input_grad: bool = True
    is_loss: bool = False

    def with_batch(self, batch: int) -> OpCase:
        """The same case with a different batch size (the smoke test shrinks every case)."""
        return OpCase(self.op, self.name, (batch, *self.input_shape[1:]), self.make, self.layer,
                      self.input_grad, self.is_loss)

    @property
    def shape_text(self) -> str:
        return "x".join(map(str, self.input_shape))


def _conv(in_channels: int, out_channels: int, stride: int) -> Callable[[ModuleType], Any]:
    return lambda nn: nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)


OP_CASES = [
    OpCase("linear", "logistic Linear(784,10)", (64, 784), lambda nn: nn.Linear(784, 10), "Linear(784, 10)",
           input_grad=False),
    OpCase("linear", "wide Linear(1024,1024)", (256, 1024), lambda nn: nn.Linear(1024, 1024), "Linear(1024, 1024)"),
    OpCase("conv2d", "tutorial conv1", (64, 1, 28, 28), _conv(1, 16, 2), "Conv2d(1, 16, 3, stride=2, padding=1)",
           input_grad=False),
    OpCase("conv2d", "tutorial conv2", (64, 16, 14, 14), _conv(16, 16, 2), "Conv2d(16, 16, 3, stride=2, padding=1)"),
    OpCase("conv2d", "tutorial conv3", (64, 16, 7, 7), _conv(16, 10, 2), "Conv2d(16, 10, 3, stride=2, padding=1)"),
    OpCase("conv2d", "wide conv (W3)", (64, 16, 32, 32), _conv(16, 64, 1), "Conv2d(16, 64, 3, padding=1)"),
    OpCase("conv2d", "wider conv", (32, 64, 32, 32), _conv(64, 128, 1), "Conv2d(64, 128, 3, padding=1)"),
    OpCase("avg_pool2d", "avg_pool2d", (64, 16, 28, 28), lambda nn: nn.AvgPool2d(2), "AvgPool2d(2)"),
    OpCase("max_pool2d", "max_pool2d", (64, 16, 28, 28), lambda nn: nn.MaxPool2d(2), "MaxPool2d(2)"),
    OpCase("adaptive_avg_pool2d", "tutorial adaptive_avg_pool2d", (64, 10, 4, 4),
           lambda nn: nn.AdaptiveAvgPool2d(1), "AdaptiveAvgPool2d(1)"),
    OpCase("adaptive_avg_pool2d", "wide adaptive_avg_pool2d", (64, 64, 16, 16),
           lambda nn: nn.AdaptiveAvgPool2d(1), "AdaptiveAvgPool2d(1)"),
    OpCase("cross_entropy", "tutorial cross_entropy", (64, 10), lambda nn: nn.CrossEntropyLoss(),
           "CrossEntropyLoss()", is_loss=True),
    OpCase("cross_entropy", "wide cross_entropy", (256, 1000), lambda nn: nn.CrossEntropyLoss(),
           "CrossEntropyLoss()", is_loss=True),
]
HEADLINE_CONV = "wide conv (W3)"


class _Prepared:
    """A case's layer, input, target and upstream gradient in one framework's form."""

    def __init__(self, case: OpCase, framework: Framework, seed: int = 0) -> None:
        import torch

        import tinynn

        rng = np.random.default_rng(seed)
        data = rng.standard_normal(case.input_shape, dtype=np.float32)
        target = rng.integers(0, case.input_shape[1], size=case.input_shape[0], dtype=np.int64)
        torch.manual_seed(seed)
        torch_layer = case.make(torch.nn)
        output_shape: tuple[int, ...] = ()  # a loss's backward starts from 1: it takes no gradient
        if not case.is_loss:
            with torch.no_grad():
                output_shape = tuple(torch_layer(torch.from_numpy(data)).shape)
        grad_output = rng.uniform(-1.0, 1.0, size=output_shape).astype(np.float32)
        self.framework = framework
        self.case = case
        if framework.is_torch:
            device = framework.device
            self.layer = torch_layer.to(device)
            self.input = torch.tensor(data, device=device, requires_grad=case.input_grad)
            self.target = torch.from_numpy(target).to(device)
            self.grad_output = torch.from_numpy(grad_output).to(device)
        else:
            self.layer = case.make(tinynn.nn)
            self.layer.load_state_dict(torch_layer.state_dict())
            self.input, self.target, self.grad_output = data, target, grad_output
            if not case.is_loss:
                # dY in the memory layout of the layer's own output (channels-last for a conv), as the
                # element-wise op after it would pass it back; torch's is in its output's layout too.
                with tinynn.no_grad():
                    self.grad_output = np.empty_like(self.layer(data))
                self.grad_output[...] = grad_output
        self.output: Any = None

    def forward(self) -> Any:
        if self.case.is_loss:
            return self.layer(self.input, self.target)
        return self.layer(self.input)

    def forward_kept(self) -> None:
        """The untimed forward before a timed backward; clears old gradients first."""
        self.layer.zero_grad()
        if self.framework.is_torch:
            self.input.grad = None
        self.output = self.forward()

    def backward(self) -> Any:
        if self.framework.is_torch:
            if self.case.is_loss:
                return self.output.backward()
            return self.output.backward(self.grad_output)
        if self.case.is_loss:
            return self.layer.backward()
        return self.layer.backward(self.grad_output, needs_input_grad=self.case.input_grad)

    def forward_backward(self) -> Any:
        self.forward_kept()
        return self.backward()


def forward_runner(case: OpCase, framework: Framework) -> Runner:
    prepared = _Prepared(case, framework)
    return Runner(framework, prepared.forward)


def backward_runner(case: OpCase, framework: Framework) -> Runner:
    prepared = _Prepared(case, framework)
    return Runner(framework, prepared.backward, prepare=prepared.forward_kept)


def forward_backward_runner(case: OpCase, framework: Framework) -> Runner:
    """Forward, backward and the gradient clearing in one timed call (the scaling curves use it)."""
    prepared = _Prepared(case, framework)
    return Runner(framework, prepared.forward_backward)


def conv_case(batch: int, channels: int, image_size: int) -> OpCase:
    """``Conv2d(C, C, 3, padding=1)`` on (batch, C, S, S): the channel-scaling workload."""
    return OpCase("conv2d", f"conv {channels}->{channels}", (batch, channels, image_size, image_size),
                  _conv(channels, channels, 1), f"Conv2d({channels}, {channels}, 3, padding=1)")
