"""The second converter: litert-torch (PyTorch -> TFLite directly) beside onnx2tf."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from mobilekit.config import DeployConfig
from mobilekit.converters import build_source_model, export_model, litert_export, open_runtime
from mobilekit.converters import export as export_pipeline
from mobilekit.converters.export import resolve_formats
from mobilekit.converters.litert_export import LitertConversionFailed, convert_with_litert
from mobilekit.converters.onnx_export import prepare_deploy_module
from mobilekit.converters.parity import face_agreement, load_inputs
from mobilekit.converters.runtimes import TorchRuntime
from mobilekit.converters.sidecars import read_sidecar, sha256_file
from mobilekit.converters.variants import VARIANT, converter_variant, parse_artefact_name
from mobilekit.errors import MobilekitError
from mobilekit.families import decode_outputs
from mobilekit.models import FaceDetector

OUTPUTS = ("loc", "conf", "landmarks")


# -- names and formats ----------------------------------------------------------------------------
def test_litert_files_have_a_suffix_and_onnx2tf_names_stay():
    assert parse_artefact_name("featherface_v1_640_fp32_litert.tflite") == ("featherface_v1", (640, 640), "fp32_litert")
    assert parse_artefact_name("featherface_v1_480x640_fp16_litert.tflite") == ("featherface_v1", (480, 640), "fp16_litert")
    assert parse_artefact_name("featherface_v1_640_fp32.tflite") == ("featherface_v1", (640, 640), "fp32")
    assert parse_artefact_name("featherface_v1_640_int8_full.tflite") == ("featherface_v1", (640, 640), "int8_full")
    assert parse_artefact_name("featherface_v1_640_int8_litert.tflite") is None  # litert writes no int8
    litert = VARIANT["fp32_litert"]
    assert (litert.converter, litert.kind, litert.precision, litert.input_dtype) == ("litert", "fp32", "fp32", "float32")
    assert (VARIANT["fp32"].converter, VARIANT["fp32"].kind) == ("onnx2tf", "fp32")
    assert converter_variant("fp16", "litert") == "fp16_litert" and converter_variant("int8", "litert") is None


def test_converter_choice_resolves_formats():
    assert resolve_formats(tflite=True, converter="onnx2tf") == ("onnx", "onnx_sim", "fp32", "fp16")
    assert resolve_formats(tflite=True, converter="litert") == ("onnx", "onnx_sim", "fp32_litert", "fp16_litert")
    assert resolve_formats(int8=True, converter="both") == (
        "onnx", "onnx_sim", "fp32", "fp32_litert", "fp16", "fp16_litert", "int8", "int8_full",
    )  # fmt: skip
    assert resolve_formats(int8=True, converter="litert")[-2:] == ("int8", "int8_full")  # int8 stays onnx2tf's
    with pytest.raises(MobilekitError, match="--converter 'tflite'"):
        resolve_formats(converter="tflite")


@pytest.mark.parametrize("name", ["retinaface_mnet025", "blazeface_short", "adyolov5_face"])
def test_nhwc_wrapper_computes_the_deploy_module_bit_for_bit(name):
    """The row-wise mean subtraction is the same float subtraction: outputs equal the NCHW deploy module's."""
    model = build_source_model(name, None, random_seed=0)
    module = prepare_deploy_module(model)
    hw = 128 if name.startswith("blazeface") else 64
    images = np.random.default_rng(1).uniform(0, 255, (1, hw, hw, 3)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(images).permute(0, 3, 1, 2))
        got = litert_export.NHWCDeployModule(module)(torch.from_numpy(images))
    assert list(got) == list(model.deploy.output_names)
    for name_, tensor in zip(model.deploy.output_names, expected):
        assert torch.equal(got[name_], tensor), name_


