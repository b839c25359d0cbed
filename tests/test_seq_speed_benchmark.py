"""benchmarks.seq_speed on tiny sequences: the two frameworks do the same work, the functions run and
report; no timing is asserted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import environment, seq_speed
from benchmarks.seq_speed import Sizes
from tinynn.testing.compare import assert_close

TINY = {"lstm": Sizes(seq=5, batch=3, width=6, hidden=8, layers=2, vocab=7),
        "encoder": Sizes(seq=6, batch=3, width=8, hidden=16, layers=2, vocab=7),
        "encoder_causal": Sizes(seq=6, batch=3, width=8, hidden=16, layers=2, vocab=7)}
ENCODERS = ("encoder", "encoder_causal")


def _needs(name: str) -> None:
    reason = seq_speed.missing(name)
    if reason:
        pytest.skip(reason)


def test_the_workloads_are_the_issues() -> None:
    assert seq_speed.SIZES["lstm"] == Sizes(seq=64, batch=32, width=128, hidden=256, layers=2, vocab=128)
    for name in ENCODERS:  # torch's default dim_feedforward, 2048
        assert seq_speed.SIZES[name] == Sizes(seq=128, batch=32, width=128, hidden=2048, layers=4, vocab=128)
    assert "LSTM(128, 256, num_layers=2) on seq 64 x batch 32" in seq_speed.describe("lstm", seq_speed.SIZES["lstm"])
    assert "causal mask" in seq_speed.describe("encoder_causal", seq_speed.SIZES["encoder_causal"])


def test_the_causal_mask_is_torchs() -> None:
    expected = torch.nn.Transformer.generate_square_subsequent_mask(5)
    np.testing.assert_array_equal(seq_speed.causal_mask(5), expected.numpy())


@pytest.mark.parametrize("name", seq_speed.WORKLOADS)
def test_tinynn_gets_torchs_weights_and_computes_the_same_step(name: str) -> None:
    _needs(name)
    workload = seq_speed.pair(name, TINY[name])
    for key, value in workload.torch.state_dict().items():
        np.testing.assert_array_equal(workload.tinynn.state_dict()[key], value.numpy())
    check = seq_speed.same_work(workload)
    assert check["loss_rel_err"] <= seq_speed.LOSS_RTOL and check["grad_norm_rel_err"] <= seq_speed.GRAD_RTOL
    assert check["parameters"] == len(list(workload.torch.parameters()))
    assert check["numbers"] == sum(param.numel() for param in workload.torch.parameters())
    assert check["loss_tinynn"] == pytest.approx(check["loss_torch"], rel=1e-5)
    assert all(param.grad is None for param in workload.tinynn.parameters())  # cleared for the timed steps
    assert all(param.grad is None for param in workload.torch.parameters())


def test_the_check_catches_different_work() -> None:
    workload = seq_speed.pair("lstm", TINY["lstm"])
    workload.tinynn.body.weight_hh_l1.data[0, 0] += 0.5  # one weight off: the loss moves a little
    with pytest.raises(AssertionError, match="did not compute the same step"):
        seq_speed.same_work(workload)


@pytest.mark.parametrize("textbook", [False, True])
@pytest.mark.parametrize("name", seq_speed.WORKLOADS)
def test_the_timed_steps_train_alike(name: str, textbook: bool) -> None:
    """The timed steps (SGD with momentum included) keep the two models together over steps."""
    _needs(name)
    workload = seq_speed.pair(name, TINY[name])
    tinynn_step, torch_step = seq_speed.steps(workload, textbook=textbook)
    losses = [(float(tinynn_step()), torch_step().item()) for _ in range(3)]
    assert losses[0][0] != losses[2][0]  # the steps train
    for ours, theirs in losses:
        assert ours == pytest.approx(theirs, rel=1e-4)
    for key, param in workload.torch.named_parameters():
        assert_close(dict(workload.tinynn.named_parameters())[key].data, param.detach(), rtol=1e-4, atol=1e-6,
                     name=key)


def test_run_and_report_on_tiny_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    # steady_malloc cannot be undone in a process: leave pytest's allocator alone.
    monkeypatch.setattr(environment, "steady_malloc", lambda: {"steady_malloc": False})
    threads = torch.get_num_threads()
    results = seq_speed.run(settle_s=0.0, sizes=TINY, blocks={name: (1, 1) for name in TINY}, torch_threads=1,
                            profile=True)
    assert results["blas"]["torch_threads"] == 1 and torch.get_num_threads() == threads  # restored
    ran = [name for name in seq_speed.WORKLOADS if not seq_speed.missing(name)]
    assert list(results["workloads"]) == ran and set(results["same_work"]) == set(ran)
    assert set(results["skipped"]) == set(seq_speed.WORKLOADS) - set(ran)
    for name in ran:
        assert results["workloads"][name]["sizes"] == vars(TINY[name])
        check = results["same_work"][name]
        assert check["loss_rel_err"] <= seq_speed.LOSS_RTOL and check["grad_norm_rel_err"] <= seq_speed.GRAD_RTOL
    for allocator in ("default", "steady"):
        assert set(results[allocator]) == {f"{name} {path}" for name in ran for path in seq_speed.PATHS}
        for timing in results[allocator].values():
            assert timing["tinynn_s"] > 0 and timing["torch_s"] > 0 and timing["ratio"] > 0
            assert timing["steps_per_block"] == 1 and timing["rounds"] == 1
    for by_framework in results["phases"].values():
        assert set(by_framework) == {"tinynn", "torch"}
        assert all(set(phases) == {"forward", "loss", "backward", "optimizer"} for phases in by_framework.values())
    assert any("tinynn/nn/rnn.py" in row["function"] for row in results["profile"]["lstm"])
    assert json.loads(json.dumps(results)) == results  # what --json writes
    text = seq_speed.report(results)
    assert "  lstm engine: tinynn" in text and "  lstm textbook: tinynn" in text
    assert "lstm: LSTM(6, 8, num_layers=2) on seq 5 x batch 3" in text and "Same work: loss" in text
    assert "steady_malloc unavailable here" in text and "cProfile of tinynn's lstm step" in text
    for name, reason in results["skipped"].items():
        assert f"{name}: skipped, {reason}" in text


def test_main_refuses_an_unknown_workload() -> None:
    with pytest.raises(SystemExit):
        seq_speed.main(["--workloads", "lstm,gru"])
