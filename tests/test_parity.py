"""parity: every tutorial stage agrees between torch and tinynn, and the report fails when it must.

Fast tests run each stage on a slice of MNIST (a few steps per epoch, two epochs, so the shuffle
replay and the validation at each epoch's end are covered). The slow test trains the tutorial's
full two epochs; the cuda test runs torch on a GPU where there is one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinynn
from parity.context import StageContext
from parity.data import load_data, synthetic_data
from parity.runner import RunConfig, run_stages
from parity.stages import STAGES, find_stage
from parity.torch_setup import cuda_available
from tests.conftest import data_dir
from tinynn.testing.tolerances import PARITY_F32_ACCURACY_POINTS, PARITY_F64_RTOL

ROOT = Path(__file__).resolve().parents[1]
STAGE_NAMES = [stage.NAME for stage in STAGES]
TUTORIAL_STAGE_NAMES = STAGE_NAMES[:13]
FAST = {"epochs": 2, "max_steps": 5, "valid_size": 256}


@functools.cache
def _data(dtype: str, dataset: str = "mnist"):
    """Real MNIST (or Fashion-MNIST) where the files are (tests/conftest.py data_dir()), else the
    synthetic stand-in; the text stages' "docs" ship with the project, so always the real text."""
    root = data_dir()
    if dataset == "docs":
        return load_data(None, "docs")
    if root is None:
        return synthetic_data(dtype, n_train=2_000, n_valid=500)
    return load_data(root, dataset, dtype, download=False)


@pytest.fixture(scope="module")
def data64():
    return _data("float64")


@pytest.fixture(scope="module")
def data32():
    return _data("float32")


def _run(names, data, config: RunConfig):
    """run_stages with each stage's own dataset (Fashion-MNIST for adamw) where the files are."""
    return run_stages([find_stage(name) for name in names], data, config,
                      data_for=lambda dataset: _data(config.dtype, dataset))


# Parameters per model: the logistic regressions, the tutorial's CNN (3 convs with bias), the
# BatchNorm CNN (3 bias-free convs, 3 BatchNorms with weight and bias; 3 buffers each), the char
# LSTM (embedding, 2 layers x 4, head weight and bias) and the char Transformer (2 embeddings, 2
# bias-free layers x (in_proj, out_proj, linear1, linear2, norm1, norm2), the final norm, the head's 2).
N_PARAMS = {"linear": 2, "cnn": 6, "batchnorm": 9, "adamw": 9, "char-lstm": 11, "char-transformer": 17}
N_BUFFERS = {"batchnorm": 9, "adamw": 9}
N_STATE = {"cnn": 1, "batchnorm": 1, "adamw": 3,  # per parameter: SGD's momentum; Adam's step and moments
           "char-lstm": 3, "char-transformer": 3}


def _explain(result) -> str:
    return f"{result.name}: error={result.error}; failures={result.failures}"


# ---------------------------------------------------------------------------------------- float64 lockstep
@pytest.mark.parametrize("name", STAGE_NAMES)
def test_every_stage_agrees_step_by_step_in_float64(name, data64):
    (result,) = _run([name], data64, RunConfig(dtype="float64", **FAST))
    assert result.ok and result.mode == "lockstep", _explain(result)
    assert result.steps == FAST["epochs"] * FAST["max_steps"]
    for kind in ("loss", "grads", "weights", "optimizer", "buffers", "val_loss", "val_accuracy"):
        assert result.worst[kind] <= PARITY_F64_RTOL, (kind, result.worst)
    n_params = N_PARAMS[name] if name in N_PARAMS else N_PARAMS[find_stage(name).KIND]
    assert result.checked["grads"] == result.checked["weights"] == result.steps * n_params
    # SGD's momentum or Adam's state, and BatchNorm's running statistics, were compared too
    n_state = N_STATE.get(name, N_STATE["cnn"] if find_stage(name).KIND == "cnn" else 0)
    assert result.checked["optimizer"] == result.steps * n_params * n_state
    if STAGE_NAMES.index(name) >= STAGE_NAMES.index("optim"):  # from stage 5 on: an optimizer, its lr each step
        assert result.checked["hyperparams"] >= result.steps, result.checked
    assert result.checked["buffers"] == result.steps * N_BUFFERS.get(name, 0)
    assert len(result.tinynn.val_loss) == len(result.torch.val_loss) == FAST["epochs"]
    assert np.isfinite(result.tinynn.losses).all() and result.tinynn.losses[-1] < result.tinynn.losses[0]


