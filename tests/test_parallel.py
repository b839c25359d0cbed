"""Large convolutions split their batch across threads (``tinynn._engine.parallel``): same results as
one thread and as torch, every part run, errors re-raised, ``set_num_threads`` as torch's."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import tinynn
import tinynn.nn as nn
import tinynn.nn.functional as F
from tests.helpers import assert_close, random_array, random_grad, split_batches, torch_tensor
from tests.test_conv import CONFIGS, _case, _torch_conv
from tinynn._engine import blas as _blas
from tinynn._engine import parallel as _parallel
from tinynn.testing.tolerances import TORCH_F64_RTOL

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")


def _with_batch(config: tuple, batch: int) -> tuple:
    return ((batch, *config[0][1:]), *config[1:])


@pytest.mark.parametrize(("threads", "chunked"), [(2, False), (3, False), (1, True), (2, True)])
@pytest.mark.parametrize("config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_conv2d_split_across_threads_and_chunks_matches_torch_and_one_thread(config, threads, chunked):
    # Batch 5 in 2 or 3 parts: uneven parts (2+3, 1+2+2); chunked: im2col one image at a time.
    rng, x, weight, bias, kwargs = _case(_with_batch(config, 5), seed=7)
    grad_output = random_grad(rng, F.conv2d(x, weight, bias, **kwargs).shape)
    one_thread = F.conv2d(x, weight, bias, **kwargs), *F.conv2d_backward(grad_output, x, weight,
                                                                         has_bias=bias is not None, **kwargs)
    with split_batches(threads, chunked):
        split = F.conv2d(x, weight, bias, **kwargs), *F.conv2d_backward(grad_output, x, weight,
                                                                        has_bias=bias is not None, **kwargs)
    expected = _torch_conv(x, weight, bias, kwargs, grad_output)
    for name, ours, single, theirs in zip(("output", "grad_input", "grad_weight", "grad_bias"), split, one_thread,
                                          expected):
        if theirs is None:
            assert ours is None
            continue
        assert_close(ours, theirs, rtol=TORCH_F64_RTOL, name=f"split {name} vs torch")
        # The parts' dW and db are summed in another order than one product's: not bit-equal.
        assert_close(ours, single, rtol=TORCH_F64_RTOL, name=f"split {name} vs one thread")


@pytest.mark.parametrize("chunked", [False, True])
def test_conv2d_module_split_across_threads_matches_torch_over_calls_of_different_batch_sizes(chunked):
    conv = nn.Conv2d(4, 6, 3, stride=(2, 1), padding=1, groups=2, dtype=np.float64)
    reference = torch.nn.Conv2d(4, 6, 3, stride=(2, 1), padding=1, groups=2, dtype=torch.float64)
    reference.load_state_dict({name: torch.from_numpy(value) for name, value in conv.state_dict().items()})
    rng = np.random.default_rng(8)
    with split_batches(3, chunked):
        # Each part keeps its own scratch buffers in the module's workspace; batch sizes change between calls.
        for batch in (5, 3, 6):
            x = random_array(rng, (batch, 4, 9, 8))
            tx = torch_tensor(x, True)
            t_out = reference(tx)
            grad_output = random_grad(rng, t_out.shape)
            t_out.backward(torch_tensor(grad_output))
            assert_close(conv(x), t_out, rtol=TORCH_F64_RTOL, name=f"output, batch {batch}")
            assert_close(conv.backward(grad_output), tx.grad, rtol=TORCH_F64_RTOL, name=f"grad_input, batch {batch}")
    assert_close(conv.weight.grad, reference.weight.grad, rtol=TORCH_F64_RTOL, name="weight.grad")
    assert_close(conv.bias.grad, reference.bias.grad, rtol=TORCH_F64_RTOL, name="bias.grad")


def test_batch_parts_cover_the_batch_in_order_and_only_split_large_work():
    assert _parallel.batch_parts(64, _parallel.PART_WORK - 1) == [slice(0, 64)]  # small: one part
    with split_batches(3):
        assert _parallel.batch_parts(5, 10**9) == [slice(0, 1), slice(1, 3), slice(3, 5)]
        assert _parallel.batch_parts(2, 10**9) == [slice(0, 1), slice(1, 2)]  # never more parts than images
        assert _parallel.batch_parts(0, 10**9) == [slice(0, 0)]
        inside = _parallel.run_parts(lambda index, part: _parallel.batch_parts(4, 10**9), [slice(0, 1), slice(1, 2)])
        assert inside == [[slice(0, 4)], [slice(0, 4)]]  # no splitting inside a part


def test_run_parts_runs_every_part_on_its_own_thread_with_one_blas_thread():
    seen = {}

    def record(index: int, part: slice) -> int:
        blas = _blas._THREADS[0]() if _blas._THREADS else None
        seen[index] = (part, threading.get_ident(), blas)
        return index * 10

    blas_before = _blas._THREADS[0]() if _blas._THREADS else None
    parts = [slice(0, 2), slice(2, 3), slice(3, 5)]
    assert _parallel.run_parts(record, parts) == [0, 10, 20]
    assert [seen[k][0] for k in range(3)] == parts
    assert seen[0][1] == threading.get_ident()  # the caller takes part 0
    assert len({seen[k][1] for k in range(3)}) == 3
    if _blas._THREADS:
        assert {seen[k][2] for k in range(3)} == {1}
        assert _blas._THREADS[0]() == blas_before


def test_run_parts_reraises_a_failed_part_after_every_part_has_finished():
    finished = []

    def work(index: int, part: slice) -> None:
        if index == 1:
            raise ValueError("part 1 failed")
        threading.Event().wait(0.05)
        finished.append(index)

    blas_before = _blas._THREADS[0]() if _blas._THREADS else None
    with pytest.raises(ValueError, match="part 1 failed"):
        _parallel.run_parts(work, [slice(0, 1), slice(1, 2), slice(2, 3)])
    assert sorted(finished) == [0, 2]
    if _blas._THREADS:
        assert _blas._THREADS[0]() == blas_before


def test_set_num_threads_sets_the_parts_and_checks_its_argument_like_torch():
    before = tinynn.get_num_threads()
    try:
        tinynn.set_num_threads(1)
        assert tinynn.get_num_threads() == 1
        assert _parallel.batch_parts(64, 10**12) == [slice(0, 64)]
        tinynn.set_num_threads(2)
        assert len(_parallel.batch_parts(64, 10**12)) == (2 if _blas.can_limit_threads() else 1)
    finally:
        tinynn.set_num_threads(before)
    for bad, message in ((0, "expects a positive integer"), (-2, "expects a positive integer"),
                         (1.5, "expects an int, but got float"), ("2", "expects an int, but got str")):
        with pytest.raises(RuntimeError, match=message):
            tinynn.set_num_threads(bad)
        with pytest.raises(RuntimeError, match=message):
            torch.set_num_threads(bad)
    assert tinynn.get_num_threads() == before


def test_parts_run_one_after_another_while_another_thread_runs_parts():
    inner_threads = []
    release = threading.Event()
    started = threading.Event()

    def outer(index: int, part: slice) -> None:
        if index == 0:
            started.set()
            release.wait(5)

    def inner(index: int, part: slice) -> None:
        inner_threads.append(threading.get_ident())

    background = threading.Thread(target=_parallel.run_parts, args=(outer, [slice(0, 1), slice(1, 2)]))
    background.start()
    assert started.wait(5)
    try:
        _parallel.run_parts(inner, [slice(0, 1), slice(1, 2)])
    finally:
        release.set()
        background.join(5)
    assert inner_threads == [threading.get_ident()] * 2
