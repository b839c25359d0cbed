"""Smoke tests of the benchmark harness: it runs on tiny sizes and writes well-formed results.

No timing is asserted (the figures of a shared CI machine mean nothing); what is checked is that
every section runs, that the files are complete and consistent, and that the GPU machine's cases
(no matplotlib, TF32 switches) are handled.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tinynn
from benchmarks import cli, report
from benchmarks.timing import TINYNN, TORCH_CPU, TORCH_CUDA_TF32, Framework, Runner, Stats, measure
from benchmarks.workloads import mnist_or_synthetic
from tests.conftest import data_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str, Path]:
    out = tmp_path_factory.mktemp("bench")
    # Memory runs in subprocesses (slow to start); test_memory_subprocess covers it once.
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TINYNN_DATA", raising=False)  # synthetic data: no 10 MB gunzip in the smoke run
        code = cli.main(["--smoke", "--no-cuda", "--adaptive-malloc", "--out", str(out),
                         "--threads", str(torch.get_num_threads()),
                         "--sections", "ops,pipelines,scaling,profile", "--machine", "test-box",
                         "--note", "smoke test"])
    results = json.loads((out / "results.json").read_text())
    return code, results, (out / "results.md").read_text(), out


def _check_stats(stats: dict) -> None:
    assert stats["reps"] >= 2 and stats["calls_per_rep"] >= 1
    assert len(stats["samples_s"]) == stats["reps"]
    assert 0 < stats["min_s"] <= stats["q1_s"] <= stats["median_s"] <= stats["q3_s"] <= stats["max_s"]


def test_smoke_run_succeeds_without_errors(smoke_run):
    code, results, _, _ = smoke_run
    assert results["errors"] == {}
    assert code == 0


def test_results_json_records_machine_and_versions(smoke_run):
    _, results, _, _ = smoke_run
    assert results["machine"] == "test-box"
    assert results["preset"]["name"] == "smoke"
    assert results["frameworks"] == {TINYNN: "tinynn (NumPy)", TORCH_CPU: "torch CPU"}
    env = results["environment"]
    assert env["torch"]["version"] == torch.__version__
    assert env["usable_cores"] >= 1 and env["cpu_model"]
    assert {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"} <= set(env["env"])
    assert results["torch_threads_set"] == torch.get_num_threads()


def test_every_op_has_forward_and_backward_timed_for_both_frameworks(smoke_run):
    _, results, _, _ = smoke_run
    assert {op["op"] for op in results["ops"]} == {
        "linear", "conv2d", "avg_pool2d", "max_pool2d", "adaptive_avg_pool2d", "cross_entropy"}
    for op in results["ops"]:
        for direction in ("forward", "backward"):
            timing = op[direction]
            assert set(timing["results"]) == {TINYNN, TORCH_CPU}, (op["name"], direction)
            for stats in timing["results"].values():
                _check_stats(stats)
            expected = timing["results"][TINYNN]["median_s"] / timing["results"][TORCH_CPU]["median_s"]
            assert timing["ratio"] == pytest.approx(expected)


def test_pipelines_report_epoch_rates(smoke_run):
    _, results, _, _ = smoke_run
    runs = {run["workload"]: run for run in results["pipelines"]["runs"]}
    assert set(runs) == {"logistic", "cnn"}
    assert runs["cnn"]["momentum"] == 0.9 and runs["logistic"]["lr"] == 0.5
    for run in runs.values():
        assert run["steps"] == -(-run["samples"] // 64)
        for result in run["results"].values():
            _check_stats(result["epoch"])
            assert result["steps_per_s"] == pytest.approx(run["steps"] / result["epoch"]["median_s"])


def test_scaling_curves_cover_every_point(smoke_run):
    _, results, _, _ = smoke_run
    preset = cli.PRESETS["smoke"]
    curves = {curve["name"]: curve for curve in results["scaling"]}
    expected = {"batch size": preset.batch_sizes, "image size": preset.image_sizes, "channels": preset.channels}
    assert {name: tuple(point["x"] for point in curve["points"]) for name, curve in curves.items()} == expected
    for curve in curves.values():
        for point in curve["points"]:
            for result in point["results"].values():
                assert result["per_sample_s"] == pytest.approx(result["median_s"] / point["samples"])


def test_headline_has_the_three_targets(smoke_run):
    _, results, _, _ = smoke_run
    rows = {row["name"]: row for row in results["headline"]}
    assert {name: row["target"] for name, row in rows.items()} == cli.TARGETS
    for row in rows.values():
        assert row["ratio"] > 0 and row["met"] == (row["ratio"] <= row["target"])


def test_profile_names_tinynn_functions_for_each_target(smoke_run):
    _, results, _, _ = smoke_run
    assert [profile["target"] for profile in results["profile"]] == list(cli.TARGETS)
    for profile in results["profile"]:
        functions = [row["function"] for row in profile["tinynn_by_cumulative_time"]]
        assert functions and all(name.startswith("tinynn/") for name in functions)
        assert profile["by_own_time"][0]["own_s"] >= profile["by_own_time"][-1]["own_s"]


def test_results_md_has_every_section_and_note(smoke_run):
    _, results, markdown, out = smoke_run
    for heading in ("# tinynn benchmarks on `test-box`", "## Machine", "## Headline", "## Pipelines", "## Ops",
                    "## Scaling", "## Where tinynn's time goes", "## Plots"):
        assert heading in markdown
    assert "smoke test" in markdown
    assert "OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE" in markdown
    for op in results["ops"]:
        for direction in ("forward", "backward"):
            assert f"| {op['layer']} | {op['input']} | {direction}" in markdown
    for name in results["plots"].get("files", []):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in markdown


def test_a_missed_target_is_explained_by_its_profile(smoke_run):
    _, results, _, _ = smoke_run
    missed = [{**row, "ratio": 9.9, "met": False} for row in results["headline"]]
    markdown = report.markdown({**results, "headline": missed})
    for row in missed:
        line = next(line for line in markdown.splitlines() if line.startswith(f"- {row['name']} at 9.90"))
        assert "tinynn's own time is mostly in `" in line
    conv_line = next(line for line in markdown.splitlines() if line.startswith("- wide conv"))
    assert "forward" in conv_line and "backward" in conv_line


def test_plots_are_skipped_cleanly_without_matplotlib(smoke_run, tmp_path, monkeypatch):
    _, results, _, _ = smoke_run
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    plots = report.write_plots(results, tmp_path)
    assert "matplotlib" in plots["skipped"] and list(tmp_path.iterdir()) == []
    assert "Skipped: matplotlib" in report.markdown({**results, "plots": plots})


def test_pipeline_data_is_real_mnist_when_tinynn_data_points_at_it(monkeypatch):
    root = data_dir()
    if root is None or not (root / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("MNIST files not present (CI has them in ../shared/data)")
    monkeypatch.setenv("TINYNN_DATA", str(root))
    images, labels, source = mnist_or_synthetic(100)
    assert images.shape == (100, 784) and images.dtype == np.float32 and labels.dtype == np.int64
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.9
    assert labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # MNIST's first training labels
    assert "MNIST" in source


def test_pipeline_data_is_synthetic_without_tinynn_data(monkeypatch):
    monkeypatch.delenv("TINYNN_DATA", raising=False)
    images, labels, source = mnist_or_synthetic(100)
    assert images.shape == (100, 784) and images.dtype == np.float32 and set(labels.tolist()) <= set(range(10))
    assert source.startswith("synthetic")


def test_memory_subprocess_prints_one_json_line():
    command = [sys.executable, "-m", "benchmarks.memory", "--workload", "logistic", "--framework", TINYNN,
               "--steps", "3", "--threads", "1"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["steps"] == 3 and result["framework"] == TINYNN
    assert result["rss_peak_mib"] >= result["rss_before_mib"] - 1 and result["tracemalloc_peak_mib"] > 0


def test_cuda_framework_sets_and_restores_both_tf32_switches():
    flags = torch.backends.cuda.matmul, torch.backends.cudnn
    before = [flag.allow_tf32 for flag in flags]
    with Framework(TORCH_CUDA_TF32, "cuda", tf32=True).active():
        assert [flag.allow_tf32 for flag in flags] == [True, True]
        with Framework("torch_cuda", "cuda", tf32=False).active():
            assert [flag.allow_tf32 for flag in flags] == [False, False]
        assert [flag.allow_tf32 for flag in flags] == [True, True]
    assert [flag.allow_tf32 for flag in flags] == before


def test_stats_median_and_quartiles():
    stats = Stats.from_samples([5.0, 1.0, 3.0, 2.0, 4.0], calls_per_rep=1)
    assert (stats.median, stats.q1, stats.q3, stats.min, stats.max) == (3.0, 2.0, 4.0, 1.0, 5.0)


def test_measure_warms_up_then_interleaves_rotating_the_order():
    order = []
    runners = [Runner(Framework(name, None if name == TINYNN else "cpu"), lambda name=name: order.append(name),
                      prepare=lambda: sum(range(10_000))) for name in (TINYNN, TORCH_CPU)]
    stats = measure(runners, reps=3, warmup=1)
    assert order == [TINYNN, TORCH_CPU, TINYNN, TORCH_CPU, TORCH_CPU, TINYNN, TINYNN, TORCH_CPU]
    assert all(stat.reps == 3 for stat in stats.values())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_steady_malloc_fixes_glibc_thresholds_so_freed_blocks_are_reused_without_page_faults():
    # In child processes (the setting cannot be undone): a 16 MiB block freed and allocated again.
    # As glibc comes, a block that size is mapped afresh each time, and faults its pages in again;
    # with the thresholds fixed it comes back from the heap, already mapped.
    script = (
        "import json, resource, sys, numpy as np\n"
        "from benchmarks.environment import steady_malloc\n"
        "done = steady_malloc() if sys.argv[1] == 'steady' else None\n"
        "def faults():\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    block = np.empty(4 << 20, np.float32); block.fill(1); del block\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "print(json.dumps([done, faults(), faults()]))\n"
    )
    runs = {}
    for mode in ("default", "steady"):
        result = subprocess.run([sys.executable, "-c", script, mode], cwd=ROOT, capture_output=True, text=True,
                                check=True)
        runs[mode] = json.loads(result.stdout)
    done, first, second = runs["steady"]
    assert done == {"steady_malloc": True, "mmap_threshold": 32 << 20, "trim_threshold": 1 << 30}
    # 16 MiB of fresh pages: 4096 faults of 4 KiB, fewer where the kernel maps larger folios.
    assert first > 100 and runs["default"][1] > 100
    assert second < first / 10
    assert runs["default"][2] > runs["default"][1] / 2


@pytest.fixture(scope="module")
def textbook_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str]:
    out = tmp_path_factory.mktemp("bench-textbook")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TINYNN_DATA", raising=False)
        code = cli.main(["--smoke", "--no-cuda", "--adaptive-malloc", "--out", str(out), "--machine", "test-box",
                         "--sections", "pipelines", "--textbook"])
    return code, json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_textbook_pass_times_the_pipelines_again_beside_the_engine(textbook_run):
    code, results, markdown = textbook_run
    textbook = results["textbook"]
    assert code == 0 and textbook["errors"] == {}
    assert not tinynn.is_textbook()  # the pass leaves the process in the engine's mode
    assert [run["workload"] for run in textbook["pipelines"]["runs"]] == ["logistic", "cnn"]
    for run in textbook["pipelines"]["runs"]:
        assert set(run["results"]) == {TINYNN, TORCH_CPU}
    assert [row["name"] for row in textbook["headline"]] == [row["name"] for row in results["headline"]]
    assert all(row["ratio"] > 0 for row in textbook["headline"])
    assert "| tinynn / torch CPU | textbook / torch CPU | target |" in markdown
    for workload in ("logistic", "cnn"):
        assert f"| {workload} | {report.TEXTBOOK_LABEL} |" in markdown


def test_ops_table_has_textbook_columns_and_errors_name_the_textbook_pass(smoke_run):
    _, results, _, _ = smoke_run
    textbook = {"ops": results["ops"], "headline": results["headline"], "errors": {"memory": "Boom: no"}}
    markdown = report.markdown({**results, "textbook": textbook})
    assert f"| tinynn / torch CPU | {report.TEXTBOOK_LABEL} | textbook / torch CPU |" in markdown
    op = results["ops"][0]
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {op['layer']} | {op['input']} | forward"))
    assert row.count(report.fmt_ratio(op["forward"]["ratio"])) == 2  # the engine's ratio, and the same figures again
    assert "- memory (textbook): Boom: no" in markdown
    assert "textbook / torch CPU" not in report.markdown(results)
