"""mobilekit parity: the RetinaFace targets on real photos, the report files, and the metrics themselves."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mobilekit.converters.float_criterion import FloatCriterion, RoundingPath
from mobilekit.converters.parity import MIN_REFERENCE_FACES, ArtefactParity, check_artefacts, face_agreement, judge, summarize_faces, tensor_metrics
from mobilekit.detections import Detections
from mobilekit.families.base import ParityTolerance


def _artefact(report: dict, file: str) -> dict:
    return next(a for a in report["artefacts"] if a["file"] == file)


# -- RetinaFace-MobileNet-0.25, real weights, real photos -------------------------------------------
@pytest.mark.slow
def test_retinaface_parity_meets_every_target(retinaface_parity):
    report = retinaface_parity["report"]
    assert retinaface_parity["status"] == 0
    assert report["passed"] is True
    assert len(report["artefacts"]) == 6 and len(report["images"]) == 6
    tflite = _artefact(report, "retinaface_mnet025_640_fp32.tflite")
    onnx = [_artefact(report, f)["tensors"] for f in ("retinaface_mnet025_640.onnx", "retinaface_mnet025_640_sim.onnx")]
    for tensors in onnx + [tflite["builtin"]["tensors"]]:  # ONNX Runtime and LiteRT's built-in kernels
        assert set(tensors) == {"loc", "conf", "landmarks"}
        for name, metrics in tensors.items():
            assert metrics["max_abs"] <= 1e-4, (name, metrics)
            assert metrics["cosine"] > 0.999999, (name, metrics)
    bounds = report["thresholds"]["retinaface_mnet025"]["float_bounds"]
    assert "XNNPACK" in tflite["kernels"] and tflite["passed"]  # what apps run, within the float criterion
    assert all(metrics["relative"] <= bounds[group] for group, metrics in tflite["tensors"].items())
    assert "sum(1 + sqrt(K))" in tflite["criterion"]
    fp16 = _artefact(report, "retinaface_mnet025_640_fp16.tflite")["faces"]
    assert fp16["faces"] >= 20, "the shared photos must hold real faces for the detection checks to mean anything"
    assert fp16["recall"] == 1.0 and fp16["precision"] == 1.0 and min(fp16["ious"]) >= 0.9
    for file in ("retinaface_mnet025_640_int8.tflite", "retinaface_mnet025_640_int8_full.tflite"):
        artefact = _artefact(report, file)
        faces = artefact["faces"]
        assert faces["images"] == 3 and artefact["calibration_faces"]["images"] == 3  # judged on the held-out half
        assert faces["recall"] >= 0.97 and faces["precision"] >= 0.95, (file, artefact["verdict"])
        assert faces["mean_landmark_error_px"] < 5.0
        assert "XNNPACK" in artefact["kernels"] and artefact["builtin"]["error"] is None
    for artefact in report["artefacts"]:
        assert artefact["export_seconds"] > 0
        assert artefact["passed"] and artefact["criterion"]


@pytest.mark.slow
def test_parity_writes_markdown_and_png(retinaface_parity):
    markdown = retinaface_parity["markdown"].read_text()
    assert "**Overall: PASS**" in markdown
    assert "retinaface_mnet025_640_int8_full.tflite" in markdown and "fp16 and int8 on detections" in markdown
    assert "on photos not used for calibration" in markdown and "on its calibration photos, not judged" in markdown
    assert retinaface_parity["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
    from mobilekit.families import family_of
    from mobilekit.models import create_model

    report = check_artefacts(random_export_factory(name), two_shared_images)
    deploy = create_model(name).deploy
    groups = {g for output in deploy.output_names for g in family_of(deploy).output_groups(output, deploy)}
    for artefact in report["artefacts"]:
        assert artefact["passed"], (artefact["file"], artefact["verdict"])
        assert set(artefact["tensors"]) == groups  # each output (ADYOLOv5-Face: each column group) reported


# -- metrics ---------------------------------------------------------------------------------------
def _dets(boxes, scores) -> Detections:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    landmarks = np.repeat(boxes[:, :2], 5, axis=0).reshape(-1, 10)
    return Detections(boxes, np.asarray(scores, dtype=np.float32), landmarks)


def test_face_agreement_judges_at_the_app_threshold_with_a_margin():
    reference = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60], [70, 70, 80, 80]], [0.9, 0.8, 0.35, 0.9])
    test = _dets([[0, 0, 10, 11], [100, 100, 120, 120], [50, 50, 60, 60], [70, 70, 80, 80]], [0.85, 0.7, 0.6, 0.1])
    result = face_agreement(reference, test, match_iou=0.5)
    # recall: 3 reference faces >= 0.5; the one at 70,70 is only scored 0.1 by the file (an app loses it)
    assert result["faces"] == 3 and result["found"] == 1
    assert result["matched_any"] == 2  # the old lenient count still pairs it with the 0.1 detection
    # precision: 3 file faces >= 0.5; the one at 50,50 is confirmed by the reference's 0.35 (margin)
    assert result["file_faces"] == 3 and result["confirmed"] == 2
    assert result["ious"][0] == pytest.approx(10 * 10 / (10 * 11), rel=1e-4) and result["ious"][1:] == [0.0, 0.0]
    assert result["score_drift"] == [pytest.approx(0.05, abs=1e-6)]
    summary = summarize_faces([result, face_agreement(reference, reference, 0.9)])
    assert summary["found"] == 4 and summary["faces"] == 6 and summary["recall"] == pytest.approx(4 / 6)
    assert summary["precision"] == pytest.approx(5 / 6) and summary["score_drift_max"] == pytest.approx(0.05, abs=1e-6)


def test_face_agreement_iou_threshold_is_the_precisions():
    reference = _dets([[0, 0, 10, 10]], [0.9])
    shifted = _dets([[0, 0, 10, 12]], [0.9])  # IoU 0.833
    assert face_agreement(reference, shifted, 0.5)["found"] == 1
    assert face_agreement(reference, shifted, 0.9)["found"] == 0


def test_tensor_metrics():
    a = np.array([1.0, 2.0, -4.0], dtype=np.float32)
    metrics = tensor_metrics(a, a + np.array([0, 0, 0.5], dtype=np.float32))
    assert metrics["max_abs"] == pytest.approx(0.5)
    assert metrics["relative"] == pytest.approx(0.5 / 4)  # of the values' magnitude
    assert metrics["mean_abs"] == pytest.approx(0.5 / 3)
    assert 0.99 < metrics["cosine"] < 1.0


def _faces(found, faces, confirmed, file_faces, images=3):
    return {"found": found, "faces": faces, "confirmed": confirmed, "file_faces": file_faces, "images": images,
            "recall": found / faces if faces else None, "precision": confirmed / file_faces if file_faces else None,
            "score_drift_median": 0.01, "score_drift_max": 0.1}


NO_FLOATS = FloatCriterion({}, {})  # what files judged on faces are given


def test_judge_uses_detection_criteria_for_reduced_precision():
    result = ArtefactParity("m_int8.tflite", "tflite", "int8", "int8", 1.0, faces=_faces(19, 20, 19, 20))
    judge(result, ParityTolerance(), NO_FLOATS)
    assert result.passed and "not used for calibration" in result.criterion
    result = ArtefactParity("m_int8.tflite", "tflite", "int8", "int8", 1.0, faces=_faces(20, 20, 18, 20))
    judge(result, ParityTolerance(), NO_FLOATS)
    assert not result.passed  # 90% precision
    result = ArtefactParity("m_fp16.tflite", "tflite", "fp16", "fp16", 1.0, faces=_faces(19, 20, 20, 20))
    judge(result, ParityTolerance(), NO_FLOATS)
    assert not result.passed
    result = ArtefactParity("m_int8.tflite", "tflite", "int8", "int8", 1.0, faces=_faces(0, 1, 0, 1, images=0))
    judge(result, ParityTolerance(), NO_FLOATS)
    assert not result.passed and "nothing held out" in result.verdict
    crashed = ArtefactParity("m_int8.tflite", "tflite", "int8", "int8", 1.0, error="xnnpack: exit status -6: double free")
    judge(crashed, ParityTolerance(), NO_FLOATS)
    assert not crashed.passed and "double free" in crashed.verdict


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_faces_judged_over_too_few_reference_faces_are_not_judged(precision):
    """No face on the photos (or too few) proves nothing about faces: not judged, which fails, asking for photos."""
    for faces in (0, MIN_REFERENCE_FACES - 1):
        result = ArtefactParity(f"m_{precision}.tflite", "tflite", precision, precision, 1.0, faces=_faces(faces, faces, 0, 0))
        judge(result, ParityTolerance(), NO_FLOATS)
        assert not result.passed and result.verdict.startswith("not judged") and "photos with faces" in result.verdict
    enough = ArtefactParity(f"m_{precision}.tflite", "tflite", precision, precision, 1.0, faces=_faces(3, 3, 3, 3))
    judge(enough, ParityTolerance(), NO_FLOATS)
    assert enough.passed and f"at least {MIN_REFERENCE_FACES} reference faces" in enough.criterion


def test_judge_fp32_by_each_groups_error_relative_to_its_bound():
    floats = FloatCriterion({"out": RoundingPath(10, 100.0)}, {"out.box": 1e-4, "out.score": 2e-4})
    result = ArtefactParity("m.onnx", "onnx", "onnx", "fp32", 1.0, tensors={"out.box": {"relative": 9e-5}, "out.score": {"relative": 1.5e-4}})
    judge(result, ParityTolerance(), floats)
    assert result.passed and result.verdict.startswith("worst out.box: error 9e-05 of its magnitude, 0.90 of its bound")
    assert "10 layers" in result.criterion and "out.box 1.00e-04" in result.criterion
    result.tensors["out.score"]["relative"] = 2.5e-4  # within out.box's bound, not within its own
    judge(result, ParityTolerance(), floats)
    assert not result.passed and "worst out.score" in result.verdict


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
