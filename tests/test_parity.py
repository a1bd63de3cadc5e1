"""mobilekit parity: the RetinaFace targets on real photos, the report files, and the metrics themselves."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mobilekit.converters.parity import ArtefactParity, check_artefacts, judge, match_faces, tensor_metrics
from mobilekit.families import ParityTolerance
from mobilekit.postprocess import Detections


def _artefact(report: dict, file: str) -> dict:
    return next(a for a in report["artefacts"] if a["file"] == file)


# -- RetinaFace-MobileNet-0.25, real weights, real photos -------------------------------------------
@pytest.mark.slow
def test_retinaface_parity_meets_every_target(retinaface_parity):
    report = retinaface_parity["report"]
    assert retinaface_parity["status"] == 0
    assert report["passed"] is True
    assert len(report["artefacts"]) == 6 and len(report["images"]) == 6
    for file in ("retinaface_mnet025_640.onnx", "retinaface_mnet025_640_sim.onnx", "retinaface_mnet025_640_fp32.tflite"):
        tensors = _artefact(report, file)["tensors"]
        assert set(tensors) == {"loc", "conf", "landmarks"}
        for name, metrics in tensors.items():
            assert metrics["max_abs"] <= 1e-4, (file, name, metrics)
            assert metrics["cosine"] > 0.999999, (file, name, metrics)
    fp16 = _artefact(report, "retinaface_mnet025_640_fp16.tflite")["faces"]
    assert fp16["faces"] >= 20, "the shared photos must hold real faces for the detection checks to mean anything"
    assert min(fp16["ious"]) >= 0.9
    for file in ("retinaface_mnet025_640_int8.tflite", "retinaface_mnet025_640_int8_full.tflite"):
        faces = _artefact(report, file)["faces"]
        assert sum(v >= 0.5 for v in faces["ious"]) >= 0.95 * faces["faces"], (file, faces["matched"], faces["faces"])
        assert faces["mean_landmark_error_px"] < 5.0
    for artefact in report["artefacts"]:
        assert artefact["export_seconds"] > 0
        assert artefact["passed"] and artefact["criterion"]


@pytest.mark.slow
def test_parity_writes_markdown_and_png(retinaface_parity):
    markdown = retinaface_parity["markdown"].read_text()
    assert "**Overall: PASS**" in markdown
    assert "retinaface_mnet025_640_int8_full.tflite" in markdown and "detections, not tensors" in markdown
    assert retinaface_parity["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_parity_fails_on_a_tampered_onnx(retinaface_export, shared, tmp_path, capsys):
    """A 1% change to one convolution is caught by the fp32 tensor check, and the CLI exits 1."""
    from mobilekit.cli import main

    export_dir, _ = retinaface_export
    for name in ("retinaface_mnet025_640.onnx", "retinaface_mnet025_640.json"):
        shutil.copy(export_dir / name, tmp_path / name)
    model = onnx.load(str(tmp_path / "retinaface_mnet025_640.onnx"))
    weight = next(init for init in model.graph.initializer if len(init.dims) == 4 and init.dims[0] >= 16)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.01, weight.name))
    onnx.save(model, str(tmp_path / "retinaface_mnet025_640.onnx"))
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(shared / "images" / "crowd_624x1024.jpg", images)
    with pytest.raises(SystemExit) as exc:
        main(["parity", str(tmp_path), "--images", str(images)])
    assert exc.value.code == 1
    assert "parity failed" in capsys.readouterr().err


def test_parity_without_exports_is_a_clear_error(tmp_path, shared):
    from mobilekit.errors import MobilekitError

    with pytest.raises(MobilekitError, match="no exported files"):
        check_artefacts(tmp_path, shared / "images")


@pytest.mark.slow
def test_parity_on_a_random_init_export_rebuilds_the_same_model(random_export_factory, two_shared_images):
    """The sidecar's seed rebuilds the randomised PyTorch model exactly: ONNX matches it to 1e-4."""
    export_dir = random_export_factory("retinaface_mnet025")
    onnx_only = export_dir.parent / "random_onnx_only"
    onnx_only.mkdir(exist_ok=True)
    for suffix in (".onnx", ".json"):
        shutil.copy(export_dir / f"retinaface_mnet025_256{suffix}", onnx_only)
    report = check_artefacts(onnx_only, two_shared_images)
    assert report["passed"], report["artefacts"][0]["verdict"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(__import__("mobilekit.models", fromlist=["list_models"]).list_models()))
def test_every_registered_model_fp32_files_match_pytorch(name, random_export_factory, two_shared_images):
    report = check_artefacts(random_export_factory(name), two_shared_images)
    for artefact in report["artefacts"]:
        assert artefact["passed"], (artefact["file"], artefact["verdict"])


