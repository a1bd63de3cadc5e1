"""FeatherFace V1 with the users' real checkpoint: exported files against PyTorch on the shared photos at 640."""

from __future__ import annotations

import pytest

from mobilekit.converters.parity import check_artefacts

WEIGHTS = "weights/featherface_v1_widerface.pth"


@pytest.fixture(scope="module")
def featherface_parity(shared, featherface_export) -> dict:
    """Parity on every shared photo (int8 judged on the half its calibration did not use)."""
    report = check_artefacts(featherface_export, shared / "images", shared / WEIGHTS)
    return {a["variant"]: a for a in report["artefacts"]}


@pytest.mark.slow
def test_fp32_tflite_meets_the_float_criterion(featherface_parity):
    """Built-in kernels within 1e-4 of the float64 reference; XNNPACK (what apps run, the judged result)
    within the model's float bound, with no constant of its own."""
    fp32 = featherface_parity["fp32"]
    assert set(fp32["tensors"]) == {"loc", "conf", "landmarks"}
    for name, metrics in fp32["builtin"]["tensors"].items():
        assert metrics["max_abs"] <= 1e-4, ("built-in kernels", name, metrics)
    assert fp32["passed"] and "XNNPACK" in fp32["kernels"], fp32["verdict"]
    assert "50 layers" in fp32["criterion"]


@pytest.mark.slow
def test_onnx_runtime_gives_the_same_faces(featherface_parity):
    """ONNX Runtime's landmarks reach ~1.5e-4 on one photo (a known deviation, in the closing note);
    boxes and scores stay within 1e-4 and every face is found at the same place."""
    onnx = featherface_parity["onnx"]
    for name in ("loc", "conf"):
        assert onnx["tensors"][name]["max_abs"] <= 1e-4, (name, onnx["tensors"][name])
    faces = onnx["faces"]
    assert faces["found"] == faces["faces"] and faces["confirmed"] == faces["file_faces"] and min(faces["ious"]) >= 0.99


@pytest.mark.slow
def test_fp16_tflite_keeps_every_face(featherface_parity):
    fp16 = featherface_parity["fp16"]
    faces = fp16["faces"]
    assert faces["faces"] >= 20
    assert faces["recall"] == 1.0 and faces["precision"] == 1.0 and fp16["passed"], fp16["verdict"]


@pytest.mark.slow
def test_int8_finds_98_percent_of_held_out_faces(featherface_parity):
    """PyTorch's faces (score >= 0.5) found at >= 0.3 and IoU >= 0.5 on photos the calibration never saw,
    with the model's declared float stem and the default range estimator (both recorded in the sidecar).
    Before them: 262/282 (TensorFlow's min/max ranges, fully int8)."""
    int8 = featherface_parity["int8"]
    faces = int8["faces"]
    print(f"featherface_v1 int8 held-out recall {faces['found']}/{faces['faces']}, precision {faces['confirmed']}/{faces['file_faces']}")
    assert int8["calibration_faces"] is not None and faces["images"] == 3
    assert faces["recall"] >= 0.98 and faces["precision"] >= 0.95 and int8["passed"], int8["verdict"]


@pytest.mark.slow
def test_int8_sidecar_records_the_float_stem_and_range_estimator(featherface_export):
    from mobilekit.converters.sidecars import read_sidecar

    tflite = read_sidecar(featherface_export / "featherface_v1_640_int8.tflite")["tflite"]
    assert tflite["calibration_ranges"] == "mean"
    assert tflite["keep_float"]["requested"] == ["stem"] and 10 <= len(tflite["keep_float"]["layers"]) <= 40
