#!/usr/bin/env python3
"""Set up a local virtual environment and run tinynn's main job or its tests.

    python3 dev.py run    # set up .venv, then `python -m parity` (the parity report)
    python3 dev.py test   # set up .venv, then ruff and the whole test suite

Only the standard library is used here, so this works on a machine with nothing but Python.
Set-up is idempotent: a stamp in .venv records what was installed, and nothing is reinstalled
until pyproject.toml or this file changes.

torch: the CPU build is installed unless TINYNN_TORCH=cuda. A plain `torch` requirement on Linux
pulls a multi-GB CUDA build; `torch==X+cpu` is the CPU wheel. pip takes it from a local wheel
folder when the machine has one (as pip's find-links), else from PyTorch's CPU index.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TORCH_VERSION = "2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
EXTRAS = "all"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(*args: str | os.PathLike[str]) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT)


def stamp_text() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "dev.py"):
        digest.update((ROOT / name).read_bytes())
    return f"{digest.hexdigest()} torch={os.environ.get('TINYNN_TORCH', 'cpu')}\n"


def install_torch(python: Path) -> None:
    pip = [python, "-m", "pip", "install", "--quiet"]
    if os.environ.get("TINYNN_TORCH", "cpu") == "cuda":
        run(*pip, f"torch=={TORCH_VERSION}")
        return
    if sys.platform == "darwin":  # macOS wheels on PyPI are CPU-only already
        run(*pip, f"torch=={TORCH_VERSION}")
        return
    try:  # a local CPU wheel (pip's find-links) or an index that has +cpu builds
        run(*pip, f"torch=={TORCH_VERSION}+cpu")
    except subprocess.CalledProcessError:
        run(*pip, f"torch=={TORCH_VERSION}+cpu", "--extra-index-url", TORCH_CPU_INDEX)


def setup() -> Path:
    python = venv_python()
    stamp = VENV / ".tinynn-installed"
    if python.exists() and stamp.exists() and stamp.read_text() == stamp_text():
        return python
    if not python.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    install_torch(python)
    run(python, "-m", "pip", "install", "--quiet", "-e", f".[{EXTRAS}]")
    stamp.write_text(stamp_text())
    return python


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("run", [])
    if command not in ("run", "test", "setup"):
        print(__doc__)
        return 2
    python = setup()
    if command == "setup":
        return 0
    if command == "run":
        return subprocess.run([str(python), "-m", "parity", *rest], cwd=ROOT).returncode
    lint = subprocess.run([str(python), "-m", "ruff", "check", "."], cwd=ROOT).returncode
    tests = subprocess.run([str(python), "-m", "pytest", *rest], cwd=ROOT).returncode
    return tests or lint


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
