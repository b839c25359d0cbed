"""The tutorial's stages in order, then the stages that go past it. Each module has NAME, TITLE,
KIND ("linear", "cnn" or "sequence") and the generators ``torch_version(ctx)`` and ``tinynn_version(ctx)``
(see parity/events.py); optionally DATASET (its own data) and CHAOTIC_ON (see parity/runner.py)."""

from __future__ import annotations

from types import ModuleType

from parity.stages import (
    s01_from_scratch,
    s02_functional,
    s03_module,
    s04_linear,
    s05_optim,
    s06_dataset,
    s07_dataloader,
    s08_validation,
    s09_fit,
    s10_cnn,
    s11_sequential,
    s12_wrapped,
    s13_gpu,
    s14_batchnorm,
    s15_adamw,
    s16_char_lstm,
    s17_char_transformer,
)

STAGES: list[ModuleType] = [
    s01_from_scratch, s02_functional, s03_module, s04_linear, s05_optim, s06_dataset, s07_dataloader,
    s08_validation, s09_fit, s10_cnn, s11_sequential, s12_wrapped, s13_gpu,
    # after the tutorial: its CNN with BatchNorm and Dropout, then trained with AdamW on Fashion-MNIST
    s14_batchnorm, s15_adamw,
    # then sequence models: character-level language models of the project's own text
    s16_char_lstm, s17_char_transformer,
]


def find_stage(key: str) -> ModuleType:
    """A stage by NAME ("cnn"), number ("10"), or module name ("s10_cnn")."""
    key = key.strip().lower()
    for number, stage in enumerate(STAGES, start=1):
        module_name = stage.__name__.rsplit(".", 1)[1]
        if key in (stage.NAME, module_name, str(number), f"{number:02d}", f"s{number:02d}"):
            return stage
    names = ", ".join(f"{number}:{stage.NAME}" for number, stage in enumerate(STAGES, start=1))
    raise KeyError(f"no stage {key!r}; the stages are {names}")
