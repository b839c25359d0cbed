"""``_blas.matmul``: np.matmul's results, on one BLAS thread or all of them as size and the core probe decide."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from tinynn._engine import blas as _blas

needs_openblas = pytest.mark.skipif(not _blas.can_limit_threads(), reason="NumPy's BLAS is not a known OpenBLAS")
needs_two_blas_threads = pytest.mark.skipif(not _blas.can_limit_threads() or _blas._THREADS[0]() < 2,
                                            reason="NumPy's OpenBLAS runs on one thread here: nothing to choose")


@pytest.fixture
def probe(monkeypatch):
    """The module's core probe with a scripted ``answer``; ``calls`` counts its measurements."""
    script = SimpleNamespace(answer=True, calls=0)

    def measure() -> bool:
        script.calls += 1
        return script.answer

    monkeypatch.setattr(_blas._FAR_CORES, "measure", measure)
    monkeypatch.setattr(_blas._FAR_CORES, "measured_at", -math.inf)
    monkeypatch.setattr(_blas._FAR_CORES, "all_threads_won", True)
    return script


def test_blas_matmul_matches_numpy_and_restores_the_thread_count():
    rng = np.random.default_rng(6)
    threads_before = _blas._THREADS[0]() if _blas._THREADS else None
    for a_shape, b_shape in [((7, 5), (5, 3)), ((5,), (5, 3)), ((2, 1, 4, 3), (2, 3, 3, 2)), ((300, 256), (256, 256)),
                             ((2000, 40), (40, 16))]:
        a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
        np.testing.assert_array_equal(_blas.matmul(a, b), np.matmul(a, b))
        out = np.empty(np.matmul(a, b).shape)
        assert _blas.matmul(a, b, out=out) is out
    if _blas._THREADS:
        assert _blas._THREADS[0]() == threads_before


def test_small_products_use_one_thread_and_dense_ones_all_without_asking_the_probe(probe):
    probe.answer = False
    assert not _blas.all_threads_pay(100, 100, 100)  # 1M - 1 multiply-adds: below SMALL_PRODUCT
    assert _blas.all_threads_pay(1024, 1024, 1024)  # 1G multiply-adds on 2M input elements: dense
    assert probe.calls == 0


@needs_two_blas_threads
@pytest.mark.parametrize("answer", [True, False])
def test_middle_products_follow_the_probe(probe, answer):
    probe.answer = answer
    # The tutorial's second conv layer: 7.2M multiply-adds on 0.45M input elements (16 per element).
    assert _blas.all_threads_pay(3136, 144, 16) is answer
    # A batch of matrices is judged one matrix at a time, as NumPy hands them to BLAS.
    assert _blas.all_threads_pay(3136, 16, 16) is False


@needs_two_blas_threads
def test_the_probe_measures_again_only_after_probe_seconds(probe, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(_blas.time, "monotonic", lambda: clock[0])
    _blas.all_threads_pay(3136, 144, 16)
    _blas.all_threads_pay(3136, 144, 16)
    assert probe.calls == 1
    probe.answer = False
    clock[0] += _blas.PROBE_SECONDS
    assert _blas.all_threads_pay(3136, 144, 16) is False
    assert probe.calls == 2


@needs_openblas
def test_the_probe_does_not_measure_while_blas_is_held_to_one_thread(probe):
    # Inside run_parts' threads (or after set_num_threads(1)) there is nothing to choose between.
    with _blas.one_blas_thread():
        _blas.all_threads_pay(3136, 144, 16)
    assert probe.calls == 0


@needs_openblas
def test_the_probe_measurement_gives_an_answer_and_restores_the_thread_count():
    threads_before = _blas._THREADS[0]()
    assert _blas._FAR_CORES.measure() in (True, False)
    assert _blas._THREADS[0]() == threads_before


def test_openblas_report_names_the_library_and_its_thread_count():
    report = _blas.openblas_report()
    if not _blas.can_limit_threads():
        assert report == {}
        return
    assert "openblas" in report["library"]
    assert report["num_threads"] == _blas._THREADS[0]()
    assert report["config"].startswith("OpenBLAS ")
    assert report["core"] and report["core"] in report["config"]
