"""BlazeFace through mobilekit's own export: the TFLite fp32 file mobilekit writes from the PyTorch model
computes what Google's file computes and finds the same faces; the float files pass ``mobilekit parity``;
int8 keeps its outputs float, writes no uint8-output file, and is judged (short range passes, full range
does not yet: xfail with the measured numbers)."""

from __future__ import annotations

import numpy as np
import pytest

from mobilekit.box_coder import box_iou
from mobilekit.converters.parity import check_artefacts
from mobilekit.converters.runtimes import open_runtime
from mobilekit.families import decode_outputs
from mobilekit.image_io import read_image, resize_to_input
from tests.test_blazeface import GOOGLE_FILES, google_file, google_interpreter, run_google

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=sorted(GOOGLE_FILES))
def blazeface_export(request, blazeface_exports):
    return blazeface_exports(request.param)


@pytest.fixture(scope="module")
def parity_reports(blazeface_exports, shared):
    """``mobilekit parity`` of each model's export on the shared photos, computed once per model."""
    cache: dict[str, dict] = {}

    def report(name: str) -> dict:
        if name not in cache:
            cache[name] = check_artefacts(blazeface_exports(name)[1], shared / "images")
        return cache[name]

    return report


def test_exported_tflite_equals_googles_file(blazeface_export, shared):
    model, _, paths = blazeface_export
    deploy = model.deploy
    ours = open_runtime(paths["fp32.tflite"], 2)
    google = google_interpreter(google_file(shared, deploy.name))
    for photo in sorted((shared / "images").glob("*.jpg")):
        image = resize_to_input(read_image(photo), deploy.input_size, deploy.resize, deploy.pad_value)[0]
        regressors, logits = run_google(google, image)
        out = ours.run(image[None])  # RGB 0-255, the [-1, 1] scaling is inside our file
        np.testing.assert_allclose(out["regressors"], regressors, atol=1e-3, rtol=2e-5)
        np.testing.assert_allclose(out["classificators"], logits, atol=1e-3, rtol=2e-5)
        theirs = decode_outputs(deploy, {"regressors": regressors[0], "classificators": logits[0]}, deploy.input_size)
        mine = decode_outputs(deploy, {k: v[0] for k, v in out.items()}, deploy.input_size)
        assert len(mine) == len(theirs), photo.name
        if len(theirs):
            assert box_iou(theirs.boxes, mine.boxes).max(1).min() >= 0.99, photo.name


def test_float_files_pass_parity(blazeface_export, parity_reports):
    model, _, _ = blazeface_export
    report = parity_reports(model.deploy.name)
    float_files = [a for a in report["artefacts"] if a["precision"] != "int8"]
    assert {a["variant"] for a in float_files} == {"onnx", "onnx_sim", "fp32", "fp16"}
    assert all(a["passed"] for a in float_files), [(a["file"], a["verdict"]) for a in float_files]
    assert sum(a["faces"]["faces"] for a in float_files) > 0


def test_int8_keeps_its_outputs_float_and_writes_no_uint8_file(blazeface_export):
    """The declared ``outputs`` keep-float: no int8 tensor on the way from the heads to the outputs (one
    int8 scale cannot span logits down to -600); the family writes no int8_full (uint8 outputs)."""
    from ai_edge_litert.interpreter import Interpreter

    _, _, paths = blazeface_export
    assert "full.tflite" not in paths and "int8.tflite" in paths
    interpreter = Interpreter(str(paths["int8.tflite"]))
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    producer = {int(t): op for op in interpreter._get_ops_details() for t in op["outputs"]}
    pending = [int(d["index"]) for d in interpreter.get_output_details()]
    path = []
    while pending:
        op = producer[pending.pop()]
        path.append(op["op_name"])
        if op["op_name"] in ("RESHAPE", "CONCATENATION", "TRANSPOSE"):
            pending += [int(i) for i in op["inputs"] if i >= 0 and details[int(i)]["dtype"] != np.int32]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} & set(path) and "DEQUANTIZE" not in path and "QUANTIZE" not in path, path
    assert any(t["dtype"] == np.int8 for t in details.values())  # the rest is int8


def test_int8_judge_short_range(blazeface_exports, parity_reports, shared):
    """Short range int8 is not judged on the shared photos (PyTorch finds no face on the 3 its calibration
    never saw: a face judgement there could not fail), and finds PyTorch's 5 faces on the group photo."""
    model, _, paths = blazeface_exports("blazeface_short")
    (int8,) = [a for a in parity_reports("blazeface_short")["artefacts"] if a["variant"] == "int8"]
    assert not int8["passed"] and int8["faces"]["faces"] == 0 and int8["verdict"].startswith("not judged"), int8["verdict"]
    deploy = model.deploy
    image = resize_to_input(read_image(shared / "images" / "group_768x1024.jpg"), deploy.input_size, deploy.resize, deploy.pad_value)[0]
    ours = decode_outputs(deploy, {k: v[0] for k, v in open_runtime(paths["int8.tflite"], 2).run(image[None]).items()}, deploy.input_size)
    reference = decode_outputs(deploy, {k: v[0] for k, v in open_runtime(paths["fp32.tflite"], 2).run(image[None]).items()}, deploy.input_size)
    assert len(reference) == 5 and len(ours) == 5
    assert box_iou(reference.boxes, ours.boxes).max(1).min() >= 0.5


@pytest.mark.xfail(strict=True, reason="full range int8 loses a face: recall 6/7, precision 6/6, score drift <= 0.13 on the photos "
                   "calibration never saw, outputs and bilinear upsampling float; --keep-float auto (64 layers float) 7/7 but 7/11")
def test_int8_judge_full_range(parity_reports):
    (int8,) = [a for a in parity_reports("blazeface_full")["artefacts"] if a["variant"] == "int8"]
    assert int8["passed"], int8["verdict"]
