"""Scaling curves: time per sample as the batch, the channels or the image grows.

* batch size: one training step of the tutorial CNN (no DataLoader), batch 16 -> 1024;
* image size: the same step at batch 64 on S x S images, 28 -> 112 (the adaptive pool at the
  end takes any size);
* channels: ``Conv2d(C, C, 3, padding=1)`` forward + backward, C = 16 -> 256.

Time per sample falls while a larger batch still amortises per-call overhead, and stays flat
once the arithmetic dominates; a framework whose curve rises is losing to memory traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.ops import conv_case, forward_backward_runner
from benchmarks.presets import Preset
from benchmarks.timing import Framework, Runner, measure
from benchmarks.workloads import Trainer, synthetic_mnist


def train_step_runner(framework: Framework, batch: int, image_size: int) -> Runner:
    """One CNN training step on a fixed batch; on a GPU the batch is already there (compute only)."""
    trainer = Trainer(framework, "cnn", image_size=image_size)
    images, labels = trainer.tensors(*synthetic_mnist(batch, image_size=image_size))
    if framework.is_torch:
        images, labels = images.to(framework.device), labels.to(framework.device)
    return Runner(framework, lambda: trainer.step(images, labels))


def _curve(name: str, x_label: str, workload: str, points: Sequence[int], samples_of: Callable[[int], int],
           runners_of: Callable[[int], list[Runner]], preset: Preset, log: Callable[[str], None]) -> dict[str, Any]:
    curve: dict[str, Any] = {"name": name, "x_label": x_label, "workload": workload, "points": []}
    for x in points:
        stats = measure(runners_of(x), reps=preset.scaling_reps, warmup=1,
                        min_rep_seconds=preset.scaling_min_rep_seconds, settle_seconds=preset.settle_seconds)
        samples = samples_of(x)
        results = {fw: {**stat.to_json(), "per_sample_s": stat.median / samples} for fw, stat in stats.items()}
        curve["points"].append({"x": x, "samples": samples, "results": results})
        log(f"  {name} {x}: " + ", ".join(f"{fw} {1e6 * r['per_sample_s']:.1f} us/sample" for fw, r in results.items()))
    return curve


def run_scaling(frameworks: list[Framework], preset: Preset, log: Callable[[str], None]) -> list[dict[str, Any]]:
    image_batch, conv_batch, conv_image = preset.image_batch, preset.conv_batch, preset.conv_image
    return [
        _curve("batch size", "batch size", "tutorial CNN training step, 28x28 images", preset.batch_sizes,
               lambda batch: batch, lambda batch: [train_step_runner(fw, batch, 28) for fw in frameworks],
               preset, log),
        _curve("image size", "image side (pixels)", f"tutorial CNN training step, batch {image_batch}",
               preset.image_sizes, lambda size: image_batch,
               lambda size: [train_step_runner(fw, image_batch, size) for fw in frameworks], preset, log),
        _curve("channels", "channels in = out", f"Conv2d(C, C, 3, padding=1) forward+backward, "
               f"batch {conv_batch}, {conv_image}x{conv_image}", preset.channels, lambda c: conv_batch,
               lambda c: [forward_backward_runner(conv_case(conv_batch, c, conv_image), fw) for fw in frameworks],
               preset, log),
    ]
