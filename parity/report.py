"""The parity report: a table for the terminal, a JSON file, and a PNG of the loss curves."""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from parity.checks import KINDS, tolerance
from parity.runner import RunConfig, StageResult
from tinynn.testing.tolerances import PARITY_F32_KINK_STEP_FRACTION


def _num(value: float, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _last(values: list[float]) -> float:
    return values[-1] if values else float("nan")


def engine_modules() -> list[str]:
    """The modules of tinynn's speed engine imported so far: none when every op ran its textbook code."""
    return sorted(name for name in sys.modules if name.startswith("tinynn._engine"))


def _code_line(config: RunConfig) -> str:
    engine = engine_modules()
    imported = f"engine modules imported: {', '.join(engine)}" if engine else "no engine module imported"
    return f"tinynn: {config.tinynn_code} ({imported})"


def _modes(results: list[StageResult]) -> list[str]:
    """The modes the stages ran in (float32: the checks' pass; its figures come from independent runs)."""
    return sorted({r.mode for r in results}, key=("lockstep", "per_step", "independent").index)


def format_table(results: list[StageResult], config: RunConfig) -> str:
    """One row per stage: both frameworks' figures side by side, the worst differences, the seconds."""
    header = (
        f"{'stage':<20}{'data':<8}{'train loss':^17}{'val loss':^17}{'val accuracy':^17}"
        f"{'worst rel diff':^48}{'seconds':^15} ok\n"
        f"{'':<28}{'tinynn':>8} {'torch':>8}{'tinynn':>8} {'torch':>8}{'tinynn':>8} {'torch':>8}"
        f"{'loss':>12}{'grads':>12}{'weights':>12}{'state':>12}{'tinynn':>7} {'torch':>7}"
    )
    rows = [_code_line(config), header, "-" * len(header.splitlines()[0])]
    for number, r in enumerate(results, start=1):
        n, t = r.tinynn, r.torch
        status = "ok" if r.ok else "FAIL"
        device = "" if r.torch_device == "cpu" else f" (torch on {r.torch_device})"
        mode = " (per step)" if r.mode == "per_step" else ""
        rows.append(
            f"{f'{number:>2} {r.name}':<20}{r.data[:7]:<8}"
            f"{_num(n.train_loss):>8} {_num(t.train_loss):>8}"
            f"{_num(_last(n.val_loss)):>8} {_num(_last(t.val_loss)):>8}"
            f"{_num(_last(n.val_accuracy)):>8} {_num(_last(t.val_accuracy)):>8}"
            f"{r.worst.get('loss', 0.0):>12.1e}{r.worst.get('grads', 0.0):>12.1e}{r.worst.get('weights', 0.0):>12.1e}"
            f"{_state(r):>12.1e}"
            f"{n.seconds:>7.1f} {t.seconds:>7.1f} {status}{mode}{device}"
        )
    rows.append("-" * len(header.splitlines()[0]))
    total_n = sum(r.tinynn.seconds for r in results)
    total_t = sum(r.torch.seconds for r in results)
    rows.append(f"{'total':<20}{'':<8}{'':>116}{total_n:>7.1f} {total_t:>7.1f}")
    rows.append("state: the optimizer's (momentum, Adam's moments and step) and the buffers (running statistics).")
    for mode in _modes(results):
        tol = tolerance(config.dtype, mode)
        if mode == "lockstep":
            rows.append(f"{config.dtype}, lockstep: every step's loss, gradients, weights, optimizer state and "
                        f"buffers held to rel diff <= {tol.rtol:g}.")
        else:
            chaotic = sorted({r.data for r in results if r.mode == mode and r.end_to_end
                              and r.end_to_end.get("bound") is None})
            bound = (f"; not bounded on {', '.join(chaotic)}, whose training at lr 0.5 is chaotic "
                     "(see parity/runner.py)" if chaotic else "")
            rows.append(f"{config.dtype}, per step: each step from torch's weights held to {tol.rtol:g} rel / "
                        f"{tol.atol:g} abs; figures and seconds from independent runs, whose final val accuracy "
                        f"must agree within {tolerance(config.dtype, 'independent').accuracy_points:g}{bound}.")
            kinked = [f"{r.name} {r.kink_steps}/{r.steps}" for r in results if r.mode == mode and r.kink_steps]
            if kinked:
                rows.append(f"steps kinked (a ReLU input on the other side of 0; counted, at most "
                            f"{PARITY_F32_KINK_STEP_FRACTION:.0%}, not held to the tolerance): {', '.join(kinked)}.")
    return "\n".join(rows)


def _state(result: StageResult) -> float:
    return max(result.worst.get("optimizer", 0.0), result.worst.get("buffers", 0.0))


def _clean(value: Any) -> Any:
    """JSON has no inf or NaN: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def to_json(results: list[StageResult], config: RunConfig) -> dict[str, Any]:
    import torch

    import tinynn

    stages = []
    for r in results:
        stages.append({
            "name": r.name, "title": r.title, "kind": r.kind, "data": r.data, "ok": r.ok, "mode": r.mode,
            "steps": r.steps,
            "torch_device": r.torch_device,
            "worst_rel_diff": {kind: r.worst.get(kind, 0.0) for kind in KINDS},
            "arrays_compared": dict(r.checked),
            "failure_count": r.failure_count, "failures": r.failures, "error": r.error,
            "kink_steps": r.kink_steps, "kink_worst_rel_diff": r.kink_worst, "kink_examples": r.kink_examples,
            "end_to_end": r.end_to_end,
            "tinynn": r.tinynn.to_json(), "torch": r.torch.to_json(),
        })
    report = {
        "dtype": config.dtype, "device": config.device, "datasets": sorted({r.data for r in results}),
        "modes": _modes(results), "ok": all(r.ok for r in results),
        "epochs": config.epochs, "max_steps": config.max_steps, "valid_size": config.valid_size,
        "seed": config.seed,
        "tinynn_code": config.tinynn_code, "engine_modules_imported": engine_modules(),
        "tolerance": {mode: {"rtol": tol.rtol, "atol": tol.atol, "accuracy_points": tol.accuracy_points,
                             "accuracy_rtol": tol.accuracy_rtol}
                      for mode in _modes(results) for tol in [tolerance(config.dtype, mode)]},
        "versions": {"tinynn": tinynn.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "stages": stages,
    }
    return _clean(report)


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def _smooth(values: list[float], window: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if len(array) < window or window <= 1:
        return array
    kernel = np.ones(window) / window
    return np.convolve(array, kernel, mode="valid")


def plot_losses(results: list[StageResult], config: RunConfig, path: str | Path) -> Path | None:
    """Both frameworks' training-loss curves, overlaid, one panel per stage. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = min(4, max(1, len(results)))
    rows = math.ceil(len(results) / columns) if results else 1
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(results):]:
        ax.axis("off")
    for ax, (number, r) in zip(axes.flat, enumerate(results, start=1)):
        steps = max(len(r.torch.losses), 1)
        window = max(1, min(25, steps // 20))
        offset = (window - 1) / 2 + 1
        for side, label, style in ((r.torch, "torch", {"color": "tab:blue", "lw": 2.4, "alpha": 0.55}),
                                   (r.tinynn, "tinynn", {"color": "tab:orange", "lw": 1.0, "ls": "--"})):
            smooth = _smooth(side.losses, window)
            ax.plot(np.arange(len(smooth)) + offset, smooth, label=label, **style)
        for end in r.torch.epoch_ends[:-1]:
            ax.axvline(end, color="0.8", lw=0.8)
        worst = max(r.worst.get(kind, 0.0) for kind in ("loss", "grads", "weights", "optimizer", "buffers"))
        status = "ok" if r.ok else "FAILED"
        ax.set_title(f"{number} {r.name} ({r.data}): {status}, worst rel diff {worst:.0e}", fontsize=9)
        ax.set_xlabel("step" + (f" (mean of {window})" if window > 1 else ""), fontsize=8)
        ax.set_ylabel("training loss", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(f"tinynn vs torch, {config.dtype}, torch on {config.device}"
                 + ("" if config.dtype == "float64" else " (independent runs)"), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
