"""benchmarks.optim_speed on tiny sizes: the functions run and report; no timing is asserted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import environment, optim_speed
from tinynn.testing.compare import assert_close
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL

TINY = {"tutorial": [(2, 1, 3, 3), (2,)], "large": [(5, 4), (5,)]}


def test_the_workloads_are_the_tutorial_cnn_and_ten_million_numbers() -> None:
    assert optim_speed.tutorial_shapes() == [(16, 1, 3, 3), (16,), (16, 16, 3, 3), (16,), (10, 16, 3, 3), (10,)]
    total = sum(int(np.prod(shape)) for shape in optim_speed.LARGE_SHAPES)
    assert 10_000_000 <= total < 10_100_000


@pytest.mark.parametrize("foreach", [False, True])
def test_both_sides_take_the_same_adam_steps(foreach: bool) -> None:
    """tinynn and torch start from the same float32 values and gradients and agree after steps."""
    tinynn_step, ours = optim_speed.adam_tinynn(TINY["tutorial"])
    torch_step, theirs = optim_speed.adam_torch(TINY["tutorial"], foreach)
    for _ in range(3):
        tinynn_step()
        torch_step()
    for mine, reference in zip(ours, theirs):
        assert mine.data.dtype == np.float32
        assert_close(mine.data, reference.detach(), rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL)


def test_run_and_report_on_tiny_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    # steady_malloc cannot be undone in a process: leave pytest's allocator alone.
    monkeypatch.setattr(environment, "steady_malloc", lambda: {"steady_malloc": False})
    threads = torch.get_num_threads()
    results = optim_speed.run(settle_s=0.0, shapes=TINY, profile=True, blocks={"tutorial": (1, 1), "large": (1, 1)},
                              torch_threads=1)
    assert results["blas"]["torch_threads"] == 1 and torch.get_num_threads() == threads  # restored
    assert results["numbers"] == {"tutorial": 20, "large": 25}
    for allocator in ("default", "steady"):
        assert set(results[allocator]) == {f"{name}_foreach_{foreach}" for name in TINY for foreach in (False, True)}
        for timing in results[allocator].values():
            assert timing["tinynn_s"] > 0 and timing["torch_s"] > 0 and timing["ratio"] > 0
    assert any("tinynn/optim/adam.py" in row["function"] for row in results["profile"]["large"])
    text = optim_speed.report(results)
    assert "large, torch foreach=True" in text and "tutorial, torch foreach=False" in text
    assert "steady_malloc unavailable here" in text and "cProfile of tinynn's large step" in text
