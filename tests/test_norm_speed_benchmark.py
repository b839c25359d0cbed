"""benchmarks.norm_speed on a tiny batch: the functions run and report; no timing is asserted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import environment, norm_speed
from tinynn.testing.compare import assert_close
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL

TINY = (4, 3, 2, 2)


def test_the_workload_is_the_tutorial_cnns_second_activation() -> None:
    assert norm_speed.SHAPE == (64, 16, 14, 14)


@pytest.mark.parametrize("textbook", [False, True])
def test_both_sides_take_the_same_steps(textbook: bool) -> None:
    """tinynn and torch, on the same float32 batch, return the same input gradient and accumulate
    the same weight gradient and running statistics over steps."""
    tinynn_step, ours = norm_speed.batch_norm_tinynn(TINY, textbook=textbook)
    torch_step, theirs = norm_speed.batch_norm_torch(TINY)
    for _ in range(3):
        grad_input, expected = tinynn_step(), torch_step()
        assert grad_input.dtype == np.float32
        assert_close(grad_input, expected, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL)
    assert_close(ours.weight.grad, theirs.weight.grad, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL)
    assert_close(ours.running_var, theirs.running_var, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL)


def test_run_and_report_on_a_tiny_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    # steady_malloc cannot be undone in a process: leave pytest's allocator alone.
    monkeypatch.setattr(environment, "steady_malloc", lambda: {"steady_malloc": False})
    threads = torch.get_num_threads()
    results = norm_speed.run(settle_s=0.0, shape=TINY, blocks=(1, 1), torch_threads=1)
    assert results["blas"]["torch_threads"] == 1 and torch.get_num_threads() == threads  # restored
    for allocator in ("default", "steady"):
        assert set(results[allocator]) == {"engine", "textbook"}
        for timing in results[allocator].values():
            assert timing["tinynn_s"] > 0 and timing["torch_s"] > 0 and timing["ratio"] > 0
    text = norm_speed.report(results)
    assert "BatchNorm2d(3) forward + backward" in text and "  textbook: tinynn" in text
    assert "steady_malloc unavailable here" in text
