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
    results = norm_speed.run(settle_s=0.0, shape=TINY, blocks=(1, 1), torch_threads=1, cnn=False)
    assert results["blas"]["torch_threads"] == 1 and torch.get_num_threads() == threads  # restored
    for allocator in ("default", "steady"):
        assert set(results[allocator]) == {"engine", "textbook"}
        for timing in results[allocator].values():
            assert timing["tinynn_s"] > 0 and timing["torch_s"] > 0 and timing["ratio"] > 0
    text = norm_speed.report(results)
    assert "BatchNorm2d(3) forward + backward" in text and "  BatchNorm2d textbook: tinynn" in text
    assert "steady_malloc unavailable here" in text


@pytest.mark.parametrize("textbook", [False, True])
def test_the_bn_cnn_steps_train_stage_14s_model_in_both_frameworks(textbook: bool) -> None:
    tinynn_step, model = norm_speed.bn_cnn_tinynn(textbook=textbook, batch=8)
    torch_step, torch_model = norm_speed.bn_cnn_torch(batch=8)
    before = model.bn1.running_mean.copy()
    losses = [float(tinynn_step()) for _ in range(3)], [torch_step().item() for _ in range(3)]
    assert all(np.isfinite(losses[0])) and all(np.isfinite(losses[1]))
    assert not np.array_equal(model.bn1.running_mean, before)  # the step trains, buffers and all
    assert int(model.bn1.num_batches_tracked) == int(torch_model.bn1.num_batches_tracked) == 3
