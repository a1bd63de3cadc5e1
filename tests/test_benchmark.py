"""``mobilekit benchmark``: correct statistics, providers reported, complete JSON; never a speed assertion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilekit.benchmarks import backends as backends_module
from mobilekit.benchmarks.cases import Case, plan_cases
from mobilekit.benchmarks.measure import measure_case, measure_isolated
from mobilekit.benchmarks.report import plot_report, read_json, write_json
from mobilekit.benchmarks.suite import SCHEMA, add_compute, model_macs, run_suite
from mobilekit.timing import LatencyStats, TimingConfig, measure
from mobilekit.cli import main
from mobilekit.cli.benchmark import parse_sizes
from mobilekit.converters.runtimes import BackendUnavailable, OnnxRuntime, TFLiteRuntime, undelegated_ops
from mobilekit.errors import MobilekitError
from mobilekit.image_io import read_image
from mobilekit.paths import PROJECT_ROOT

MODEL = "retinaface_mnet025"
TINY = TimingConfig(warmup=1, runs=3, min_seconds=0.0)
SCORE = 0.5  # the end-to-end decode keeps faces at this score
STATS_KEYS = {"runs", "median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "fps", "cpu_median_ms"}
ROW_KEYS = {"model", "backend", "variant", "label", "path", "imgsz", "threads", "device", "provider", "precision", "status", "reason",
            "file_bytes", "provider_used", "layout", "input_dtype", "model_only", "end_to_end", "detections", "macs", "achieved_gflops"}


@pytest.fixture(scope="session")
def photo(shared_images) -> Path:
    return shared_images[0]


def check_stats(stats: dict, runs: int) -> None:
    assert set(stats) == STATS_KEYS
    assert stats["runs"] >= runs
    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert stats["min_ms"] <= stats["mean_ms"] <= stats["max_ms"] and stats["std_ms"] >= 0
    assert stats["fps"] == pytest.approx(1000.0 / stats["mean_ms"])
    assert stats["cpu_median_ms"] >= 0


def test_latency_stats_from_known_samples():
    stats = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0, 10.0])
    assert stats.median_ms == 3.0 and stats.mean_ms == 4.0 and stats.min_ms == 1.0 and stats.max_ms == 10.0
    assert stats.p90_ms == pytest.approx(np.percentile([1, 2, 3, 4, 10], 90))
    assert stats.std_ms == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1))
    assert stats.fps == pytest.approx(250.0) and stats.cpu_median_ms is None
    assert LatencyStats.from_samples([1.0, 2.0], cpu_samples_ms=[0.5, 1.5, 2.5]).cpu_median_ms == 1.5
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])


def test_measure_runs_warmup_then_at_least_n_timed_calls():
    calls, synced = [], []
    stats = measure(lambda: calls.append(1), TimingConfig(warmup=2, runs=5, min_seconds=0.0), sync=lambda: synced.append(1))
    assert stats.runs == 5 and len(calls) == 7
    assert len(synced) == 6  # once after warm-up, once per timed call
    with pytest.raises(ValueError):
        TimingConfig(runs=0)


def test_parse_sizes():
    assert parse_sizes("320,640") == [(320, 320), (640, 640)]
    assert parse_sizes("480x640,480x640") == [(480, 640)]
    assert parse_sizes(None) == []
    with pytest.raises(MobilekitError):
        parse_sizes("big")


@pytest.mark.slow
def test_plan_from_export_folder_and_model_name(tiny_export, tmp_path):
    cases = plan_cases([str(tiny_export)], [], [1, 2], backends=("torch", "onnxruntime", "tflite"))
    labels = {(c.label, c.threads) for c in cases}
    assert labels == {(label, t) for label in ("torch", "onnxruntime:onnx", "tflite:fp32") for t in (1, 2)}
    assert all(c.imgsz == (64, 64) for c in cases)
    torch_case = next(c for c in cases if c.backend == "torch")
    assert torch_case.path is None and torch_case.random_seed == 0  # the sidecar says: random init, seed 0
    # A size the exports were not made at selects no export file.
    assert {c.backend for c in plan_cases([str(tiny_export)], [(96, 96)], [1], backends=("torch", "onnxruntime"))} == {"torch"}
    by_name = plan_cases([MODEL], [(96, 96)], [1], backends=("torch", "onnxruntime"), onnx_dir=tmp_path)
    assert [c.label for c in by_name] == ["torch", "onnxruntime:onnx"]
    assert Path(by_name[1].path).is_file()
    with pytest.raises(MobilekitError, match="neither"):
        plan_cases(["no_such_model"], [], [1])


@pytest.mark.slow
def test_suite_rows_are_consistent_and_json_complete(tiny_export, photo, tmp_path):
    cases = plan_cases([str(tiny_export)], [], [1], backends=("torch", "onnxruntime", "tflite"))
    report = run_suite(cases, TINY, photo, SCORE, isolate=False, probe_peak=False)
    assert report["schema"] == SCHEMA
    assert {"cpu_model", "usable_cores", "versions", "load_average_1_5_15"} <= set(report["machine"])
    assert {"torch", "onnxruntime", "ai-edge-litert"} <= set(report["machine"]["versions"])
    macs = model_macs(MODEL, (64, 64))
    assert macs > 0
    for row in report["rows"]:
        assert row["status"] == "ok", row
        assert ROW_KEYS <= set(row)
        check_stats(row["model_only"], TINY.runs)
        check_stats(row["end_to_end"], TINY.runs)
        assert row["macs"] == macs
        assert row["achieved_gflops"] == pytest.approx(2 * macs / (row["model_only"]["median_ms"] / 1e3) / 1e9, rel=1e-3)
        assert row["detections"] >= 0
    providers = {row["backend"]: row["provider_used"] for row in report["rows"]}
    assert providers["onnxruntime"] == "CPUExecutionProvider"
    assert providers["tflite"].startswith("XNNPACK")
    assert providers["torch"] == "cpu"
    layouts = {row["backend"]: row["layout"] for row in report["rows"]}
    assert layouts == {"torch": "NCHW", "onnxruntime": "NCHW", "tflite": "NHWC"}
    assert all(row["file_bytes"] > 0 for row in report["rows"] if row["backend"] != "torch")

    json_path = write_json(report, tmp_path / "report.json")
    assert read_json(json_path) == json.loads(json.dumps(report))
    png = plot_report(report, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_isolated_case_reports_memory(tiny_export, photo):
    case = next(c for c in plan_cases([str(tiny_export)], [], [1], backends=("onnxruntime",)))
    row = measure_isolated(case, TINY, photo, SCORE)
    assert row["status"] == "ok", row
    check_stats(row["model_only"], TINY.runs)
    memory = row["memory"]
    assert memory["peak_rss_mb"] > 0 and 0 <= memory["delta_rss_mb"] <= memory["peak_rss_mb"]
    assert "VmHWM" in memory["method"]


def test_add_compute_fraction_of_peak():
    row = {"status": "ok", "model_only": {"median_ms": 10.0}}
    add_compute(row, 5 * 10**8, {"numpy_gflops": 200.0, "torch_gflops": 100.0})
    assert row["achieved_gflops"] == pytest.approx(100.0)
    assert row["peak_gflops"] == 200.0 and row["fraction_of_peak"] == pytest.approx(0.5)
    unavailable = add_compute({"status": "unavailable"}, 7, None)
    assert unavailable["macs"] == 7 and "achieved_gflops" not in unavailable


@pytest.mark.slow
def test_tflite_delegation_is_described(tiny_export):
    runtime = TFLiteRuntime(next(tiny_export.glob("*_fp32.tflite")), 1)
    outside, total, partitions = undelegated_ops(runtime.interpreter)
    assert partitions >= 1 and total > 0 and sum(outside.values()) < total
    builtin = TFLiteRuntime(next(tiny_export.glob("*_fp32.tflite")), 1, xnnpack=False)
    assert builtin.provider.startswith("builtin")
    image = np.zeros((64, 64, 3), np.uint8)
    a, b = runtime.run(image), builtin.run(image)
    assert set(a) == {"loc", "conf", "landmarks"}
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-3)


@pytest.mark.slow
def test_onnxruntime_fallback_is_reported(tiny_export, monkeypatch):
    onnx_path = next(tiny_export.glob("*_64.onnx"))
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider: nothing falls back")
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
        OnnxRuntime(onnx_path, 1, provider="cuda")
    # A provider that is listed but cannot start: the session runs on CPU, and the row must say so.
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    try:
        runtime = OnnxRuntime(onnx_path, 1, provider="cuda")
    except Exception as exc:  # some onnxruntime builds refuse an unknown provider outright
        pytest.skip(f"onnxruntime refuses the missing provider instead of falling back: {exc}")
    assert runtime.provider == "CPUExecutionProvider (FELL BACK from CUDAExecutionProvider)"


def test_torch_compile_failure_becomes_unavailable_row(photo, monkeypatch):
    def broken_compile(module, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler\nmore detail")

        return call

    monkeypatch.setattr(backends_module.torch, "compile", broken_compile)
    case = Case(MODEL, "torch_compile", "pytorch", None, (64, 64), 1, random_seed=0)
    row = measure_case(case, TINY, read_image(photo), SCORE)
    assert row["status"] == "unavailable"
    assert row["reason"] == "torch.compile failed: RuntimeError: no C++ compiler"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_request_without_cuda_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", MODEL, "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device cuda was requested" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_writes_json_and_plot(tiny_export, photo, tmp_path):
    out = tmp_path / "cli.json"
    main(["benchmark", str(tiny_export), "--threads", "1", "--runs", "3", "--warmup", "1", "--min-seconds", "0", "--backends", "onnxruntime,tflite",
          "--in-process", "--no-peak", "--image", str(photo), "--json", str(out)])
    report = read_json(out)
    assert [row["label"] for row in report["rows"]] == ["onnxruntime:onnx", "tflite:fp32"]
    assert out.with_suffix(".png").is_file()
    with pytest.raises(SystemExit):
        main(["benchmark", str(tiny_export), "--backends", "tensorflow_js"])


def test_markdown_tables_align_labels_left_and_numbers_right():
    from mobilekit.benchmarks.markdown import table

    assert table(["model", "ms"], [["a", "1.5"], ["b", 2]]) == ["| model | ms |", "|---|---:|", "| a | 1.5 |", "| b | 2 |"]
    assert table(["x", "status"], [], "ll")[1] == "|---|---|"
    with pytest.raises(ValueError, match="2 cells for the 3 columns"):
        table(["a", "b", "c"], [[1, 2]])
    with pytest.raises(ValueError, match="does not fit"):
        table(["a", "b"], [], "lrr")


@pytest.mark.parametrize(
    "module, argv, message",
    [
        ("op_profile", ["/no/such/model.tflite", "--out", "OUT"], "argument tflite: no such file: /no/such/model.tflite"),
        ("op_profile", ["NOTES", "--out", "OUT"], "notes.txt is not a .tflite file"),
        ("op_profile", ["MODEL", "--threads", "1,0", "--out", "OUT"], "argument --threads: must be >= 1, got 0"),
        ("int8_policies", ["--export", "none", "--weights", "W", "--images", "IMAGES", "--out", "OUT"], "argument --export: expected NAME=PATH"),
        ("int8_policies", ["--export", "none=EMPTY", "--weights", "W", "--images", "IMAGES", "--out", "OUT"], "no *_fp32.tflite in"),
        ("int8_policies", ["--export", "none=EMPTY", "--weights", "W", "--images", "/no/such/folder", "--out", "OUT"], "argument --images: no such folder"),
        ("int8_calibration", ["retinaface_mnet025", "--weights", "W", "--images", "IMAGES", "--calib-ranges", "mean,median", "--out", "OUT"], "unknown estimator(s) ['median']"),
        ("int8_calibration", ["retinaface_mnet025", "--weights", "W", "--images", "IMAGES", "--keep-float", "auto", "--out", "OUT"], "'auto' chooses layers itself"),
        ("int8_calibration", ["retinaface_mnet025", "--weights", "W", "--images", "EMPTY", "--out", "OUT"], "needs at least 2 photos, found 0"),
        ("arm_ops", ["NOTES", "--image", "NOTES", "--out", "OUT"], "notes.txt is not a .tflite file"),
        ("arm_ops", ["MODEL", "--image", "NOTES", "--out", "OUT"], "no sidecar m.json beside it"),
    ],
)
@pytest.mark.slow
def test_profile_scripts_reject_bad_input_in_one_line(module, argv, message, tmp_path):
    model, empty = tmp_path / "m.tflite", tmp_path / "empty"
    model.write_bytes(b"")
    empty.mkdir()
    (tmp_path / "w.pth").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a model")
    names = {"OUT": str(tmp_path / "out"), "MODEL": str(model), "NOTES": str(tmp_path / "notes.txt"), "EMPTY": str(empty), "W": str(tmp_path / "w.pth"), "IMAGES": str(tmp_path)}
    argv = [names.get(a, a.replace("=EMPTY", f"={empty}")) for a in argv]
    proc = subprocess.run([sys.executable, "-m", f"studies.{module}", *argv], capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