# -- metrics ---------------------------------------------------------------------------------------
def _dets(boxes, scores) -> Detections:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    landmarks = np.repeat(boxes[:, :2], 5, axis=0).reshape(-1, 10)
    return Detections(boxes, np.asarray(scores, dtype=np.float32), landmarks)


def test_match_faces_counts_matches_misses_and_extras():
    reference = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [0.9, 0.8, 0.3])
    test = _dets([[0, 0, 10, 11], [100, 100, 120, 120], [50, 50, 60, 60]], [0.85, 0.7, 0.6])
    result = match_faces(reference, test)
    assert result["faces"] == 2 and result["matched"] == 1 and result["missed"] == 1
    assert result["extra"] == 1  # the face at 100,100; the one at 50,50 matches a weak reference detection
    assert result["ious"][0] == pytest.approx(10 * 10 / (10 * 11), rel=1e-4)
    assert result["max_score_diff"] == pytest.approx(0.05, abs=1e-6)
    assert result["mean_landmark_error_px"] == pytest.approx(0.0)


def test_match_faces_identical_detections():
    reference = _dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8])
    result = match_faces(reference, reference)
    assert result["ious"] == [1.0, 1.0] and result["missed"] == 0 and result["extra"] == 0


def test_tensor_metrics():
    a = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    metrics = tensor_metrics(a, a + np.array([0, 0, 0.5], dtype=np.float32))
    assert metrics["max_abs"] == pytest.approx(0.5)
    assert metrics["mean_abs"] == pytest.approx(0.5 / 3)
    assert 0.99 < metrics["cosine"] < 1.0


def test_judge_uses_detection_criteria_for_reduced_precision():
    result = ArtefactParity("m_int8.tflite", "tflite", "int8", "int8", 1.0, faces={"faces": 20, "ious": [0.6] * 19 + [0.0]})
    judge(result, ParityTolerance())
    assert result.passed and "detections, not tensors" in result.criterion
    result = ArtefactParity("m_fp16.tflite", "tflite", "fp16", "fp16", 1.0, faces={"faces": 2, "ious": [0.95, 0.89]})
    judge(result, ParityTolerance())
    assert not result.passed


# -- the float64 reference ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("channels", "out_channels", "groups", "kernel", "stride", "padding", "dilation"),
    [(8, 8, 8, 3, 1, 1, 1), (16, 16, 16, 3, 2, 1, 1), (12, 24, 4, 3, 2, 2, 2), (6, 6, 3, 1, 1, 0, 1), (4, 8, 2, (3, 1), (2, 1), (1, 0), 1)],
)
def test_float64_grouped_conv_equals_pytorch(channels, out_channels, groups, kernel, stride, padding, dilation):
    import torch
    import torch.nn.functional as F

    from mobilekit.converters.float64_reference import FastFloat64GroupedConvs, grouped_conv2d

    gen = torch.Generator().manual_seed(channels * 31 + groups)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(2, channels, 19, 23, dtype=torch.float64, generator=gen)
    weight = torch.randn(out_channels, channels // groups, kh, kw, dtype=torch.float64, generator=gen)
    bias = torch.randn(out_channels, dtype=torch.float64, generator=gen)
    expected = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    direct = grouped_conv2d(x, weight, bias, stride, padding, dilation, groups)
    assert direct.shape == expected.shape
    assert float((direct - expected).abs().max()) < 1e-12
    conv = torch.nn.Conv2d(channels, out_channels, (kh, kw), stride, padding, dilation, groups).double()
    with torch.no_grad():
        conv.weight.copy_(weight), conv.bias.copy_(bias)
        with FastFloat64GroupedConvs():
            routed = conv(x)
    assert float((routed - expected).abs().max()) < 1e-12


def test_float64_reference_equals_plain_float64_model():
    import torch

    from mobilekit.converters.runtimes import TorchRuntime
    from mobilekit.inference import run_model
    from mobilekit.models import create_model

    torch.manual_seed(0)
    model = create_model("featherface_v1").eval()
    image = np.random.default_rng(1).uniform(0, 255, (1, 64, 96, 3)).astype(np.float32)
    runtime = TorchRuntime(model, float64=True)
    fast = runtime.run(image)
    plain = run_model(runtime.model, np.ascontiguousarray(image.transpose(0, 3, 1, 2), dtype=np.float64))
    for name, value in plain.items():
        assert fast[name].dtype == np.float64
        np.testing.assert_allclose(fast[name], value.numpy(), rtol=0, atol=1e-12)
