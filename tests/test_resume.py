"""Resume: train, save the model, the optimizer, the scheduler and the generator, load them in a new
process and go on; every loss and weight is identical, bit for bit, to a run that never stopped.

This file is also the training script the test starts in subprocesses:
``python tests/test_resume.py full|first|resume OPTIMIZER DIR [--forget optimizer|scheduler|rng]``.
The data are shuffled each epoch and noised each step from tinynn's generator (as dropout would
draw), so a resume that does not restore the generator draws other numbers; ``--forget`` leaves
one piece out, and the test checks that the comparison then fails, so it can fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EPOCHS_BEFORE, EPOCHS_AFTER = 2, 2  # the checkpoint is taken at an epoch boundary
BATCHES_PER_EPOCH = 6


def build(kind: str):
    """The model, the optimizer, the scheduler and the data loader, from tinynn's seed 0."""
    import tinynn
    from tinynn import nn, optim
    from tinynn.optim.lr_scheduler import OneCycleLR, StepLR
    from tinynn.utils.data import DataLoader, TensorDataset

    tinynn.manual_seed(0)
    data_rng = np.random.default_rng(1)  # the data themselves are fixed, apart from tinynn's generator
    x = data_rng.standard_normal((16 * BATCHES_PER_EPOCH, 8))
    y = data_rng.integers(0, 3, size=len(x))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    total_steps = (EPOCHS_BEFORE + EPOCHS_AFTER) * BATCHES_PER_EPOCH
    if kind == "sgd":
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        scheduler = StepLR(opt, step_size=5, gamma=0.5)
    else:  # OneCycleLR also moves Adam's betas[0], which the optimizer's state_dict carries
        opt = optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
        scheduler = OneCycleLR(opt, max_lr=0.05, total_steps=total_steps)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    return model, opt, scheduler, loader


def train(model, opt, scheduler, loader, epochs: int) -> list[float]:
    import tinynn
    from tinynn import nn

    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(epochs):
        for xb, yb in loader:
            xb = xb + 0.05 * tinynn.default_generator().standard_normal(xb.shape)
            loss = loss_fn(model(xb), yb)
            model.backward(loss_fn.backward(), needs_input_grad=False)
            opt.step()
            opt.zero_grad()
            scheduler.step()
            losses.append(float(loss))
    return losses


def main(mode: str, kind: str, directory: Path, forget: str | None) -> None:
    import tinynn

    model, opt, scheduler, loader = build(kind)
    checkpoint = directory / "checkpoint.safetensors"
    if mode == "first":
        train(model, opt, scheduler, loader, EPOCHS_BEFORE)
        tinynn.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict(),
                     "rng": tinynn.get_rng_state()}, checkpoint)
        return
    if mode == "full":
        losses = train(model, opt, scheduler, loader, EPOCHS_BEFORE + EPOCHS_AFTER)
    else:
        state = tinynn.load(checkpoint)
        model.load_state_dict(state["model"])
        if forget != "optimizer":
            opt.load_state_dict(state["optimizer"])
        if forget != "scheduler":
            scheduler.load_state_dict(state["scheduler"])
        if forget != "rng":
            tinynn.set_rng_state(state["rng"])
        losses = train(model, opt, scheduler, loader, EPOCHS_AFTER)
    tinynn.save({"losses": np.array(losses), "model": model.state_dict(), "optimizer": opt.state_dict()},
                directory / f"{mode}{'-forget-' + forget if forget else ''}.safetensors")


def run(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, __file__, *args], check=True, cwd=ROOT, env=env, timeout=120)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[5] if len(sys.argv) > 5 else None)
else:
    import pytest

    import tinynn

    @pytest.fixture(scope="module", params=["sgd", "adam"])
    def trained(request, tmp_path_factory) -> tuple[str, Path]:
        """An uninterrupted run and the first part of another, each in its own process."""
        directory = tmp_path_factory.mktemp(f"resume-{request.param}")
        run("full", request.param, str(directory))
        run("first", request.param, str(directory))
        return request.param, directory

    def arrays(value) -> list[np.ndarray]:
        """Every array in a nested state, in order."""
        if isinstance(value, dict):
            return [array for key in value for array in arrays(value[key])]
        if isinstance(value, (list, tuple)):
            return [array for item in value for array in arrays(item)]
        return [value] if isinstance(value, np.ndarray) else []

    def test_a_resumed_run_is_bit_identical(trained: tuple[str, Path]) -> None:
        kind, directory = trained
        run("resume", kind, str(directory))
        full = tinynn.load(directory / "full.safetensors")
        resumed = tinynn.load(directory / "resume.safetensors")
        steps_before = EPOCHS_BEFORE * BATCHES_PER_EPOCH
        assert len(resumed["losses"]) == EPOCHS_AFTER * BATCHES_PER_EPOCH
        assert resumed["losses"].dtype == np.float64
        assert np.array_equal(resumed["losses"], full["losses"][steps_before:])
        assert list(resumed["model"]) == list(full["model"])
        for name, weight in full["model"].items():
            assert weight.dtype == np.float64 and np.array_equal(resumed["model"][name], weight), name
        assert resumed["optimizer"]["param_groups"] == full["optimizer"]["param_groups"]
        for ours, theirs in zip(arrays(resumed["optimizer"]["state"]), arrays(full["optimizer"]["state"]), strict=True):
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)

    @pytest.mark.parametrize("forget", ["optimizer", "scheduler", "rng"])
    def test_the_comparison_fails_when_a_piece_is_not_restored(trained: tuple[str, Path], forget: str) -> None:
        kind, directory = trained
        run("resume", kind, str(directory), "--forget", forget)
        full = tinynn.load(directory / "full.safetensors")
        resumed = tinynn.load(directory / f"resume-forget-{forget}.safetensors")
        steps_before = EPOCHS_BEFORE * BATCHES_PER_EPOCH
        assert not np.array_equal(resumed["losses"], full["losses"][steps_before:])
        assert not all(np.array_equal(resumed["model"][name], weight) for name, weight in full["model"].items())
