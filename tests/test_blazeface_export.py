"""BlazeFace through mobilekit's own export: the TFLite fp32 file mobilekit writes from the PyTorch model
computes what Google's file computes, finds the same faces, and passes ``mobilekit parity``."""

from __future__ import annotations

from pathlib import Path

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
def blazeface_export(request, shared, tmp_path_factory):
    """ONNX, simplified ONNX and TFLite fp32 of the model with Google's weights, at its own input size
    (about 30 s each on 2 cores)."""
    from mobilekit.converters import build_source_model, export_model, source_metadata

    weights = google_file(shared, request.param)
    model = build_source_model(request.param, weights)
    out = tmp_path_factory.mktemp(request.param)
    paths = export_model(model, model.deploy.input_size, out, formats=("onnx", "onnx_sim", "fp32"), source=source_metadata(weights, None, request.param))
    return model, out, {p.name.rsplit("_", 1)[-1]: p for p in paths}


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


def test_parity_passes(blazeface_export, shared):
    _, export_dir, _ = blazeface_export
    report = check_artefacts(export_dir, shared / "images")
    assert report["passed"], [(a["file"], a["verdict"]) for a in report["artefacts"]]
    assert {a["variant"] for a in report["artefacts"]} == {"onnx", "onnx_sim", "fp32"}
    assert sum(a["faces"]["faces"] for a in report["artefacts"]) > 0


def test_flutter_package_alone_finds_mediapipes_faces(blazeface_export, shared, tmp_path):
    """The packaged folder (model.tflite, anchors.json, model_meta.json) decoded by the NumPy mirror of the
    Dart decoder finds, on the shared photos, the faces MediaPipe itself finds (in photo pixels), and its
    golden detections are what that decoder gives on the golden outputs."""
    import json

    from mobilekit.flutter import reference_decoder as ref
    from mobilekit.flutter.package import package_export
    from tests.test_blazeface import MEDIAPIPE_TOLERANCE
    from tests.test_package import load_package

    model, export_dir, _ = blazeface_export
    folder = package_export(export_dir, tmp_path / "package", "fp32")
    meta, anchors, settings, runtime = load_package(folder)
    assert meta["decoder"]["kind"] == "blazeface" and len(anchors) == {"blazeface_short": 896, "blazeface_full": 2304}[model.deploy.name]
    assert meta["landmark_order"] == ["right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion"]
    golden = {name: np.load(folder / rel) for name, rel in meta["golden"]["outputs"].items()}
    expected = json.loads((folder / "golden" / "expected_detections.json").read_text())["faces"]
    assert expected == ref.detect(golden, anchors, settings).to_json() and len(expected) >= 5
    reference = json.loads((Path(__file__).parent / "data" / "mediapipe_face_detection.json").read_text())
    tol = MEDIAPIPE_TOLERANCE[model.deploy.name]
    resize = meta["input"]["resize"]
    for photo, faces in reference["models"][model.deploy.name].items():
        image = read_image(shared / "images" / photo)
        height, width = meta["input"]["shape"][1:3]
        transform = ref.letterbox_transform(image.shape[:2], (height, width), resize["mode"])
        found = ref.undo_letterbox(ref.detect(runtime.run(resize_to_input(image, (height, width), resize["mode"], resize["pad_value"])[0][None]), anchors, settings).numpy(), transform)
        assert len(found) == len(faces), photo
        if faces:
            iou = box_iou(np.array([f["box_xyxy"] for f in faces]), found.boxes.astype(np.float64))
            assert iou.max(1).min() >= tol["iou"], photo
