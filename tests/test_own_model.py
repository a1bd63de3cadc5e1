"""Your own model as ``PATH.py:FUNCTION``: the worked example trains, exports to TFLite and passes
parity through the installed CLI, and bad model files are one clear error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from console_scripts import console_script
from mobilekit.errors import MobilekitError
from mobilekit.families import family_of
from mobilekit.models import create_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_retinaface.py"
SPEC = f"{EXAMPLE}:build"


def mobilekit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([console_script("mobilekit"), *args], capture_output=True, text=True, timeout=900, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_model_file_builds_a_detector_of_its_family():
    model = create_model(SPEC)
    assert model.deploy.name == "tiny_retinaface"
    assert family_of(model.deploy).name == "retinaface"
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in create_model("retinaface_mnet025").parameters())


def test_bad_model_files_name_the_problem(tmp_path):
    with pytest.raises(MobilekitError, match="model file not found"):
        create_model(f"{tmp_path / 'missing.py'}:build")
    (tmp_path / "broken.py").write_text("import no_such_module\n")
    with pytest.raises(MobilekitError, match="cannot import .*broken.py: ModuleNotFoundError"):
        create_model(f"{tmp_path / 'broken.py'}:build")
    (tmp_path / "plain.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(2, 2)\n")
    with pytest.raises(MobilekitError, match="has no function make"):
        create_model(f"{tmp_path / 'plain.py'}:make")
    with pytest.raises(MobilekitError, match="DeployConfig"):
        create_model(f"{tmp_path / 'plain.py'}:build")


@pytest.mark.slow
def test_worked_example_trains_exports_and_passes_parity(tmp_path, two_shared_images):
    from mobilekit.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "synth", 12, seed=5, imgsz=128, val_fraction=0.25)
    train = mobilekit("train", "--model", SPEC, "--data", str(data), "--epochs", "1", "--batch", "8", "--imgsz", "128",
                      "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run"), cwd=tmp_path)  # fmt: skip
    assert train.returncode == 0, train.stderr
    weights = tmp_path / "run" / "best_weights.pth"
    export = mobilekit("export", SPEC, "--weights", str(weights), "--imgsz", "128", "--tflite", "--out", str(tmp_path / "export"), cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    sidecar = json.loads((tmp_path / "export" / "tiny_retinaface_128_fp32.json").read_text())
    assert sidecar["model"]["name"] == "tiny_retinaface" and sidecar["model"]["build"] == f"{EXAMPLE}:build"
    assert sidecar["anchors"]["type"] == "retinaface_priors"
    parity = mobilekit("parity", str(tmp_path / "export"), "--images", str(two_shared_images), "--json", str(tmp_path / "parity.json"), cwd=tmp_path)
    assert parity.returncode == 0, parity.stdout + parity.stderr
    report = json.loads((tmp_path / "parity.json").read_text())
    assert {a["variant"] for a in report["artefacts"]} == {"onnx", "onnx_sim", "fp32", "fp16"}
    assert all(a["passed"] for a in report["artefacts"])
