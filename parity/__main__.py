"""``python -m parity``: run the tutorial's stages in torch and tinynn, compare them, and report.

Exit status: 0 when every stage keeps its tolerance, 1 when any does not, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def description() -> str:
    """The help text, with the tolerances in force. Imported here, not at the top: importing them
    loads tinynn and so NumPy, which must wait for ``single_threaded_by_default``."""
    from tinynn.testing.tolerances import (
        PARITY_ACCURACY_RTOL,
        PARITY_F32_ACCURACY_POINTS,
        PARITY_F32_ATOL,
        PARITY_F32_RTOL,
        PARITY_F64_RTOL,
    )

    return f"""\
Run every stage of PyTorch's "What is torch.nn really?" tutorial twice, in torch and in tinynn,
from the same initial weights and on the same batches in the same order, and compare them.

--dtype float64 (the default) is the strict proof: both frameworks train on their own, and every
step's loss, gradients and updated weights, and each epoch's validation loss, must agree to
{PARITY_F64_RTOL:g} relative (the validation accuracy, a float32 mean in the tutorial, to {PARITY_ACCURACY_RTOL:.2g}).
float64 training is not chaotic (two torch runs one ulp apart stay
within 3e-15), so any larger gap is a bug.

--dtype float32 is the tutorial's own dtype. float32 training is chaotic (two torch runs one ulp
apart end far apart), so it is checked in two passes: per step from shared weights (before each step
tinynn takes torch's weights and momentum; gradients within {PARITY_F32_RTOL:g} rel / {PARITY_F32_ATOL:g} abs),
then each framework on its own (final validation accuracy within {PARITY_F32_ACCURACY_POINTS:g}).
It takes about twice as long.

Timings: torch and tinynn take turns, one step each, and only the time inside each framework counts.
Both run on one thread (OMP_NUM_THREADS=1 unless you set it): thread pools that spin-wait while the
other framework computes would steal each other's cores.

--device cuda runs torch on the GPU (TF32 off, deterministic algorithms) against tinynn on the CPU;
without a GPU it says so and skips. Stage 13 ("gpu") uses the GPU whenever torch sees one, as the
tutorial does.

--textbook runs tinynn on its textbook code only (tinynn.set_textbook(True), as TINYNN_TEXTBOOK=1):
the plain NumPy in tinynn/nn/, with no module of the speed engine (tinynn._engine) imported. The
report says which code ran ("tinynn: textbook" or "tinynn: engine") and which engine modules, if
any, were imported; with --textbook any is a failure.
"""


def build_parser() -> argparse.ArgumentParser:
    from parity.stages import STAGES

    names = ", ".join(f"{number}:{stage.NAME}" for number, stage in enumerate(STAGES, start=1))
    parser = argparse.ArgumentParser(prog="python -m parity", description=description(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", action="append", metavar="NAME",
                        help=f"run only this stage (repeatable; a name or number): {names}")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="float64: strict lockstep proof (default); float32: the tutorial's dtype")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where torch runs (default cpu)")
    parser.add_argument("--data", metavar="DIR",
                        help="folder holding mnist/ (else $TINYNN_DATA, the loader's cache, a download)")
    parser.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist")
    parser.add_argument("--no-download", action="store_true", help="never download the data")
    parser.add_argument("--epochs", type=int, default=2, metavar="N", help="epochs per stage (default 2)")
    parser.add_argument("--max-steps", type=int, metavar="N",
                        help="at most N training steps per epoch (the training set cut to N * 64 rows)")
    parser.add_argument("--valid-size", type=int, metavar="N", help="validate on the first N rows only")
    parser.add_argument("--per-step", action="store_true",
                        help="float64 too: tinynn takes torch's weights before each step (automatic for "
                             "fashion-mnist, whose training at the tutorial's lr 0.5 is chaotic even in float64)")
    parser.add_argument("--seed", type=int, default=0, help="seeds torch's initial weights and shuffle (default 0)")
    parser.add_argument("--json", metavar="PATH", default="parity-report/report.json",
                        help="the JSON report (default parity-report/report.json)")
    parser.add_argument("--plot", metavar="PATH", default="parity-report/loss_curves.png",
                        help="both frameworks' loss curves (default parity-report/loss_curves.png)")
    parser.add_argument("--textbook", action="store_true",
                        help="run tinynn on its textbook code, never the engine (as TINYNN_TEXTBOOK=1)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines, only the table")
    return parser


def single_threaded_by_default() -> None:
    """Both frameworks on one thread each, unless OMP_NUM_THREADS says otherwise.

    The two take turns step by step; idle BLAS/OpenMP thread pools spin-wait between turns and steal
    the cores from each other (up to 30x slower on 2 cores). Only works before numpy and torch load,
    as under ``python -m parity``.
    """
    threads = os.environ.setdefault("OMP_NUM_THREADS", "1")
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, threads)


def main(argv: list[str] | None = None) -> int:
    single_threaded_by_default()
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("epochs", "max_steps", "valid_size"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {value}")

    import tinynn

    if args.textbook:  # before any stage, model or op exists
        tinynn.set_textbook(True)

    from parity.stages import STAGES, find_stage

    try:
        stages = [find_stage(key) for key in args.stage] if args.stage else list(STAGES)
    except KeyError as exc:
        parser.error(exc.args[0])

    from parity import report
    from parity.data import load_data
    from parity.runner import RunConfig, run_stages
    from parity.torch_setup import cuda_available

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    if args.device == "cuda" and not cuda_available():
        import torch

        print(f"parity: skipped: --device cuda, but torch {torch.__version__} sees no CUDA device "
              f"(CUDA build: {torch.version.cuda or 'none'}). Run it on a machine with a GPU, or use --device cpu.",
              flush=True)
        return 0

    config = RunConfig(dtype=args.dtype, device=args.device, epochs=args.epochs, max_steps=args.max_steps,
                       valid_size=args.valid_size, seed=args.seed, per_step=True if args.per_step else None,
                       textbook=tinynn.is_textbook())
    loaded = {}

    def data_for(dataset: str):
        """Each dataset loaded once: the tutorial's (--dataset), and a stage's own (its DATASET)."""
        if dataset not in loaded:
            loaded[dataset] = load_data(args.data, dataset, args.dtype, download=not args.no_download,
                                        log=lambda line: print(line, flush=True))
        return loaded[dataset]

    data = data_for(args.dataset)
    say(f"parity: {len(stages)} stage(s) on {data.source} "
        f"({len(data.x_train)} train / {len(data.x_valid)} valid rows), "
        f"{args.dtype}, torch on {args.device}, {args.epochs} epoch(s), tinynn: {config.tinynn_code}"
        + (f", at most {args.max_steps} steps per epoch" if args.max_steps else ""))
    started = time.perf_counter()
    results = run_stages(stages, data, config, progress=say, data_for=data_for)

    print()
    print(report.format_table(results, config))
    json_path = report.write_json(report.to_json(results, config), args.json)
    print(f"\nJSON report: {json_path}")
    plot_path = report.plot_losses(results, config, args.plot)
    if plot_path is None:
        print("loss curves: skipped, matplotlib is not installed (pip install matplotlib)")
    else:
        print(f"loss curves: {plot_path}")
    failed = [r.name for r in results if not r.ok]
    elapsed = time.perf_counter() - started
    engine = report.engine_modules()
    if config.textbook and engine:
        print(f"FAILED: textbook mode, yet tinynn's engine was imported ({', '.join(engine)})")
        return 1
    if failed:
        print(f"FAILED: {', '.join(failed)} broke the tolerance ({elapsed:.0f}s)")
        return 1
    print(f"all {len(results)} stage(s) agree ({elapsed:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
