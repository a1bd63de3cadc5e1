"""Every shipping command answers a truncated or corrupt file with one line naming it and exit status 2
(no traceback); benchmark exits 1 when a measurement fails, and writes its reports under the working
directory. The exports come from the session fixtures: nothing is converted here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mobilekit.cli import main
from mobilekit.converters.sidecars import sha256_file
from mobilekit.models import create_model

STEM = "retinaface_mnet025_64"


def run(argv: list[str], capsys) -> tuple[int, str]:
    """``mobilekit ARGV`` in this process: (exit status, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err


def assert_one_line(status: int, err: str, *names: str) -> None:
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for name in names:
        assert name in err, err


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damaged_copy(tiny_export: Path, folder: Path, name: str, keep_sidecars: bool = True) -> Path:
    """A copy of the tiny export (ONNX + TFLite fp32, sidecars unless not ``keep_sidecars``) with file ``name`` cut in half."""
    folder.mkdir()
    for path in tiny_export.iterdir():
        if keep_sidecars or path.suffix != ".json":
            shutil.copy(path, folder / path.name)
    truncate(folder / name)
    return folder


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    cv2.imwrite(str(path), np.full((96, 128, 3), 128, np.uint8))
    return path


@pytest.fixture(scope="module")
def truncated_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "retinaface.pth"
    torch.save(create_model("retinaface_mnet025").state_dict(), path)
    truncate(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", [f"{STEM}.onnx", f"{STEM}_fp32.tflite", f"{STEM}_fp32.json"])
def test_parity_and_benchmark_name_a_damaged_export_file(tiny_export, tmp_path, capsys, photo, name):
    folder = damaged_copy(tiny_export, tmp_path / "export", name)
    expected = "is not the file its sidecar" if name.endswith((".onnx", ".tflite")) else f"has an unreadable metadata sidecar {name}"
    assert_one_line(*run(["parity", str(folder), "--images", str(photo.parent)], capsys), name, expected)
    assert_one_line(*run(["benchmark", str(folder), "--image", str(photo), "--json", str(tmp_path / "b.json")], capsys), name, expected)
    assert not (tmp_path / "b.json").exists() and not (folder / "parity.json").exists()


@pytest.mark.parametrize(("name", "kind"), [(f"{STEM}.onnx", "ONNX"), (f"{STEM}_fp32.tflite", "TFLite")])
def test_benchmark_names_a_truncated_model_without_a_sidecar(tiny_export, tmp_path, capsys, photo, name, kind):
    folder = damaged_copy(tiny_export, tmp_path / "export", name, keep_sidecars=False)
    status, err = run(["benchmark", str(folder / name), "--image", str(photo), "--json", str(tmp_path / "b.json")], capsys)
    assert_one_line(status, err, str(folder / name), f"is not a readable {kind} model")


def test_package_names_a_truncated_tflite(tmp_path, capsys):
    """The sidecar recorded the whole file: its truncated copy is named before anything else is read."""
    folder = tmp_path / "export"
    folder.mkdir()
    model = folder / "m_64_fp32.tflite"
    model.write_bytes(b"TFL3" * 256)
    sidecar = {"schema": "mobilekit.export/1", "artefact": {"file": model.name, "format": "tflite", "variant": "fp32", "bytes": 1024, "sha256": sha256_file(model)}}
    (folder / "m_64_fp32.json").write_text(json.dumps(sidecar))
    truncate(model)
    status, err = run(["package", str(folder), "--out", str(tmp_path / "out")], capsys)
    assert_one_line(status, err, "m_64_fp32.tflite is not the file its sidecar m_64_fp32.json describes (512 bytes, 1024 exported")
    assert not (tmp_path / "out").exists()


def test_predict_export_and_parity_name_truncated_weights(tiny_export, truncated_weights, photo, tmp_path, capsys):
    name = str(truncated_weights)
    assert_one_line(*run(["predict", str(photo), "--weights", name], capsys), name, "corrupt, truncated")
    assert_one_line(*run(["export", "retinaface_mnet025", "--weights", name, "--onnx", "--out", str(tmp_path / "out")], capsys), name)
    assert_one_line(*run(["parity", str(tiny_export), "--images", str(photo.parent), "--weights", name], capsys), name)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_predict_names_truncated_google_weights(shared, tmp_path, photo, capsys):
    weights = tmp_path / "face_detection_short_range.tflite"
    shutil.copy(shared / "weights" / weights.name, weights)
    truncate(weights)
    assert_one_line(*run(["predict", str(photo), "--model", "blazeface_short", "--weights", str(weights)], capsys), str(weights))


def test_benchmark_writes_under_the_working_directory_and_exits_1_when_a_measurement_fails(tiny_export, photo, tmp_path, monkeypatch, capsys):
    from mobilekit.benchmarks import suite

    def failing(case, *args, **kwargs) -> dict:
        return {**case.to_dict(), "status": "error", "reason": "benchmark subprocess failed: Fatal Python error: Aborted", "file_bytes": None}

    monkeypatch.setattr(suite, "measure_isolated", failing)
    monkeypatch.chdir(tmp_path)
    status, err = run(["benchmark", str(tiny_export), "--backends", "onnxruntime", "--threads", "1", "--no-peak", "--image", str(photo)], capsys)
    assert status == 1 and err.strip().splitlines()[-1].startswith("error: 1 of 1 measurements failed, e.g. retinaface_mnet025 onnxruntime:onnx t1")
    (report,) = (tmp_path / "benchmarks" / "results").glob("benchmark_cpu_*.json")
    assert json.loads(report.read_text())["rows"][0]["status"] == "error"
