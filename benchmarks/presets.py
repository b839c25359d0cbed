"""How much each kind of run measures: ``full`` (about ten minutes on 2 cores), ``quick``, ``smoke``."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.workloads import MNIST_SAMPLES


@dataclass(frozen=True)
class Preset:
    """How much to measure: repetitions, sizes and scaling points."""

    name: str
    op_reps: int
    op_min_rep_seconds: float
    op_batch: int | None  # None: each case's own batch; the smoke test shrinks them all
    pipeline_samples: int
    pipeline_reps: int
    pipeline_warmup_steps: int
    memory_steps: int
    batch_sizes: tuple[int, ...]
    image_sizes: tuple[int, ...]
    channels: tuple[int, ...]
    image_batch: int
    conv_batch: int
    conv_image: int
    scaling_reps: int
    scaling_min_rep_seconds: float
    profile_steps: int
    profile_conv_calls: int
    settle_seconds: float  # pause before a CPU framework follows the other (see timing.py)


PRESETS = {
    "full": Preset("full", op_reps=11, op_min_rep_seconds=0.05, op_batch=None, pipeline_samples=MNIST_SAMPLES,
                   pipeline_reps=5, pipeline_warmup_steps=20, memory_steps=100,
                   batch_sizes=(16, 32, 64, 128, 256, 512, 1024), image_sizes=(28, 56, 84, 112),
                   channels=(16, 32, 64, 128, 256), image_batch=64, conv_batch=16, conv_image=32,
                   scaling_reps=5, scaling_min_rep_seconds=0.05, profile_steps=200, profile_conv_calls=20,
                   settle_seconds=0.2),
    "quick": Preset("quick", op_reps=5, op_min_rep_seconds=0.02, op_batch=None, pipeline_samples=6_400,
                    pipeline_reps=3, pipeline_warmup_steps=10, memory_steps=20,
                    batch_sizes=(16, 128, 1024), image_sizes=(28, 112), channels=(16, 64, 256),
                    image_batch=64, conv_batch=8, conv_image=32, scaling_reps=3, scaling_min_rep_seconds=0.02,
                    profile_steps=60, profile_conv_calls=5, settle_seconds=0.2),
    # For the test suite: every size tiny, so the figures mean nothing but every path runs.
    "smoke": Preset("smoke", op_reps=2, op_min_rep_seconds=0.0, op_batch=2, pipeline_samples=256,
                    pipeline_reps=2, pipeline_warmup_steps=1, memory_steps=2, batch_sizes=(2, 4),
                    image_sizes=(8, 12), channels=(2, 4), image_batch=2, conv_batch=2, conv_image=6,
                    scaling_reps=2, scaling_min_rep_seconds=0.0, profile_steps=3, profile_conv_calls=1,
                    settle_seconds=0.0),
}
