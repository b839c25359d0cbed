"""Textbook mode (``tinynn.textbook``, ``set_textbook``, ``TINYNN_TEXTBOOK=1``): the plain NumPy of
tinynn/nn/ runs instead of the engine, imports none of it, and trains exactly as the engine does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinynn
import tinynn.nn as nn
from tests.conftest import data_dir
from tinynn.testing.compare import assert_close
from tinynn.testing.tolerances import TORCH_F64_RTOL

ROOT = Path(__file__).resolve().parents[1]
STEPS = 5

# The tutorial CNN, trained for a few steps on random data; prints what it saw as one JSON line.
TRAIN_SCRIPT = """
import json, sys, threading
import numpy as np
import tinynn
import tinynn.nn as nn
import tinynn.nn.functional as F

tinynn.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU(),
    nn.Conv2d(16, 10, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
optimizer = tinynn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
rng = np.random.default_rng(0)
losses = []
for _ in range(3):
    images, labels = rng.random((32, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 32)
    logits = model(images)
    losses.append(float(F.cross_entropy(logits, labels)))
    model.backward(F.cross_entropy_backward(1.0, logits, labels), needs_input_grad=False)
    optimizer.step()
    optimizer.zero_grad()
print(json.dumps({"textbook": tinynn.is_textbook(), "threads": threading.active_count(), "losses": losses,
                  "engine": sorted(name for name in sys.modules if name.startswith("tinynn._engine"))}))
"""


def tutorial_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU(),
        nn.Conv2d(16, 10, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


def train(model: nn.Module, steps: int = STEPS) -> list[float]:
    """``steps`` SGD steps (momentum 0.9) of cross-entropy on fixed random float64 batches; the losses."""
    optimizer = tinynn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(1)
    losses = []
    for _ in range(steps):
        images, labels = rng.random((64, 1, 28, 28)), rng.integers(0, 10, 64)
        logits = model(images)
        losses.append(float(nn.functional.cross_entropy(logits, labels)))
        model.backward(nn.functional.cross_entropy_backward(1.0, logits, labels), needs_input_grad=False)
        optimizer.step()
        optimizer.zero_grad()
    return losses


@pytest.fixture(autouse=True)
def _engine_mode_around_each_test():
    """Every test starts in the default (engine) mode and leaves the process in it."""
    before = tinynn.is_textbook()
    tinynn.set_textbook(False)
    yield
    tinynn.set_textbook(before)


def test_a_textbook_process_trains_without_importing_the_engine_or_starting_a_thread():
    env = {**os.environ, "TINYNN_TEXTBOOK": "1"}
    completed = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=120, check=True)
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert seen["textbook"] is True
    assert seen["engine"] == []
    assert seen["threads"] == 1
    assert len(seen["losses"]) == 3 and all(np.isfinite(seen["losses"]))


def test_textbook_and_engine_train_the_tutorial_cnn_alike_in_float64():
    tinynn.manual_seed(0)
    engine_model = tutorial_cnn().to(tinynn.float64)
    textbook_model = tutorial_cnn().to(tinynn.float64)
    textbook_model.load_state_dict(engine_model.state_dict())

    engine_losses = train(engine_model)
    with tinynn.textbook():
        textbook_losses = train(textbook_model)

    assert not tinynn.is_textbook()
    # The same formulas summed in other orders (the engine's columns are (i, j, c), the textbook's (c, i, j)).
    assert_close(np.array(textbook_losses), np.array(engine_losses), rtol=TORCH_F64_RTOL)
    engine_weights = engine_model.state_dict()
    for name, value in textbook_model.state_dict().items():
        assert_close(value, engine_weights[name], rtol=TORCH_F64_RTOL, name=name)


def test_textbook_as_a_decorator():
    @tinynn.textbook()
    def inside() -> bool:
        return tinynn.is_textbook()

    @tinynn.textbook(False)
    def engine_inside() -> bool:
        return tinynn.is_textbook()

    assert inside() is True
    assert not tinynn.is_textbook()
    with tinynn.textbook():
        assert engine_inside() is False
        assert tinynn.is_textbook()
    assert inside.__name__ == "inside"


def test_nested_contexts_restore_the_mode_on_the_way_out_even_after_an_error():
    with tinynn.textbook():
        assert tinynn.is_textbook()
        with tinynn.textbook(False):
            assert not tinynn.is_textbook()
            with tinynn.textbook():
                assert tinynn.is_textbook()
            assert not tinynn.is_textbook()
        assert tinynn.is_textbook()
        with pytest.raises(ValueError), tinynn.textbook(False):
            raise ValueError("inside")
        assert tinynn.is_textbook()
    assert not tinynn.is_textbook()
    tinynn.set_textbook(True)
    with tinynn.textbook(False):
        pass
    assert tinynn.is_textbook()


@pytest.mark.parametrize("value", [1, 0, "yes", None, np.bool_(True)])
def test_set_textbook_and_textbook_refuse_anything_but_a_bool(value):
    with pytest.raises(TypeError, match="expects a bool"):
        tinynn.set_textbook(value)
    with pytest.raises(TypeError, match="expects a bool"):
        tinynn.textbook(value)
    assert not tinynn.is_textbook()


def _refuse(name: str):
    def refused(*args, **kwargs):
        raise AssertionError(f"{name} ran, but the forward took the other path")

    return refused


# The layer, its input's shape, its textbook backward and its engine backward.
LAYERS = {
    "Conv2d": (lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1), (4, 3, 9, 9),
               "tinynn.nn.conv.conv2d_backward_from_cols", "tinynn._engine.conv.conv2d_backward"),
    "MaxPool2d": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (4, 3, 9, 9),
                  "tinynn.nn.pooling.max_pool2d_backward_textbook", "tinynn._engine.pooling.max_pool2d_backward"),
}


@pytest.mark.parametrize("forward_textbook", [True, False], ids=["textbook forward", "engine forward"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_a_modules_backward_follows_the_path_its_forward_took(layer, forward_textbook, monkeypatch):
    make, shape, textbook_backward, engine_backward = LAYERS[layer]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    tinynn.manual_seed(0)
    module = make().to(tinynn.float64)
    with tinynn.textbook(forward_textbook):  # the reference: forward and backward in one mode
        y = module(x)
        grad_y = rng.standard_normal(y.shape)
        expected = module.backward(grad_y)
        expected_grads = [p.grad.copy() for p in module.parameters()]
        module.zero_grad()

    with tinynn.textbook(forward_textbook):
        module(x)
    # The mode flips between forward and backward; the path not taken must not run.
    path_not_taken = engine_backward if forward_textbook else textbook_backward
    monkeypatch.setattr(path_not_taken, _refuse(path_not_taken))
    with tinynn.textbook(not forward_textbook):
        grad_x = module.backward(grad_y)

    np.testing.assert_array_equal(grad_x, expected)
    for param, grad in zip(module.parameters(), expected_grads):
        np.testing.assert_array_equal(param.grad, grad)


def test_parity_textbook_runs_the_cnn_stage_on_the_textbook_code_and_says_so(tmp_path):
    json_path = tmp_path / "report.json"
    command = [sys.executable, "-m", "parity", "--textbook", "--stage", "cnn", "--epochs", "1", "--max-steps", "2",
               "--valid-size", "64", "--no-download", "--json", str(json_path), "--plot", str(tmp_path / "p.png")]
    env = {key: value for key, value in os.environ.items() if key != "TINYNN_TEXTBOOK"}
    if data_dir() is not None:
        env["TINYNN_DATA"] = str(data_dir())
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tinynn: textbook (no engine module imported)" in done.stdout
    report = json.loads(json_path.read_text())
    assert report["ok"] is True and report["tinynn_code"] == "textbook"
    assert report["engine_modules_imported"] == []


def test_parity_textbook_fails_when_an_engine_module_was_imported(tmp_path, capsys):
    import tinynn._engine.conv  # noqa: F401 - as if something had reached the engine
    from parity.__main__ import main

    code = main(["--textbook", "--stage", "linear", "--epochs", "1", "--max-steps", "1", "--valid-size", "64",
                 "--no-download", "--data", str(data_dir() or tmp_path), "--json", str(tmp_path / "r.json"),
                 "--plot", str(tmp_path / "p.png"), "--quiet"])
    assert code == 1
    assert "FAILED: textbook mode, yet tinynn's engine was imported (tinynn._engine" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["engine_modules_imported"]
