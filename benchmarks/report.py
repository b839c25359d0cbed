"""results.md (tables) and the PNG plots, both made from the results dict alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.timing import LABELS, TINYNN, TORCH_CPU

PROFILE_ROWS = 10
PROFILE_SUMMARY_ROWS = 3
TEXTBOOK_LABEL = "tinynn textbook (NumPy)"


def _unit(seconds: float) -> tuple[float, str]:
    if seconds >= 1:
        return 1.0, "s"
    if seconds >= 1e-3:
        return 1e3, "ms"
    return 1e6, "µs"


def _num(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def fmt_time(stats: dict[str, Any], key: str = "median_s") -> str:
    """``12.3 ms [12.1-12.6]``: the median with its interquartile range, in one unit."""
    scale, unit = _unit(stats[key])
    return f"{_num(stats[key] * scale)} {unit} [{_num(stats['q1_s'] * scale)}-{_num(stats['q3_s'] * scale)}]"


def fmt_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"**{ratio:.3g}**"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _machine_section(results: dict[str, Any]) -> list[str]:
    info = results["environment"]
    torch_info = info["torch"]
    blas = info["numpy_blas"]
    cuda = torch_info.get("cuda")
    gpu = (f"{cuda['device_name']} ({cuda['memory_gib']} GiB, CUDA {cuda['cuda_version']}, cuDNN "
           f"{cuda['cudnn_version']})" if cuda else "none (torch sees no CUDA device)")
    env = info["env"]
    slow = {name: env.get(name) for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    slow_text = ("**set** (" + ", ".join(f"{k}={v}" for k, v in slow.items() if v is not None) +
                 "): they slow numpy's BLAS on some machines" if any(v is not None for v in slow.values())
                 else "unset")
    others = ", ".join(f"{k}={v}" for k, v in env.items() if v is not None and k not in slow) or "none set"
    load = f"{info.get('load_average_start')} at the start, {info.get('load_average_end')} at the end"
    rows = [
        ["CPU", f"{info['cpu_model']}, {info['usable_cores']} usable cores"],
        ["GPU", gpu],
        ["numpy", f"{info['numpy']}, BLAS {blas.get('name')} {blas.get('version')}, "
                  f"{blas.get('num_threads')} threads ({blas.get('threads_source')})"],
        ["torch", f"{torch_info['version']}, {results['torch_threads_set']} CPU threads (set explicitly; "
                  f"reads back {torch_info['num_threads']}), CPU capability {torch_info.get('cpu_capability')}"],
        ["OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE", slow_text],
        ["other thread/data variables", others],
        ["load average (1, 5, 15 min)", load],
        ["Python, platform", f"{info['python']}, {info['platform']}"],
        ["glibc malloc", "thresholds fixed (environment.steady_malloc)" if info.get("malloc", {}).get("steady_malloc")
         else "as it comes (--adaptive-malloc: steps may take page faults that depend on what ran before)"],
    ]
    if "pipelines" in results:
        rows.append(["pipeline data", results["pipelines"]["data"]])
    lines = ["## Machine", "", *_table(["", ""], rows), ""]
    start_load = info.get("load_average_start")
    if start_load and start_load[0] > 0.5 * info["usable_cores"]:
        lines += [f"**Shared machine:** the load average was {start_load[0]} on {info['usable_cores']} cores when "
                  "the run started, so other processes competed for the CPU and the CPU figures are noisy "
                  "(torch's threads wait for each other when one is descheduled).", ""]
    return lines


def _textbook(results: dict[str, Any]) -> dict[str, Any] | None:
    """The --textbook pass (tinynn on its textbook code, timed against torch CPU again), if the run made one."""
    return results.get("textbook")


def _headline_section(results: dict[str, Any]) -> list[str]:
    textbook = _textbook(results)
    textbook_ratios = {row["name"]: row["ratio"] for row in (textbook or {}).get("headline", [])}
    rows = []
    for row in results["headline"]:
        cells = [row["name"], row["detail"], fmt_ratio(row["ratio"])]
        if textbook is not None:
            cells.append(fmt_ratio(textbook_ratios.get(row["name"])))
        met = "n/a" if row["met"] is None else ("yes" if row["met"] else "**no**")
        rows.append([*cells, f"<= {row['target']}", met])
    header = ["benchmark", "what", "tinynn / torch CPU", *(["textbook / torch CPU"] if textbook else []), "target",
              "met"]
    lines = ["## Headline: tinynn time / torch CPU time (lower is faster)", ""]
    if textbook is not None:
        lines += ["tinynn / torch CPU: tinynn as it runs by default, on its engine. textbook / torch CPU: tinynn in "
                  "textbook mode (`tinynn.textbook()`, the plain NumPy of tinynn/nn/), timed in a second pass against "
                  "torch CPU again. The targets are the engine's.", ""]
    lines += _table(header, rows) if rows else ["(not measured)"]
    missed = [row for row in results["headline"] if row["met"] is False]
    if missed:
        lines += ["", "Where the time goes, for each target missed:", ""]
        lines += [f"- {row['name']} at {row['ratio']:.2f} (target {row['target']}): {_where_time_goes(results, row)}"
                  for row in missed]
    return [*lines, ""]


def _where_time_goes(results: dict[str, Any], row: dict[str, Any]) -> str:
    """The forward/backward split of the wide conv, and the top of the matching profile."""
    parts = []
    for op in results.get("ops", []):
        if row["detail"] == f"{op['layer']} on {op['input']}":
            parts.append(", ".join(f"{direction} {op[direction]['ratio']:.2f}x torch CPU"
                                   for direction in ("forward", "backward") if op[direction].get("ratio")))
    profile = next((entry for entry in results.get("profile", []) if entry["target"] == row["name"]), None)
    if profile:
        top = ", ".join(f"`{entry['function']}` {entry['own_percent']:.0f}%"
                        for entry in profile["by_own_time"][:PROFILE_SUMMARY_ROWS])
        parts.append(f"tinynn's own time is mostly in {top} (profile below)")
    return "; ".join(parts) or "no profile in this run"


def _pipeline_section(results: dict[str, Any], frameworks: list[str]) -> list[str]:
    runs = results.get("pipelines", {}).get("runs", [])
    memory = {(row["workload"], row["framework"]): row for row in results.get("memory", [])}
    if not runs and not memory:
        return []
    lines = ["## Pipelines: one epoch of the tutorial's training loop", "",
             "DataLoader(TensorDataset, batch_size=64, shuffle=True), forward, cross_entropy, backward, SGD step, "
             "zero_grad. Logistic: Linear(784, 10), lr 0.5. CNN: three Conv2d(3, stride 2, padding 1) + ReLU, "
             "AdaptiveAvgPool2d(1), Flatten; lr 0.1, momentum 0.9. Peak memory: growth of the peak RSS over "
             "the training loop in a fresh process (data set excluded); GPU: torch's peak allocated CUDA memory "
             "(the RSS growth of a CUDA run is mostly the CUDA libraries that load at the first step).", ""]
    textbook = _textbook(results) or {}
    textbook_runs = {run["workload"]: run for run in textbook.get("pipelines", {}).get("runs", [])}
    textbook_memory = {row["workload"]: row for row in textbook.get("memory", [])}

    def row(workload: str, label: str, result: dict[str, Any], torch_cpu: dict[str, Any] | None,
            mem: dict[str, Any]) -> list[str]:
        ratio = result["epoch"]["median_s"] / torch_cpu["epoch"]["median_s"] if torch_cpu else None
        mem_text = f"{mem['rss_growth_mib']}" if "rss_growth_mib" in mem else mem.get("error", "-")
        if "gpu_peak_growth_mib" in mem:
            mem_text += f" (GPU {mem['gpu_peak_growth_mib']})"
        return [workload, label, fmt_time(result["epoch"]), f"{result['steps_per_s']:,.0f}",
                f"{result['samples_per_s']:,.0f}", mem_text, f"{ratio:.2f}" if ratio is not None else "n/a"]

    rows = []
    for run in runs:
        for name in frameworks:
            if name in run["results"]:
                rows.append(row(run["workload"], LABELS.get(name, name), run["results"][name],
                                run["results"].get(TORCH_CPU), memory.get((run["workload"], name), {})))
        textbook_run = textbook_runs.get(run["workload"], {}).get("results", {})
        if TINYNN in textbook_run:  # its ratio over the torch CPU epochs of its own pass
            rows.append(row(run["workload"], TEXTBOOK_LABEL, textbook_run[TINYNN], textbook_run.get(TORCH_CPU),
                            textbook_memory.get(run["workload"], {})))
    if rows:
        lines += _table(["workload", "framework", f"epoch ({runs[0]['samples']} samples)", "steps/s", "samples/s",
                         "peak RSS growth (MiB)", "time / torch CPU"], rows)
    traced = [row for row in results.get("memory", []) if "tracemalloc_peak_mib" in row]
    if traced:
        lines += ["", "tinynn's NumPy allocations at their peak during a step (tracemalloc): " + ", ".join(
            f"{row['workload']} {row['tracemalloc_peak_mib']} MiB" for row in traced) + "."]
    return [*lines, ""]


def _ops_section(results: dict[str, Any], frameworks: list[str]) -> list[str]:
    ops = results.get("ops", [])
    if not ops:
        return []
    textbook = _textbook(results)
    textbook_ops = {op["name"]: op for op in (textbook or {}).get("ops", [])}
    header = ["layer", "input", "pass", *(LABELS[name] for name in frameworks), "tinynn / torch CPU"]
    if textbook is not None:
        header += [TEXTBOOK_LABEL, "textbook / torch CPU"]
    rows = []
    for op in ops:
        for direction in ("forward", "backward"):
            timing = op.get(direction, {})
            if "error" in timing:
                cells = [f"error: {timing['error']}", *([""] * (len(frameworks) - 1)), ""]
            else:
                cells = [fmt_time(timing["results"][name]) if name in timing["results"] else "-"
                         for name in frameworks] + [fmt_ratio(timing.get("ratio"))]
            if textbook is not None:
                textbook_timing = textbook_ops.get(op["name"], {}).get(direction, {})
                tinynn_textbook = textbook_timing.get("results", {}).get(TINYNN)
                cells += [fmt_time(tinynn_textbook) if tinynn_textbook else textbook_timing.get("error", "-"),
                          fmt_ratio(textbook_timing.get("ratio"))]
            no_input_grad = direction == "backward" and not op["input_grad"]
            rows.append([op["layer"], op["input"], direction + (" (no input grad)" if no_input_grad else ""), *cells])
    note = (" The textbook columns: tinynn in textbook mode, timed in a second pass, its ratio over that pass's "
            "torch CPU time." if textbook is not None else "")
    return ["## Ops: each layer's forward and backward, per call", "",
            "Inputs float32, NCHW-contiguous for both frameworks. The backward is timed alone after an untimed "
            "forward, gradients cleared before it as in a training loop." + note, "", *_table(header, rows), ""]


def _scaling_section(results: dict[str, Any], frameworks: list[str]) -> list[str]:
    curves = results.get("scaling", [])
    if not curves:
        return []
    lines = ["## Scaling: time per sample", ""]
    for curve in curves:
        header = [curve["x_label"], *(f"{LABELS[name]} (µs/sample)" for name in frameworks), "tinynn / torch CPU"]
        rows = []
        for point in curve["points"]:
            per_sample = {name: point["results"][name]["per_sample_s"] for name in point["results"]}
            ratio = per_sample[TINYNN] / per_sample[TORCH_CPU] if TINYNN in per_sample and TORCH_CPU in per_sample \
                else None
            rows.append([str(point["x"]), *(f"{1e6 * per_sample[name]:,.1f}" if name in per_sample else "-"
                                            for name in frameworks), f"{ratio:.2f}" if ratio is not None else "n/a"])
        lines += [f"### {curve['name']}: {curve['workload']}", "", *_table(header, rows), ""]
    return lines


def _profile_section(results: dict[str, Any]) -> list[str]:
    profiles = results.get("profile", [])
    if not profiles:
        return []
    lines = ["## Where tinynn's time goes (cProfile)", "",
             "cProfile's own overhead inflates the many small calls, so read the shares, not the absolute times.",
             ""]
    for profile in profiles:
        lines += [f"### {profile['name']}: {profile['detail']}, {profile['total_s']:.2f} s profiled", "",
                  "tinynn's functions by cumulative time (a layer or stage with all it calls):", ""]
        lines += _table(["function", "calls", "cumulative", "share"],
                        [[f"`{row['function']}`", str(row["calls"]), f"{1e3 * row['cumulative_s']:.1f} ms",
                          f"{row['cumulative_percent']:.0f}%"] for row in profile["tinynn_by_cumulative_time"]
                         [:PROFILE_ROWS]])
        lines += ["", "Everything by own time (where the CPU actually is):", ""]
        lines += _table(["function", "calls", "own time", "share"],
                        [[f"`{row['function']}`", str(row["calls"]), f"{1e3 * row['own_s']:.1f} ms",
                          f"{row['own_percent']:.0f}%"] for row in profile["by_own_time"][:PROFILE_ROWS]])
        lines.append("")
    return lines


def markdown(results: dict[str, Any]) -> str:
    frameworks = list(results["frameworks"])
    preset = results["preset"]
    commit = results["environment"].get("git_commit") or "unknown (no git checkout)"
    lines = [
        f"# tinynn benchmarks on `{results['machine']}`", "",
        f"{preset['name'].capitalize()} run of {results['created']} (`{results['command']}`), tinynn at git "
        f"{commit}. Times: median over repetitions (ops {preset['op_reps']}, "
        f"pipelines {preset['pipeline_reps']}, scaling {preset['scaling_reps']}), after warm-up, the frameworks "
        "interleaved in one process, with the interquartile range in brackets. Ratios are tinynn's median time "
        "over torch CPU's: below 1, tinynn is faster.", "",
    ]
    if results.get("notes"):
        lines += ["**Notes:** " + " ".join(results["notes"]), ""]
    lines += _machine_section(results) + _headline_section(results) + _pipeline_section(results, frameworks)
    lines += _ops_section(results, frameworks) + _scaling_section(results, frameworks) + _profile_section(results)
    plots = results.get("plots", {})
    if plots.get("files"):
        lines += ["## Plots", "", *(f"![{Path(name).stem}]({name})" for name in plots["files"]), ""]
    elif plots.get("skipped"):
        lines += ["## Plots", "", f"Skipped: {plots['skipped']}.", ""]
    textbook_errors = (_textbook(results) or {}).get("errors", {})
    errors = {**results.get("errors", {}), **{f"{name} (textbook)": error for name, error in textbook_errors.items()}}
    if errors:
        lines += ["## Errors", "", *(f"- {section}: {error}" for section, error in errors.items()), ""]
    return "\n".join(lines)


def write_plots(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """scaling.png and ratios.png, or the reason they were skipped (matplotlib is an optional extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullLocator
    except ImportError:
        return {"skipped": "matplotlib is not installed (it is the optional extra tinynn[plot])"}
    files = []
    curves = results.get("scaling", [])
    if curves:
        figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
        for axis, curve in zip(axes[0], curves):
            for name in results["frameworks"]:
                points = [(point["x"], 1e6 * point["results"][name]["per_sample_s"])
                          for point in curve["points"] if name in point["results"]]
                if points:
                    axis.plot(*zip(*points), marker="o", label=LABELS[name])
            xs = [point["x"] for point in curve["points"]]
            axis.set(xscale="log", yscale="log", xlabel=curve["x_label"], ylabel="µs per sample",
                     title=f"{curve['name']}\n{curve['workload']}")
            axis.set_xticks(xs, [str(x) for x in xs])
            axis.xaxis.set_minor_locator(NullLocator())
            axis.title.set_fontsize(9)
            axis.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize=8)
        figure.suptitle(f"tinynn vs torch, time per sample ({results['machine']})")
        figure.tight_layout()
        figure.savefig(out / "scaling.png", dpi=110)
        plt.close(figure)
        files.append("scaling.png")
    bars = [(row["name"], row["ratio"]) for row in results.get("headline", []) if row["ratio"] is not None]
    for op in results.get("ops", []):
        for direction in ("forward", "backward"):
            ratio = op.get(direction, {}).get("ratio")
            if ratio is not None:
                bars.append((f"{op['layer']} {op['input']} {direction}", ratio))
    if bars:
        figure, axis = plt.subplots(figsize=(9, 0.28 * len(bars) + 1.2))
        labels, ratios = zip(*reversed(bars))
        axis.barh(labels, ratios, color=["tab:green" if r <= 1 else "tab:red" for r in ratios])
        axis.axvline(1.0, color="black", linewidth=1)
        axis.set(xscale="log", xlabel="tinynn time / torch CPU time (log scale; < 1: tinynn faster)",
                 title=f"tinynn relative to torch CPU ({results['machine']})")
        axis.tick_params(axis="y", labelsize=7)
        figure.tight_layout()
        figure.savefig(out / "ratios.png", dpi=110)
        plt.close(figure)
        files.append("ratios.png")
    return {"files": files}
