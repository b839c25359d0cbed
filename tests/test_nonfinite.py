"""Infinities and NaNs in inputs and upstream gradients: the same values as torch, and no warnings.

NumPy warns when arithmetic makes a NaN out of infinities (inf - inf, 0 * inf) and on overflow;
torch computes the same IEEE values silently. A diverging training run meets exactly these values,
so every op here is run with +inf, -inf and NaN mixed into its input (forward) or its upstream
gradient (backward), warnings turned into errors, and compared with torch float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch

import tinynn.nn.functional as F
from tests.helpers import assert_close, torch_tensor
from tinynn.testing.tolerances import TORCH_F64_RTOL


def _with_nonfinite(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normal values with +inf and -inf side by side (so that sums meet inf - inf), a NaN, and a
    few more of each scattered."""
    values = rng.standard_normal(shape)
    flat = values.reshape(-1)
    flat[:3] = [np.inf, -np.inf, np.nan]
    flat[rng.choice(np.arange(3, flat.size), size=3, replace=False)] = [np.inf, -np.inf, np.nan]
    return values


def _silently(function: Callable[[], object]) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return function()


# name: (input shape, tinynn forward, torch forward, tinynn backward(grad, x, y))
OPS = {
    "linear": ((5, 7), lambda x, p: F.linear(x, p["w"], p["b"]),
               lambda x, p: torch.nn.functional.linear(x, p["w"], p["b"]),
               lambda g, x, y, p: F.linear_backward(g, x, p["w"])[0]),
    "conv2d": ((2, 3, 6, 6), lambda x, p: F.conv2d(x, p["cw"], p["cb"], padding=1),
               lambda x, p: torch.nn.functional.conv2d(x, p["cw"], p["cb"], padding=1),
               lambda g, x, y, p: F.conv2d_backward(g, x, p["cw"], padding=1)[0]),
    "conv2d stride 2": ((2, 3, 7, 7), lambda x, p: F.conv2d(x, p["cw"], p["cb"], stride=2, padding=1),
                        lambda x, p: torch.nn.functional.conv2d(x, p["cw"], p["cb"], stride=2, padding=1),
                        lambda g, x, y, p: F.conv2d_backward(g, x, p["cw"], stride=2, padding=1)[0]),
    "max_pool2d": ((2, 3, 6, 6), lambda x, p: F.max_pool2d(x, 2), lambda x, p: torch.nn.functional.max_pool2d(x, 2),
                   lambda g, x, y, p: F.max_pool2d_backward(g, x, 2)),
    "max_pool2d overlapping": ((2, 3, 6, 6), lambda x, p: F.max_pool2d(x, 3, 1, 1),
                               lambda x, p: torch.nn.functional.max_pool2d(x, 3, 1, 1),
                               lambda g, x, y, p: F.max_pool2d_backward(g, x, 3, 1, 1)),
    "avg_pool2d": ((2, 3, 6, 6), lambda x, p: F.avg_pool2d(x, 3, 1, 1),
                   lambda x, p: torch.nn.functional.avg_pool2d(x, 3, 1, 1),
                   lambda g, x, y, p: F.avg_pool2d_backward(g, x, 3, 1, 1)),
    "adaptive_avg_pool2d": ((2, 3, 6, 7), lambda x, p: F.adaptive_avg_pool2d(x, (4, 5)),
                            lambda x, p: torch.nn.functional.adaptive_avg_pool2d(x, (4, 5)),
                            lambda g, x, y, p: F.adaptive_avg_pool2d_backward(g, x)),
    "softmax": ((4, 6), lambda x, p: F.softmax(x, dim=1), lambda x, p: torch.softmax(x, 1),
                lambda g, x, y, p: F.softmax_backward(g, y, 1)),
    "log_softmax": ((4, 6), lambda x, p: F.log_softmax(x, dim=1), lambda x, p: torch.log_softmax(x, 1),
                    lambda g, x, y, p: F.log_softmax_backward(g, y, 1)),
    "relu": ((4, 6), lambda x, p: F.relu(x), lambda x, p: torch.relu(x), lambda g, x, y, p: F.relu_backward(g, y)),
}


def _parameters(rng: np.random.Generator) -> dict[str, np.ndarray]:
    conv_weight = rng.standard_normal((4, 3, 3, 3))
    conv_weight[0, 0, 1, 1] = 0.0  # a zero weight meets an infinite input: 0 * inf
    return {"w": rng.standard_normal((3, 7)), "b": rng.standard_normal(3), "cw": conv_weight,
            "cb": rng.standard_normal(4)}


@pytest.mark.parametrize("name", OPS)
def test_forward_of_nonfinite_inputs_matches_torch_without_warnings(name):
    shape, forward, torch_forward, _ = OPS[name]
    rng = np.random.default_rng(0)
    x, parameters = _with_nonfinite(rng, shape), _parameters(rng)
    expected = torch_forward(torch_tensor(x), {k: torch_tensor(v) for k, v in parameters.items()})
    assert_close(_silently(lambda: forward(x, parameters)), expected, rtol=TORCH_F64_RTOL, name=f"{name} output")


@pytest.mark.parametrize("name", OPS)
def test_backward_of_nonfinite_upstream_gradients_matches_torch_without_warnings(name):
    shape, forward, torch_forward, backward = OPS[name]
    rng = np.random.default_rng(1)
    x, parameters = rng.standard_normal(shape), _parameters(rng)
    y = forward(x, parameters)
    grad = _with_nonfinite(rng, y.shape)
    tx = torch_tensor(x, True)
    torch_forward(tx, {k: torch_tensor(v) for k, v in parameters.items()}).backward(torch_tensor(grad))
    assert_close(_silently(lambda: backward(grad, x, y, parameters)), tx.grad, rtol=TORCH_F64_RTOL,
                 name=f"{name} grad_input")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_loss_backward_of_a_nonfinite_upstream_gradient_matches_torch_without_warnings(loss, reduction):
    rng = np.random.default_rng(2)
    logits, target = rng.standard_normal((4, 5)), np.array([0, 2, 4, 1])
    input = logits if loss == "cross_entropy" else F.log_softmax(logits, dim=1)
    grads = [np.array([np.inf, 0.5, -np.inf, np.nan])] if reduction == "none" else [np.array(v) for v in
                                                                                     (np.inf, -np.inf, np.nan)]
    for grad in grads:
        ti = torch_tensor(input, True)
        getattr(torch.nn.functional, loss)(ti, torch.from_numpy(target), reduction=reduction).backward(
            torch_tensor(grad))
        ours = _silently(lambda grad=grad: getattr(F, f"{loss}_backward")(grad, input, target, reduction=reduction))
        assert_close(ours, ti.grad, rtol=TORCH_F64_RTOL, name=f"{loss} {reduction} grad for dL = {grad}")
