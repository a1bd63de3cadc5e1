"""The device check (``benchmarks/gpu_check.sh``): its CPU dry run fills every section with real numbers on
a machine without TensorFlow, onnx2tf or onnx; a failing section is recorded and makes the exit status 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mobilekit.benchmarks import gpu_check, gpu_sections
from mobilekit.converters.runtimes import BackendUnavailable
from mobilekit.paths import PROJECT_ROOT

SECTIONS = ("environment", "training", "synthetic_data", "ddp", "train_eval", "inference", "data_pipeline")
MODELS = ("featherface_v2", "retinaface_mnet025")


def block_packages(folder: Path, names: tuple[str, ...]) -> Path:
    """A folder that, first on PYTHONPATH, makes ``import NAME`` fail as on the device machine."""
    for name in names:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed on the device machine')\n")
    return folder


@pytest.mark.slow
def test_dry_run_fills_every_section_without_tensorflow_or_onnx(tmp_path) -> None:
    onnx_dir = tmp_path / "onnx"
    base = [sys.executable, "-m", "mobilekit.benchmarks.gpu_check", "--dry-run", "--models", ",".join(MODELS)]
    subprocess.run(base + ["--export-onnx", str(onnx_dir)], check=True, capture_output=True, timeout=300)
    blocked = block_packages(tmp_path / "blocked", ("tensorflow", "onnx2tf", "onnx"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(base + ["--out", str(tmp_path / "out"), "--onnx-dir", str(onnx_dir)], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert tuple(report["sections"]) == SECTIONS and report["failed_sections"] == [] and not report["tensorflow_imported"]
    assert all(s["status"] == "ok" for s in report["sections"].values())

    training = report["sections"]["training"]["rows"]
    assert {(r["model"], r["batch_option"], r["mode"]) for r in training} == {(m, b, c) for m in MODELS for b in ("2", "auto") for c in ("eager", "compile")}
    for row in training:
        if row["mode"] == "eager":
            assert row["status"] == "ok" and row["images_per_s"] > 0 and row["steps_per_s"] > 0 and row["loss"] > 0
            assert row["batch"] == (2 if row["batch_option"] == "2" else 16)  # CPU: --batch auto is 16
        else:
            assert row["status"] == "skipped" and "torch.compile" in row["reason"]

    ddp = report["sections"]["ddp"]
    assert ddp["backend"] == "gloo" and ddp["world_size"] == 1 and len(ddp["plain_losses"]) == 3
    assert ddp["plain_losses"] == pytest.approx(ddp["ddp_losses"], rel=1e-5)

    train_eval = report["sections"]["train_eval"]
    assert [int(e["epoch"]) for e in train_eval["epochs"]] == [1, 2] and 0 <= train_eval["eval"]["metrics"]["ap50"] <= 1

    inference = report["sections"]["inference"]["rows"]
    for model in MODELS:
        fp32 = [r for r in inference if r["model"] == model and r["backend"] == "torch" and r["precision"] == "fp32"]
        assert [r["batch"] for r in fp32] == [1, 2] and all(r["latency_ms"]["median_ms"] > 0 for r in fp32)
        onnx_file = next(r for r in inference if r["model"] == model and r["backend"] == "onnx_file")
        assert onnx_file["source"] == "--onnx-dir"
        ort = next(r for r in inference if r["model"] == model and r["backend"] == "onnxruntime_cpu")
        assert ort["provider_used"] == "CPUExecutionProvider" and ort["latency_ms"]["median_ms"] > 0
    assert all(r["status"] == "unavailable" for r in inference if r.get("precision") == "fp16")

    loaders = report["sections"]["data_pipeline"]["rows"]
    assert {(r["mode"], r["workers"]) for r in loaders} == {(m, w) for m in ("crop_stretch", "letterbox") for w in (0, 1)}
    assert all(r["images_per_s"] > 0 for r in loaders)
    assert {v["model"] for v in report["verdict"]} == set(MODELS)
    summary = (tmp_path / "out" / "gpu_check.md").read_text()
    for heading in ("Training throughput", "DDP", "mobilekit eval", "Inference latency", "Data pipeline alone", "Which side limits training"):
        assert heading in summary


def test_a_failing_section_is_recorded_and_the_exit_status_is_1(tmp_path, monkeypatch) -> None:
    def boom(plan):
        raise RuntimeError("boom in training")

    monkeypatch.setattr(gpu_sections, "training", boom)
    monkeypatch.setattr(gpu_sections, "ddp", lambda plan, data: {"status": "ok"})
    monkeypatch.setattr(gpu_sections, "train_eval", lambda plan, data, out, workers: {"status": "ok"})
    monkeypatch.setattr(gpu_sections, "inference", lambda plan, onnx_dir: {"status": "ok", "rows": [gpu_sections.guarded(lambda: 1 / 0, model="m", backend="torch")]})
    for name in ("tensorflow", "onnx2tf"):  # imported by other tests of this process; the dry run itself must not
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert gpu_check.main(["--out", str(tmp_path), "--dry-run", "--models", "featherface_v2"]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["sections"]["training"]["status"] == "error" and "boom in training" in report["sections"]["training"]["reason"]
    assert "RuntimeError" in report["sections"]["training"]["traceback"]
    assert report["sections"]["data_pipeline"]["status"] == "ok"  # later sections still ran
    assert report["failed_sections"] == ["training"]  # rows are kept as they are: the inference stub said ok
    assert report["sections"]["inference"]["rows"][0]["status"] == "error" and "ZeroDivisionError" in report["sections"]["inference"]["rows"][0]["reason"]
    assert "boom in training" in (tmp_path / "gpu_check.md").read_text()


def test_rows_tell_unavailable_from_failed() -> None:
    def unavailable() -> dict:
        raise BackendUnavailable("TensorrtExecutionProvider is not in onnxruntime.get_available_providers()")

    rows = [gpu_sections.guarded(lambda: {"x": 1}, k=1), gpu_sections.guarded(unavailable, k=2)]
    assert [r["status"] for r in rows] == ["ok", "unavailable"] and rows[0]["x"] == 1
    assert gpu_sections.section_status(rows) == "ok"
    rows.append(gpu_sections.guarded(lambda: {}["missing"], k=3))
    assert rows[2]["status"] == "error" and "KeyError" in rows[2]["reason"] and gpu_sections.section_status(rows) == "error"


def test_bad_options_exit_with_status_2(tmp_path, capsys) -> None:
    assert gpu_check.main(["--out", str(tmp_path), "--dry-run", "--models", "no_such_model"]) == 2
    assert "--models" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert gpu_check.main(["--out", str(blocker), "--dry-run"]) == 2
    assert gpu_check.main(["--dry-run"]) == 2
    assert "--out" in capsys.readouterr().err
    assert not (tmp_path / "gpu_check.json").exists()


def python_without_bdist_wheel(folder: Path) -> Path:
    """A venv of the base interpreter with its bundled setuptools, seeing this environment's packages (torch,
    onnx, ...) through a .pth file, less those that would let setuptools build a wheel or import mobilekit."""
    subprocess.run([sys._base_executable, "-m", "venv", str(folder)], check=True, capture_output=True, timeout=300)
    python = folder / "bin" / "python"
    own_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip()
    this_site = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p, "torch").is_dir())
    view = folder / "outer_site"
    view.mkdir()
    hidden = ("wheel", "setuptools", "_distutils_hack", "distutils-precedence", "pip", "mobilekit", "__editable__")
    for entry in this_site.iterdir():
        if not entry.name.startswith(hidden):
            (view / entry.name).symlink_to(entry)
    (Path(own_site) / "outer_site.pth").write_text(f"{view}\n")
    return python


@pytest.mark.slow
def test_gpu_check_sh_runs_where_setuptools_cannot_build_a_wheel(tmp_path) -> None:
    python = python_without_bdist_wheel(tmp_path / "venv")
    probe = "import importlib.util as u, torch; print(u.find_spec('wheel') is None, u.find_spec('setuptools.command.bdist_wheel') is None, u.find_spec('mobilekit') is None)"
    assert subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split() == ["True"] * 3
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": ""}
    onnx_dir = tmp_path / "onnx"
    proc = subprocess.run(
        ["bash", str(PROJECT_ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out"), "--dry-run", "--models", "retinaface_mnet025", "--export-onnx", str(onnx_dir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in onnx_dir.iterdir()] == [gpu_sections.onnx_name("retinaface_mnet025", 64)]  # the dry run is at 64 px