def test_missing_litert_extra_is_one_line_naming_the_extra(monkeypatch, tmp_path, capsys):
    from mobilekit.cli import main

    monkeypatch.setattr(litert_export, "LITERT_MODULE", "litert_torch_not_installed_here")
    with pytest.raises(SystemExit) as exc:
        main(["export", "retinaface_mnet025", "--random-init", "--imgsz", "64", "--converter", "litert", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert 'pip install "mobilekit[litert]"' in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_without_the_litert_extra_its_twins_are_skipped_with_one_line(monkeypatch):
    from mobilekit.converters.export import FORMATS, installed_formats

    assert installed_formats(FORMATS) == (FORMATS, None)
    monkeypatch.setattr(litert_export, "LITERT_MODULE", "litert_torch_not_installed_here")
    kept, skipped = installed_formats(FORMATS)
    assert kept == tuple(f for f in FORMATS if not f.endswith("_litert")) and "int8" in kept
    assert skipped == 'skipped fp32_litert, fp16_litert: litert-torch is not installed (pip install "mobilekit[litert]")'
    assert installed_formats(("onnx", "fp32")) == (("onnx", "fp32"), None)


def test_the_run_summary_shows_the_skipped_line_as_written(tmp_path):
    from rich.console import Console

    from mobilekit.embedded_run import Pipeline, PipelineConfig, StepResult

    line = 'skipped fp32_litert, fp16_litert: litert-torch is not installed (pip install "mobilekit[litert]")'
    console = Console(width=400, record=True)
    pipeline = Pipeline(PipelineConfig(out=tmp_path), console=console)
    pipeline.steps = lambda: [("export", lambda: StepResult("export", 0.0, f"a.onnx; {line}", str(tmp_path)))]
    pipeline.run()
    assert console.export_text().count(line) == 2  # the step's line and the summary table: not read as rich markup


# -- a model litert-torch cannot convert ----------------------------------------------------------
class _MedianHead(FaceDetector):
    """A detector whose head takes a median (``aten.median.dim``: litert-torch has no lowering for it)."""

    def __init__(self) -> None:
        super().__init__(DeployConfig(name="median_head"))
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.head = _Median()

    def first_conv(self) -> nn.Conv2d:
        return self.stem

    def forward_normalized(self, x):
        y = self.head(self.stem(x)).flatten(2).transpose(1, 2)
        return y[..., :4], y[..., :2], y[..., :10]


class _Median(nn.Module):
    def forward(self, x):
        return x - x.median(dim=-1, keepdim=True).values


@pytest.mark.slow
def test_unconvertible_op_is_named_with_its_module(tmp_path):
    sample = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    module = prepare_deploy_module(_MedianHead().eval())
    with pytest.raises(LitertConversionFailed, match=r"aten::median \(PyTorch module 'head'\)"):
        convert_with_litert(module, tmp_path, "median_head_32", ("fp32_litert",), sample)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_export_goes_on_with_onnx2tf_when_litert_fails(monkeypatch, tmp_path):
    reason = "litert-torch cannot convert the model at operator aten::median (PyTorch module 'head'): Lowering not found"

    def fail(*args, **kwargs):
        raise LitertConversionFailed(reason)

    monkeypatch.setattr(export_pipeline, "convert_with_litert", fail)
    warnings: list[str] = []
    model = build_source_model("retinaface_mnet025", None, random_seed=0)
    paths = export_model(model, 64, tmp_path, formats=("fp32_litert",), warn=warnings.append)
    assert [p.name for p in paths] == ["retinaface_mnet025_64_fp32.tflite"]
    assert warnings == [f"{reason}; fp32 converted with onnx2tf only"]
    assert warnings[0] in read_sidecar(paths[0])["notes"]


# -- the real RetinaFace ------------------------------------------------------------------------
@pytest.mark.slow
def test_litert_sidecar_keeps_the_contract(retinaface_litert_export):
    export_dir, paths = retinaface_litert_export
    assert [p.name for p in paths] == ["retinaface_mnet025_640_fp32_litert.tflite", "retinaface_mnet025_640_fp16_litert.tflite"]
    for path in paths:
        meta = read_sidecar(path)
        assert meta["artefact"]["converter"] == "litert" and meta["tflite"]["converter"] == "litert"
        assert meta["artefact"]["variant"] == parse_artefact_name(path.name)[2]
        assert meta["artefact"]["sha256"] == sha256_file(path) and meta["artefact"]["export_seconds"] > 1
        assert meta["input"] | {"preprocessing": None} == {
            "name": "images", "shape": [1, 640, 640, 3], "dtype": "float32", "layout": "NHWC",
            "channel_order": "RGB", "value_range": [0, 255], "preprocessing": None,
        }  # fmt: skip
        assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [("loc", [1, 16800, 4]), ("conf", [1, 16800, 2]), ("landmarks", [1, 16800, 10])]
        assert sorted(meta["tflite"]["io"]["outputs"]) == sorted(OUTPUTS)
        assert meta["tflite"]["analysis"]["xnnpack_load"] == {"ok": True, "error": None}
        assert meta["tflite"]["seconds"]["litert_fp32_shared"] > 1
        assert "litert-torch" in meta["versions"]
    fp32_check = read_sidecar(paths[0])["tflite"]["output_check"]
    assert max(v["max_abs_error_vs_pytorch"] for v in fp32_check.values()) < 1e-4
    assert read_sidecar(paths[1])["tflite"]["analysis"]["ops"]["DEQUANTIZE"] > 0  # float16 weights
    assert not [p for p in export_dir.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def photo_runs(retinaface_export, retinaface_litert_export, shared):
    """PyTorch (float64) and every file on the group photo, TFLite through XNNPACK (the default interpreter)."""
    model = build_source_model("retinaface_mnet025", shared / "weights" / "retinaface_mnet025_widerface.pth")
    image = load_inputs([shared / "images" / "group_768x1024.jpg"], model.deploy, (640, 640))
    litert_dir = retinaface_litert_export[0]
    files = {
        "onnx2tf": retinaface_export[0] / "retinaface_mnet025_640_fp32.tflite",
        "litert_fp32": litert_dir / "retinaface_mnet025_640_fp32_litert.tflite",
        "litert_fp16": litert_dir / "retinaface_mnet025_640_fp16_litert.tflite",
    }
    outputs = {name: open_runtime(path, num_threads=2).run(image) for name, path in files.items()}
    outputs["pytorch"] = TorchRuntime(model, float64=True).run(image)
    faces = {name: decode_outputs(model.deploy, {k: v[0] for k, v in out.items()}, (640, 640)).numpy() for name, out in outputs.items()}
    return outputs, faces


@pytest.mark.slow
def test_litert_fp32_matches_pytorch_within_1e4_under_xnnpack(photo_runs):
    outputs, _ = photo_runs
    litert, reference = outputs["litert_fp32"], outputs["pytorch"]
    errors = {name: float(np.abs(litert[name] - reference[name]).max()) for name in OUTPUTS}
    assert max(errors.values()) <= 1e-4, errors


@pytest.mark.slow
def test_litert_files_give_the_faces_of_onnx2tfs_file(photo_runs):
    _, faces = photo_runs
    strong = int((faces["onnx2tf"].scores >= 0.5).sum())
    assert strong >= 5
    same = face_agreement(faces["onnx2tf"], faces["litert_fp32"], match_iou=0.99)
    assert (same["faces"], same["found"], same["file_faces"], same["confirmed"]) == (strong, strong, strong, strong), same
    fp16 = face_agreement(faces["pytorch"], faces["litert_fp16"], match_iou=0.9)
    assert fp16["found"] == fp16["faces"] and fp16["confirmed"] == fp16["file_faces"], fp16


# -- --converter both, and packaging one of the two -----------------------------------------------
@pytest.mark.slow
def test_converter_both_writes_both_and_package_picks_one(both_converters_export, tmp_path):
    from mobilekit.cli import main

    names = sorted(p.name for p in both_converters_export.glob("*.tflite"))
    assert names == [f"retinaface_mnet025_128_{v}.tflite" for v in ("fp16", "fp16_litert", "fp32", "fp32_litert")]
    converters = {read_sidecar(both_converters_export / n)["artefact"]["converter"] for n in names}
    assert converters == {"onnx2tf", "litert"}
    main(["package", str(both_converters_export), "--out", str(tmp_path / "pkg"), "--unverified"])  # random weights: no parity
    meta = json.loads((tmp_path / "pkg" / "model_meta.json").read_text())
    export, choice = meta["export"], meta["export"]["converter_choice"]
    assert meta["verification"]["verified"] is False and {c["parity"] for c in choice["candidates"]} == {"not checked"}
    assert {c["file"] for c in choice["candidates"]} == {"retinaface_mnet025_128_fp32.tflite", "retinaface_mnet025_128_fp32_litert.tflite"}
    assert all(c["median_ms_1_thread"] > 0 for c in choice["candidates"])
    assert choice["chosen"] == export["source_file"] and choice["chosen"] in choice["reason"]
    assert export["converter"] == read_sidecar(both_converters_export / export["source_file"])["artefact"]["converter"]


def test_package_skips_a_twin_that_failed_parity_or_xnnpack(tmp_path):
    from mobilekit.errors import CheckFailed
    from mobilekit.flutter.converter_choice import choose_converter
    from mobilekit.flutter.verification import Verdict

    def sidecar(converter: str, xnnpack_ok: bool = True) -> dict:
        return {"artefact": {"converter": converter}, "tflite": {"analysis": {"xnnpack_load": {"ok": xnnpack_ok, "error": None if xnnpack_ok else "double free"}}}}

    onnx2tf, litert = (tmp_path / "m_64_fp32.tflite", sidecar("onnx2tf")), (tmp_path / "m_64_fp32_litert.tflite", sidecar("litert"))
    report = tmp_path / "parity.json"
    verdicts = {"m_64_fp32.tflite": Verdict("m_64_fp32.tflite", report, "FAILED", "fails"), "m_64_fp32_litert.tflite": Verdict("m_64_fp32_litert.tflite", report, "passed", "passes")}
    image = np.zeros((64, 64, 3), np.uint8)
    path, _, choice = choose_converter([onnx2tf, litert], image, verdicts)
    assert path.name == "m_64_fp32_litert.tflite" and "only eligible one" in choice["reason"]
    assert [c["parity"] for c in choice["candidates"]] == ["FAILED", "passed"]
    broken = (litert[0], sidecar("litert", xnnpack_ok=False))
    with pytest.raises(CheckFailed, match="m_64_fp32_litert.tflite: XNNPACK fails"):
        choose_converter([onnx2tf, broken], image, verdicts)
    path, _, choice = choose_converter([onnx2tf, broken], image, verdicts, unverified=True)  # the one that loads, though it failed parity
    assert path.name == "m_64_fp32.tflite" and [c["eligible"] for c in choice["candidates"]] == [True, False]