# ---------------------------------------------------------------------------------------- float32
@pytest.mark.parametrize("name", STAGE_NAMES)
def test_every_stage_agrees_per_step_in_float32_and_end_to_end(name, data32):
    (result,) = _run([name], data32, RunConfig(dtype="float32", **FAST))
    assert result.ok, _explain(result)
    assert result.mode == "per_step" and result.steps == FAST["epochs"] * FAST["max_steps"]
    assert result.end_to_end["ok"]
    assert result.end_to_end["accuracy_gap"] <= PARITY_F32_ACCURACY_POINTS


def test_float32_per_step_is_not_float64_in_disguise(data32):
    """float32 stays float32 in tinynn: float64 gradients would differ from torch's float32 by
    more than float32 rounding, and the runner also checks each array's dtype."""
    (result,) = run_stages([find_stage("optim")], data32, RunConfig(dtype="float32", **FAST))
    assert result.ok, _explain(result)
    assert 0.0 < result.worst["grads"], "float32 gradients from two libraries are rarely bit-identical"


@pytest.mark.parametrize("torch_accuracy, ok", [
    (0.9605419635772705, True),  # torch on CUDA: the same predictions, one float32 ulp from NumPy's mean
    (0.9605419039726257 + 1 / 10_000, False),  # one prediction more out of 10,000
    (0.9605419039726257 * (1 + 1e-6), False),  # a relative gap no float32 rounding explains
])
def test_float64_validation_accuracy_is_held_to_float32_rounding_and_no_more(torch_accuracy, ok):
    from parity.checks import Checker, tolerance
    from parity.events import Epoch
    from parity.runner import StageResult

    result = StageResult("validation", "Add validation", "linear", "lockstep")
    checker = Checker(result, tolerance("float64", "lockstep"))
    checker.epoch(1, Epoch(0.25, 0.9605419039726257), Epoch(0.25, torch_accuracy))
    assert (not result.failures) is ok, result.failures


@pytest.mark.parametrize("name", ["cnn", "adamw"])  # SGD's momentum; Adam's moments and BatchNorm's statistics
def test_float64_per_step_is_held_to_the_float64_tolerance(name, data64):
    (result,) = _run([name], data64, RunConfig(dtype="float64", per_step=True, **FAST))
    assert result.ok and result.mode == "per_step", _explain(result)
    assert max(result.worst[kind] for kind in ("loss", "grads", "weights", "optimizer")) <= PARITY_F64_RTOL


def test_chaotic_data_is_checked_per_step_and_its_end_to_end_gap_is_not_bounded(data64):
    assert RunConfig(dtype="float64").checks_per_step("mnist") is False
    assert RunConfig(dtype="float32").checks_per_step("mnist") is True
    assert RunConfig(dtype="float64").checks_per_step("fashion-mnist") is True
    assert RunConfig(dtype="float64", per_step=False).checks_per_step("fashion-mnist") is False
    relabelled = dataclasses.replace(data64, source="fashion-mnist")
    (result,) = run_stages([find_stage("optim")], relabelled, RunConfig(dtype="float64", **FAST))
    assert result.ok and result.mode == "per_step", _explain(result)
    assert result.end_to_end["bound"] is None and result.end_to_end["ok"] is True


# ---------------------------------------------------------------------------------------- the harness
def test_replayed_shuffle_gives_tinynn_torchs_batches_epoch_after_epoch():
    import torch

    from tinynn.utils.data import DataLoader as TinyLoader
    from tinynn.utils.data import TensorDataset as TinyDataset

    n = 203
    ctx = StageContext(synthetic_data(n_train=n, n_valid=1), epochs=3, seed=7)
    torch_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(n)), batch_size=64,
                                               shuffle=True, generator=ctx.shuffle_generator())
    tiny_loader = TinyLoader(TinyDataset(np.arange(n)), batch_size=64, sampler=ctx.shuffle_sampler(n))
    orders = []
    for _ in range(3):
        torch_batches = [batch.tolist() for (batch,) in torch_loader]
        tiny_batches = [batch.tolist() for (batch,) in tiny_loader]
        assert tiny_batches == torch_batches
        orders.append([index for batch in torch_batches for index in batch])
    assert sorted(orders[0]) == list(range(n)) and orders[0] != orders[1] != orders[2]


def test_find_stage_takes_names_numbers_and_module_names():
    assert find_stage("cnn") is find_stage("10") is find_stage("s10_cnn") is STAGES[9]
    with pytest.raises(KeyError, match="no stage 'nope'; the stages are 1:from_scratch"):
        find_stage("nope")


