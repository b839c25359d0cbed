"""The property tests' torch side: the device torch compares on, and helpers that run it.

The hypothesis strategies that need no torch (arrays, gradients, shapes, layouts, conv and pool
arguments) live in ``tinynn.testing.strategies``; they are imported here too, so tests import
everything from one place.

``TINYNN_TEST_DEVICE=cuda`` runs torch, the reference, on CUDA (TF32 off); results come back to
the CPU inside ``assert_close``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

from tinynn.testing.compare import assert_close
from tinynn.testing.strategies import (  # noqa: F401 - re-exported for the property tests
    CONTINUOUS_STYLES,
    FLOAT_DTYPES,
    SPECIAL_STYLES,
    VALUE_STYLES,
    arrays,
    as_pair,
    dtypes,
    grads,
    int_or_pair,
    layouts,
    relayout,
    sizes,
)
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL, TORCH_F64_ATOL, TORCH_F64_RTOL


# ---------------------------------------------------------------------------------- the reference
@functools.cache
def _device_or_skip_reason() -> tuple[torch.device | None, str]:
    name = os.environ.get("TINYNN_TEST_DEVICE", "cpu").strip().lower() or "cpu"
    if name == "cpu":
        return torch.device("cpu"), ""
    if name != "cuda" and not name.startswith("cuda:"):
        raise ValueError(f"TINYNN_TEST_DEVICE={name!r}: expected 'cpu' or 'cuda' (or 'cuda:N')")
    if not torch.cuda.is_available():
        return None, (f"TINYNN_TEST_DEVICE={name} but torch {torch.__version__} sees no CUDA device "
                      f"(built with CUDA {torch.version.cuda}); unset it to compare against torch on CPU")
    # TF32 matmuls and convolutions keep 10 mantissa bits: far outside TORCH_F32_RTOL.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch.device(name), ""


def reference_device() -> torch.device:
    """The device torch computes the expected values on: CPU, or CUDA with TINYNN_TEST_DEVICE=cuda.

    Skips the calling test, saying why, when CUDA was asked for and there is none.
    """
    device, reason = _device_or_skip_reason()
    if device is None:
        pytest.skip(reason)
    return device


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one CPU thread while a property module runs (import this fixture to apply it).

    On tensors this small torch's OpenMP workers mostly spin-wait, taking the cores that NumPy
    needs for tinynn's turn: on 2 cores the conv properties ran 5x slower with torch's default.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def to_torch(array: Any, requires_grad: bool = False, device: torch.device | None = None) -> torch.Tensor:
    """A C-contiguous copy of ``array`` as a torch tensor on ``device`` (default: the reference
    device); float ones may require grad. Contiguous, whatever the layout tinynn got: torch 2.13's
    CPU conv2d on channels-last tensors crashed now and then (heap corruption) in these properties."""
    tensor = torch.from_numpy(np.array(array, order="C", copy=True)).to(device or reference_device())
    return tensor.requires_grad_(requires_grad and tensor.is_floating_point())


def torch_autograd(fn: Callable[..., torch.Tensor], inputs: Sequence[Any], grad_output: Any,
                   differentiable: Sequence[bool] | None = None,
                   device: torch.device | None = None) -> tuple[torch.Tensor, list[Any]]:
    """torch's ``fn(*inputs)`` and the gradient of each input (None where not differentiable).

    ``inputs`` are arrays (or None, passed through); ``grad_output`` is the upstream gradient;
    ``device`` overrides the reference device (for a case where torch's devices disagree).
    """
    if differentiable is None:
        differentiable = [True] * len(inputs)
    tensors = [None if value is None else to_torch(value, wants, device)
               for value, wants in zip(inputs, differentiable)]
    output = fn(*tensors)
    if output.requires_grad:
        output.backward(to_torch(grad_output, device=device))
    return output, [None if tensor is None or not tensor.requires_grad else tensor.grad for tensor in tensors]


def assert_matches(actual: Any, expected: Any, name: str, terms: float = 0.0) -> float:
    """``assert_close`` at the tolerance for the expected value's dtype (float64 or float32).

    ``terms``: for a result that sums terms of either sign (a dot product, a bias gradient, a
    mean loss, dX = G - p * sum(G) for a nearly one-hot softmax), the magnitude of those terms.
    Each library rounds the terms in its own order, so the results differ by up to about
    n * eps * terms however much the sum cancels: the relative tolerance (whose n * eps reasoning
    is in tinynn/testing/tolerances.py) then also applies to ``terms``, not only to the result's scale.
    """
    dtype = expected.dtype if isinstance(expected, torch.Tensor) else np.asarray(expected).dtype
    if dtype in (torch.float32, np.float32):
        return assert_close(actual, expected, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL + TORCH_F32_RTOL * terms,
                            name=name)
    return assert_close(actual, expected, rtol=TORCH_F64_RTOL, atol=TORCH_F64_ATOL + TORCH_F64_RTOL * terms,
                        name=name)


def magnitude(*factors: Any) -> float:
    """The size of the terms of a sum of products of these factors: the product of their largest
    finite |values| (a None factor, such as a missing bias, gives 0). Pass it as ``terms``."""
    size = 1.0
    for factor in factors:
        if factor is None:
            return 0.0
        values = np.abs(np.asarray(factor.detach().cpu() if isinstance(factor, torch.Tensor) else factor,
                                   dtype=np.float64))
        size *= float(values[np.isfinite(values)].max(initial=0.0))
    return size


def assert_module_steps_match_torch(module: Any, torch_module: torch.nn.Module, steps: Sequence[tuple[Any, bool]],
                                    weight: Any, bias: Any, grad_for: Callable[[int, tuple[int, ...]], Any],
                                    around: Callable[[], Any] = contextlib.nullcontext) -> None:
    """Forward/backward pairs in both libraries without zero_grad: each step's output and input
    gradient, then the parameters' accumulated ``.grad``.

    ``steps``: ``(x, needs_input_grad)`` each; ``grad_for(step, output_shape)`` gives that step's
    upstream gradient; ``around()`` wraps tinynn's calls (a context such as a thread mode).
    """
    grad_terms = 0.0
    for step, (x, needs_input_grad) in enumerate(steps):
        with around():
            output = module(x)
        grad_output = grad_for(step, output.shape)
        x_t = to_torch(x, requires_grad=needs_input_grad)
        output_t = torch_module(x_t)
        output_t.backward(to_torch(grad_output))
        assert_matches(output, output_t, f"output {step}", magnitude(x, weight) + magnitude(bias))
        with around():
            grad_input = module.backward(grad_output, needs_input_grad=needs_input_grad)
        if needs_input_grad:
            assert_matches(grad_input, x_t.grad, f"grad_input {step}", magnitude(grad_output, weight))
        else:
            assert grad_input is None
        grad_terms += magnitude(grad_output) * max(1.0, magnitude(x))
    assert_grads_match(module, torch_module, terms=grad_terms)


def assert_grads_match(module: Any, torch_module: torch.nn.Module, prefix: str = "",
                       terms: float | dict[str, float] = 0.0) -> None:
    """Every parameter's ``.grad`` in a tinynn module against the torch module's, by dotted name;
    ``terms``: one size for all, or one per parameter name."""
    expected = dict(torch_module.named_parameters())
    for name, param in module.named_parameters():
        size = terms[name] if isinstance(terms, dict) else terms
        assert_matches(param.grad, expected[name].grad, f"{prefix}{name}.grad", size)


@st.composite
def optimizer_steps(draw: st.DrawFn, shapes: Sequence[tuple[int, ...]], dtype: Any,
                    max_steps: int) -> list[tuple[str, list[np.ndarray | None]]]:
    """1 to ``max_steps`` optimizer steps as ``(action, grads)``: fresh gradients (random, zeros or
    None per parameter of ``shapes``), or ``zero_grad()`` (to zeros or to None) on the last ones."""
    steps = []
    for _ in range(draw(st.integers(1, max_steps))):
        action = draw(st.sampled_from(["grads", "grads", "grads", "zero_grad", "zero_grad_to_none"]))
        step_grads = []
        for shape in shapes:
            how = draw(st.sampled_from(["random", "random", "random", "zeros", "none"]))
            step_grads.append(None if how == "none" else np.zeros(shape, dtype) if how == "zeros"
                              else draw(grads(shape, dtype)))
        steps.append((action, step_grads))
    return steps
