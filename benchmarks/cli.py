"""``python -m benchmarks``: run everything, write results.json, results.md and the plots.

    python -m benchmarks                    # the full run (about four minutes on 2 cores)
    python -m benchmarks --quick            # fewer repetitions and points (under two minutes)
    python -m benchmarks --quick --machine nvidia-h100 --out benchmarks/results/nvidia-h100
    python -m benchmarks --adaptive-malloc  # glibc malloc left as it comes (see environment.steady_malloc)
    python -m benchmarks --quick --textbook # also tinynn's textbook code: a "textbook / torch CPU" column

--textbook times the ops, the pipelines and tinynn's memory a second time with tinynn in textbook
mode (``tinynn.textbook()``: the plain NumPy of tinynn/nn/, no engine), in a second pass that
interleaves the textbook code with torch CPU as the first pass does the engine; each ratio is
taken within its own pass. results.json holds that pass under "textbook".

Committed figures live in ``benchmarks/results/<machine>/``. On a machine whose environment sets
OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE, measure with them unset (``env -u OPENBLAS_CORETYPE -u
OPENBLAS_L2_SIZE python -m benchmarks ...``): results.md records whether they were set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import environment, report
from benchmarks.ops import HEADLINE_CONV, OP_CASES, backward_runner, forward_runner
from benchmarks.pipelines import memory_in_subprocesses, run_pipelines
from benchmarks.presets import PRESETS, Preset
from benchmarks.profiling import profile_all
from benchmarks.scaling import run_scaling
from benchmarks.timing import LABELS, TINYNN, TORCH_CPU, available_frameworks, measure

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("ops", "pipelines", "memory", "scaling", "profile")
TEXTBOOK_SECTIONS = ("ops", "pipelines", "memory")  # what --textbook measures again in textbook mode
# Issue 7's targets for tinynn's time relative to torch CPU (reported, never asserted).
TARGETS = {"logistic pipeline": 0.5, "CNN pipeline": 1.0, "wide conv forward+backward": 1.5}


def _ratio(results: dict[str, Any], key: Callable[[dict[str, Any]], float]) -> float | None:
    if TINYNN not in results or TORCH_CPU not in results:
        return None
    return key(results[TINYNN]) / key(results[TORCH_CPU])


def _plain(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}"


def run_ops(frameworks: list[Any], preset: Preset, log: Callable[[str], None]) -> list[dict[str, Any]]:
    results = []
    for case in OP_CASES:
        if preset.op_batch is not None:
            case = case.with_batch(preset.op_batch)
        entry: dict[str, Any] = {"op": case.op, "name": case.name, "layer": case.layer, "input": case.shape_text,
                                 "input_grad": case.input_grad}
        for direction, make_runner in (("forward", forward_runner), ("backward", backward_runner)):
            try:
                runners = [make_runner(case, framework) for framework in frameworks]
                stats = measure(runners, reps=preset.op_reps, warmup=2, min_rep_seconds=preset.op_min_rep_seconds,
                                settle_seconds=preset.settle_seconds)
            except Exception as error:
                entry[direction] = {"error": f"{type(error).__name__}: {error}"}
                log(f"  {case.name} {direction}: {entry[direction]['error']}")
                continue
            timings = {name: stat.to_json() for name, stat in stats.items()}
            entry[direction] = {"results": timings, "ratio": _ratio(timings, lambda r: r["median_s"])}
            log(f"  {case.name} {direction}: " + ", ".join(
                f"{name} {1e3 * r['median_s']:.3f} ms" for name, r in timings.items()))
        results.append(entry)
    return results


def headline(results: dict[str, Any]) -> list[dict[str, Any]]:
    """tinynn's time over torch CPU's for the three targets of the issue."""
    rows = []
    for pipeline in results.get("pipelines", {}).get("runs", []):
        name = f"{'logistic' if pipeline['workload'] == 'logistic' else 'CNN'} pipeline"
        ratio = _ratio(pipeline["results"], lambda r: r["epoch"]["median_s"])
        rows.append({"name": name, "detail": f"one epoch of {pipeline['samples']} samples, batch 64, with DataLoader",
                     "ratio": ratio, "target": TARGETS[name]})
    for op in results.get("ops", []):
        if op["name"] == HEADLINE_CONV and "results" in op.get("forward", {}) and "results" in op.get("backward", {}):
            forward, backward = op["forward"]["results"], op["backward"]["results"]
            ratio = _ratio({name: forward[name]["median_s"] + backward[name]["median_s"] for name in forward},
                           lambda seconds: seconds)
            rows.append({"name": "wide conv forward+backward", "detail": f"{op['layer']} on {op['input']}",
                         "ratio": ratio, "target": TARGETS["wide conv forward+backward"]})
    for row in rows:
        row["met"] = None if row["ratio"] is None else row["ratio"] <= row["target"]
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="tinynn vs torch CPU (vs torch CUDA).")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer repetitions and points (under two minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes for the test suite (figures meaningless)")
    parser.add_argument("--machine", help="short name of this machine, e.g. cpu-2core-epyc (default: guessed)")
    parser.add_argument("--out", type=Path, help="output folder (default: benchmarks/out/<machine>)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the usable cores)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--settle", type=float, help="seconds to let one CPU library's spinning threads park "
                        "before the other is timed (default: the preset's)")
    parser.add_argument("--no-cuda", action="store_true", help="leave the GPU out even when torch sees one")
    parser.add_argument("--adaptive-malloc", action="store_true",
                        help="leave glibc malloc's thresholds adaptive; by default they are fixed first "
                             "(environment.steady_malloc), so that neither library's timings include page faults "
                             "that depend on what the process allocated before")
    parser.add_argument("--textbook", action="store_true",
                        help=f"also time {', '.join(TEXTBOOK_SECTIONS)} with tinynn in textbook mode (no engine), "
                             "for a 'textbook / torch CPU' column beside the engine's")
    parser.add_argument("--note", action="append", default=[], help="a line for results.md (repeatable)")
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.settle is not None:
        preset = replace(preset, settle_seconds=args.settle)
    sections = [section for section in SECTIONS if section in args.sections.split(",")]
    import torch

    import tinynn

    malloc = {"steady_malloc": False} if args.adaptive_malloc else environment.steady_malloc()
    threads = args.threads or environment.usable_cores()
    torch.set_num_threads(threads)
    tinynn.set_num_threads(threads)
    info = environment.collect(ROOT)
    info["malloc"] = malloc
    machine = args.machine or environment.default_machine_slug(info)
    out = args.out or ROOT / "benchmarks" / "out" / machine
    out.mkdir(parents=True, exist_ok=True)
    frameworks = available_frameworks(use_cuda=not args.no_cuda)
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {line}", flush=True)

    results: dict[str, Any] = {
        "schema": 1, "machine": machine, "preset": asdict(preset),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "environment": info,
        "torch_threads_set": threads, "frameworks": {fw.name: LABELS[fw.name] for fw in frameworks},
        "notes": list(args.note), "section_seconds": {}, "errors": {},
    }
    log(f"machine {machine}: {info['cpu_model']}, frameworks {', '.join(fw.name for fw in frameworks)}; "
        f"preset {preset.name}; writing {out}")
    if args.textbook:
        results["textbook"] = {"section_seconds": {}, "errors": {}}
    for section in sections:
        log(f"{section} ...")
        run_section(section, results, frameworks, preset, threads, log)
        if args.textbook and section in TEXTBOOK_SECTIONS:
            log(f"{section}, tinynn in textbook mode ...")
            with tinynn.textbook():
                run_section(section, results["textbook"], frameworks, preset, threads, log, textbook=True)
            results["textbook"]["headline"] = headline(results["textbook"])
        results["headline"] = headline(results)
        results["environment"]["load_average_end"] = environment.load_average()
        write(results, out)
    plots = report.write_plots(results, out)
    results["plots"] = plots
    write(results, out)
    textbook_ratios = {row["name"]: row["ratio"] for row in results.get("textbook", {}).get("headline", [])}
    for row in results["headline"]:
        line = f"headline {row['name']}: tinynn / torch CPU = {_plain(row['ratio'])} (target <= {row['target']})"
        if row["name"] in textbook_ratios:
            line += f", textbook / torch CPU = {_plain(textbook_ratios[row['name']])}"
        log(line)
    log(f"done in {time.perf_counter() - started:.0f} s: {out / 'results.md'}")
    return 1 if results["errors"] or results.get("textbook", {}).get("errors") else 0


def run_section(section: str, results: dict[str, Any], frameworks: list[Any], preset: Preset, threads: int,
                log: Callable[[str], None], textbook: bool = False) -> None:
    """Measure one section into ``results[section]`` (a failure into ``results["errors"]``). ``textbook``:
    tinynn runs its textbook code (the caller holds ``tinynn.textbook()``); memory measures tinynn alone,
    in subprocesses with TINYNN_TEXTBOOK=1."""
    section_start = time.perf_counter()
    try:
        if section == "ops":
            results["ops"] = run_ops(frameworks, preset, log)
        elif section == "pipelines":
            runs, source = run_pipelines(frameworks, preset, log)
            results["pipelines"] = {"data": source, "runs": runs}
        elif section == "memory":
            measured = [fw for fw in frameworks if fw.name == TINYNN] if textbook else frameworks
            results["memory"] = memory_in_subprocesses(measured, preset.memory_steps, threads, log, textbook=textbook)
        elif section == "scaling":
            results["scaling"] = run_scaling(frameworks, preset, log)
        elif section == "profile":
            results["profile"] = profile_all(preset.profile_steps, preset.profile_conv_calls, preset.op_batch)
    except Exception as error:
        results["errors"][section] = f"{type(error).__name__}: {error}"
        log(f"{section} failed: {results['errors'][section]}")
    results["section_seconds"][section] = round(time.perf_counter() - section_start, 1)


def write(results: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(report.markdown(results))