def test_missing_data_falls_back_to_a_labelled_learnable_stand_in(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lines = []
    data = load_data(tmp_path / "empty", "mnist", "float32", download=False, log=lines.append)
    assert data.source == "synthetic"
    assert len(lines) == 1 and "synthetic" in lines[0] and "DatasetNotFoundError" in lines[0]
    assert data.x_train.shape == (50_000, 784) and data.x_valid.shape == (10_000, 784)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0 and set(np.unique(data.y_train)) == set(range(10))
    (result,) = run_stages([find_stage("optim")], data,
                           RunConfig(dtype="float32", epochs=1, max_steps=150, valid_size=2000))
    assert result.ok, _explain(result)
    assert result.torch.val_accuracy[-1] > 0.8, "the stand-in must be learnable, as MNIST is"


# ---------------------------------------------------------------------------------------- the CLI
def _cli_env() -> dict[str, str]:
    env = dict(os.environ)
    if data_dir() is not None:
        env["TINYNN_DATA"] = str(data_dir())
    return env


def test_cli_prints_the_table_writes_json_and_png_and_exits_0(tmp_path):
    json_path, png_path = tmp_path / "report.json", tmp_path / "curves.png"
    command = [sys.executable, "-m", "parity", "--stage", "linear", "--stage", "wrapped", "--epochs", "1",
               "--max-steps", "3", "--valid-size", "128", "--no-download", "--json", str(json_path),
               "--plot", str(png_path)]
    done = subprocess.run(command, cwd=ROOT, env=_cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "worst rel diff" in done.stdout and "all 2 stage(s) agree" in done.stdout
    report = json.loads(json_path.read_text())
    assert report["dtype"] == "float64" and report["device"] == "cpu"
    assert report["datasets"] in (["mnist"], ["synthetic"]) and report["ok"] is True
    assert [stage["name"] for stage in report["stages"]] == ["linear", "wrapped"]
    for stage in report["stages"]:
        assert stage["ok"] is True and stage["steps"] == 3
        assert set(stage["worst_rel_diff"]) >= {"loss", "grads", "weights", "val_loss", "val_accuracy"}
        assert len(stage["tinynn"]["losses"]) == len(stage["torch"]["losses"]) == 3
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _broken_run(monkeypatch, tmp_path, capsys, stage: str, module_class, factor: float, dtype: str = "float64"):
    from parity.__main__ import main

    original = module_class.backward

    def off_by_a_little(self, grad_output, needs_input_grad=True):
        return original(self, grad_output * factor, needs_input_grad)

    monkeypatch.setattr(module_class, "backward", off_by_a_little)
    json_path = tmp_path / "broken.json"
    code = main(["--stage", stage, "--dtype", dtype, "--epochs", "1", "--max-steps", "3", "--valid-size", "128",
                 "--no-download",
                 "--data", str(data_dir() or tmp_path), "--json", str(json_path),
                 "--plot", str(tmp_path / "broken.png"), "--quiet"])
    return code, json.loads(json_path.read_text()), capsys.readouterr().out


def test_a_gradient_off_by_one_part_in_a_million_fails_the_stage_and_the_cli(monkeypatch, tmp_path, capsys):
    code, report, out = _broken_run(monkeypatch, tmp_path, capsys, "linear", tinynn.nn.Linear, 1 + 1e-6)
    assert code == 1
    (stage,) = report["stages"]
    assert stage["ok"] is False and report["ok"] is False
    assert stage["worst_rel_diff"]["grads"] > PARITY_F64_RTOL
    assert any("grad lin.weight" in failure for failure in stage["failures"])
    assert "FAIL" in out and "FAILED: linear" in out


def test_a_broken_conv_backward_fails_a_cnn_stage(monkeypatch, tmp_path, capsys):
    code, report, _ = _broken_run(monkeypatch, tmp_path, capsys, "sequential", tinynn.nn.Conv2d, 1 - 1e-6)
    assert code == 1 and report["stages"][0]["ok"] is False
    assert any("grad 1.weight" in failure or "grad 3.weight" in failure for failure in report["stages"][0]["failures"])


def _kink_checker(steps: int):
    from parity.checks import Checker, tolerance
    from parity.runner import StageResult

    result = StageResult("batchnorm", "BatchNorm and Dropout", "cnn", "per_step")
    return result, Checker(result, tolerance("float32", "per_step", kinks=True))


def _step(loss: float, grad: float):
    from parity.events import Step

    weight = np.array([1.0, 2.0], dtype=np.float32)
    return Step(np.float32(loss), {"w": weight}, {"w": np.array([grad, 1.0], dtype=np.float32)})


def test_float32_steps_across_a_relu_kink_are_counted_not_failed_up_to_the_bound():
    from tinynn.testing.tolerances import PARITY_F32_KINK_STEP_FRACTION

    steps = 100
    kinked = int(PARITY_F32_KINK_STEP_FRACTION * steps)  # at the bound: still ok
    result, checker = _kink_checker(steps)
    for index in range(1, steps + 1):
        result.steps = index
        checker.step(index, _step(1.0, 1.05 if index <= kinked else 1.0), _step(1.0, 1.0))
    checker.finish()
    assert result.failure_count == 0 and result.kink_steps == kinked
    assert result.worst["grads"] == 0.0 and result.kink_worst["grads"] == pytest.approx(0.05, rel=1e-5)
    result.steps, result.kink_steps = steps, kinked + 1  # one more: the bound is broken
    checker.finish()
    assert result.failure_count == 1 and "broke the gradient tolerance" in result.failures[0]


def test_float32_one_kinked_step_in_a_short_run_is_allowed_two_are_not():
    result, checker = _kink_checker(10)
    result.steps, result.kink_steps = 10, 1
    checker.finish()
    assert result.failure_count == 0
    result.kink_steps = 2
    checker.finish()
    assert result.failure_count == 1


def test_float32_loss_of_a_kinked_stage_is_still_held_at_every_step():
    result, checker = _kink_checker(1)
    result.steps = 1
    checker.step(1, _step(1.001, 1.0), _step(1.0, 1.0))
    assert result.failure_count == 1 and result.kink_steps == 0 and "loss" in result.failures[0]


def test_a_batchnorm_gradient_off_by_one_part_in_a_thousand_fails_float32_despite_the_kink_allowance(
        monkeypatch, tmp_path, capsys):
    code, report, _ = _broken_run(monkeypatch, tmp_path, capsys, "batchnorm", tinynn.nn.BatchNorm2d, 1 + 1e-3,
                                  dtype="float32")
    (stage,) = report["stages"]
    assert code == 1 and stage["ok"] is False
    assert stage["kink_steps"] == stage["steps"] == 3  # every step breaks: no kink explains that
    assert any("broke the gradient tolerance" in failure for failure in stage["failures"])


def test_a_learning_rate_schedule_off_by_one_part_in_a_hundred_million_fails_the_adamw_stage(monkeypatch, data64):
    from tinynn.optim.lr_scheduler import OneCycleLR

    original = OneCycleLR.get_lr
    monkeypatch.setattr(OneCycleLR, "get_lr", lambda self: [lr * (1 + 1e-8) for lr in original(self)])
    (result,) = _run(["adamw"], data64, RunConfig(dtype="float64", epochs=1, max_steps=3, valid_size=128))
    assert not result.ok
    assert any(" group 0 lr" in failure for failure in result.failures), result.failures


def test_cli_rejects_an_unknown_stage(capsys):
    from parity.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--stage", "nope"])
    assert exit_info.value.code == 2
    assert "no stage 'nope'" in capsys.readouterr().err


@pytest.mark.skipif(cuda_available(), reason="checks the message given without a GPU")
def test_cli_device_cuda_without_a_gpu_says_so_and_skips(capsys):
    from parity.__main__ import main

    assert main(["--device", "cuda"]) == 0
    assert "skipped: --device cuda, but torch" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------- GPU
@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="torch sees no CUDA device")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_on_the_gpu_agrees_with_tinynn_on_the_cpu(dtype, data64, data32):
    data = data64 if dtype == "float64" else data32
    names = ("optim", "cnn", "sequential", "wrapped", "gpu", "batchnorm", "adamw")
    results = _run(names, data, RunConfig(dtype=dtype, device="cuda", epochs=2, max_steps=20, valid_size=512))
    for result in results:
        assert result.ok, _explain(result)
        assert result.torch_device.startswith("cuda")


# ---------------------------------------------------------------------------------------- the tutorial's figures
_REPEATS = {"sequential": "cnn", "gpu": "wrapped"}  # on a CPU: the same numbers as the stage named


@pytest.mark.skipif(cuda_available(), reason="on a GPU the gpu stage runs torch on CUDA: not a repeat")
def test_sequential_and_cpu_gpu_stages_repeat_the_cnn_and_wrapped_stages_bit_for_bit(data64):
    """nn.Sequential with Lambda computes stage 10's CNN in the same order, and stage 13 on a CPU is
    stage 12: both frameworks' every loss and validation loss is bit for bit the same, and so are the
    worst differences between them."""
    results = {r.name: r for r in _run(["cnn", "sequential", "wrapped", "gpu"], data64,
                                       RunConfig(dtype="float64", **FAST))}
    for repeat, original in _REPEATS.items():
        for side in ("tinynn", "torch"):
            assert getattr(results[repeat], side).losses == getattr(results[original], side).losses, (repeat, side)
            assert getattr(results[repeat], side).val_loss == getattr(results[original], side).val_loss
        assert results[repeat].worst == results[original].worst, (repeat, results[repeat].worst)


@pytest.mark.slow
@pytest.mark.skipif(data_dir() is None, reason="needs the real MNIST files (TINYNN_DATA or ../shared/data)")
def test_full_tutorial_training_reaches_the_tutorials_figures_in_lockstep(tmp_path):
    # The main job itself, in its own process, so that both frameworks run single-threaded (see
    # `python -m parity --help`): about four minutes on two cores. Without a GPU it leaves out the
    # two stages that repeat another's arithmetic there, bit for bit (proved on every CI run by
    # test_sequential_and_cpu_gpu_stages_repeat_the_cnn_and_wrapped_stages_bit_for_bit).
    names = [name for name in STAGE_NAMES if name not in _REPEATS or (name == "gpu" and cuda_available())]
    json_path = tmp_path / "full.json"
    command = [sys.executable, "-m", "parity", "--no-download", "--json", str(json_path),
               "--plot", str(tmp_path / "full.png"), "--quiet", *(f"--stage={name}" for name in names)]
    done = subprocess.run(command, cwd=ROOT, env=_cli_env(), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(json_path.read_text())
    assert report["dtype"] == "float64" and report["ok"] is True and report["modes"] == ["lockstep"]
    assert [stage["name"] for stage in report["stages"]] == names
    text = load_data(None, "docs")
    for stage in report["stages"]:
        batches = -(-len(text.x_train) // find_stage(stage["name"]).BATCH_SIZE) if stage["data"] == "docs" else 782
        assert stage["ok"] is True and stage["steps"] == 2 * batches, stage["name"]
        assert max(stage["worst_rel_diff"].values()) <= PARITY_F64_RTOL, (stage["name"], stage["worst_rel_diff"])
        assert stage["tinynn"]["val_loss"] == pytest.approx(stage["torch"]["val_loss"], rel=PARITY_F64_RTOL)
        val_loss, val_accuracy = stage["torch"]["val_loss"][-1], stage["torch"]["val_accuracy"][-1]
        if stage["data"] == "docs":
            # The language models learn more than how often each character comes: their validation
            # loss beats the best context-free guess (each character's frequency in the training
            # text, add-one smoothed), and they predict the next character more often than "always
            # a space" does (measured 2026-12-07: 3.43 and 14.6% on this text; a bigram model 2.89).
            counts = np.bincount(text.y_train.ravel(), minlength=len(text.vocab))
            frequency = (counts + 1) / (counts.sum() + len(counts))
            unigram_loss = -np.mean(np.log(frequency[text.y_valid.ravel()]))
            most_common = np.mean(text.y_valid == np.argmax(counts))
            assert stage["torch"]["val_loss"][1] < stage["torch"]["val_loss"][0], stage["name"]
            assert val_loss < unigram_loss and val_accuracy > most_common, (stage["name"], val_loss, unigram_loss,
                                                                           val_accuracy, most_common)
            continue
        if stage["name"] not in TUTORIAL_STAGE_NAMES:
            # Past the tutorial: it learns (the second epoch validates better than the first), on
            # MNIST as well as the tutorial's CNNs, on Fashion-MNIST as small CNNs do (80-90%).
            assert stage["torch"]["val_loss"][1] < stage["torch"]["val_loss"][0], stage["name"]
            expected = {"batchnorm": ("mnist", 0.90), "adamw": ("fashion-mnist", 0.80)}[stage["name"]]
            assert (stage["data"], val_accuracy >= expected[1]) == (expected[0], True), (stage["name"], val_accuracy)
            continue
        # The issue's figures: about 0.3 for the logistic regressions, 0.2-0.35 for the CNNs (the
        # tutorial prints 0.29-0.34 and 0.18-0.25; seed 0 here gives 0.29-0.31 and 0.24).
        low, high = (0.25, 0.35) if stage["kind"] == "linear" else (0.20, 0.35)
        assert low <= val_loss <= high, (stage["name"], val_loss)
        assert val_accuracy >= 0.90, (stage["name"], val_accuracy)
