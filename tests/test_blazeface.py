"""BlazeFace: the PyTorch models with Google's weights compute what Google's .tflite files compute, and
decode as MediaPipe does (anchors, sigmoid clipping, weighted NMS, 6 named keypoints)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilekit.box_coder import box_iou
from mobilekit.checkpoint import atomic_save, load_weights
from mobilekit.errors import MobilekitError
from mobilekit.families import family_of
from mobilekit.families.blazeface.anchors import SsdAnchorConfig
from mobilekit.families.blazeface.decode import blazeface_detections, ssd_anchors
from mobilekit.image_io import read_image, resize_to_input, to_nchw
from mobilekit.inference import detect_image, load_model, run_model
from mobilekit.models import create_model
from mobilekit.models.blazeface import GOOGLE_WEIGHTS
from mobilekit.models.tflite_weights import TfliteGraph
from mobilekit.nms import weighted_nms
from tests.reference_checks import assert_folding_is_exact

GOOGLE_FILES = GOOGLE_WEIGHTS
PHOTOS = ("two_people_720x1280.jpg", "group_768x1024.jpg", "crowd_624x1024.jpg")


def google_file(shared, name):
    return shared / "weights" / GOOGLE_FILES[name]


def google_interpreter(path, **kwargs):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def run_google(interpreter, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Google's file on an RGB uint8 image at its input size, fed as MediaPipe feeds it (RGB / 127.5 - 1);
    returns (regressors [1, N, 16], classificators [1, N, 1])."""
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], (image.astype(np.float32) / 127.5 - 1.0)[None])
    interpreter.invoke()
    outputs = {o["shape"][-1]: interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()}
    return outputs[16], outputs[1]


@pytest.fixture(scope="module", params=sorted(GOOGLE_FILES))
def blazeface(request, shared):
    return load_model(request.param, google_file(shared, request.param))


def model_inputs(model, shared):
    return [resize_to_input(read_image(shared / "images" / p), model.deploy.input_size, model.deploy.resize)[0] for p in PHOTOS]


def test_sparse_weights_are_densified_like_litert(shared):
    """Every convolution constant of the sparse full-range file (DENSIFY + DEQUANTIZE in the graph) equals
    the tensor LiteRT computes from it."""
    path = google_file(shared, "blazeface_full")
    graph = TfliteGraph(path)
    interpreter = google_interpreter(path, experimental_preserve_all_tensors=True)
    run_google(interpreter, np.zeros((192, 192, 3), np.uint8))
    sparse = 0
    for op, op_name in zip(graph.graph.operators, graph.op_names):
        if op_name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            for index in op.inputs[1:3]:
                np.testing.assert_array_equal(graph.constant(int(index)), interpreter.get_tensor(int(index)))
            sparse += graph.stored_tensor(int(op.inputs[1])).sparsity is not None
    assert sparse == 46  # one per DENSIFY op of the file: sparse kernels were really decoded


def test_pytorch_equals_google_raw_outputs(blazeface, shared):
    """float32: within 1e-3 (px / logit) of Google's file on real photos, plus 2e-5 of the value for the
    hopeless anchors whose regressors reach hundreds of pixels (logits near -600: ~70 float32 ulps).
    float64: within the float32 rounding of Google's own file (PyTorch float32 and float64 differ by up to
    ~8e-3 on these photos)."""
    interpreter = google_interpreter(google_file(shared, blazeface.deploy.name))
    model64 = load_model(blazeface.deploy.name, google_file(shared, blazeface.deploy.name)).double()
    for image in model_inputs(blazeface, shared):
        regressors, logits = run_google(interpreter, image)
        ours = run_model(blazeface, to_nchw(image))
        ours64 = run_model(model64, to_nchw(image))
        assert ours["regressors"].shape == regressors.shape and ours["classificators"].shape == logits.shape
        np.testing.assert_allclose(ours["regressors"].numpy(), regressors, atol=1e-3, rtol=2e-5)
        np.testing.assert_allclose(ours["classificators"].numpy(), logits, atol=1e-3, rtol=2e-5)
        np.testing.assert_allclose(ours64["regressors"].numpy(), regressors, atol=1e-2, rtol=1e-4)
        np.testing.assert_allclose(ours64["classificators"].numpy(), logits, atol=1e-2, rtol=1e-4)


def test_pth_saved_from_it_loads_strictly(blazeface, tmp_path):
    atomic_save(blazeface.state_dict(), tmp_path / "blazeface.pth")
    model = create_model(blazeface.deploy.name)
    assert load_weights(model, tmp_path / "blazeface.pth").ok
    x = torch.rand(1, 3, *blazeface.deploy.input_size) * 255
    with torch.no_grad():
        for a, b in zip(blazeface.eval()(x), model.eval()(x)):
            assert torch.equal(a, b)


def test_folding_the_input_scaling_is_exact(blazeface):
    assert_folding_is_exact(blazeface)


def test_the_other_models_file_is_rejected_with_its_name(shared):
    with pytest.raises(MobilekitError, match="face_detection_short_range.tflite"):
        load_model("blazeface_full", google_file(shared, "blazeface_short"))


def test_mediapipe_anchor_layout():
    short = ssd_anchors(SsdAnchorConfig(strides=(8, 16, 16, 16), interpolated_scale_aspect_ratio=1.0), (128, 128))
    full = ssd_anchors(SsdAnchorConfig(strides=(4,), interpolated_scale_aspect_ratio=0.0), (192, 192))
    assert short.shape == (896, 4) and full.shape == (2304, 4)
    np.testing.assert_array_equal(short[:4], [[1 / 32, 1 / 32, 1, 1]] * 2 + [[3 / 32, 1 / 32, 1, 1]] * 2)  # 2 per 16x16 cell
    np.testing.assert_array_equal(short[512:519], [[1 / 16, 1 / 16, 1, 1]] * 6 + [[3 / 16, 1 / 16, 1, 1]])  # 3 layers x 2 per 8x8 cell
    np.testing.assert_allclose(full[[0, 1, 48, 2303]], [[1 / 96, 1 / 96, 1, 1], [3 / 96, 1 / 96, 1, 1], [1 / 96, 3 / 96, 1, 1], [95 / 96, 95 / 96, 1, 1]], rtol=1e-7)


def test_weighted_nms_blends_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.9, 0.6, 0.8, 0.3], np.float32)
    points = np.arange(8, dtype=np.float32).reshape(4, 2)
    out_boxes, out_scores, out_points = weighted_nms(boxes, scores, points, 0.3)
    cluster = np.array([0, 1, 3])
    expected = (boxes[cluster] * scores[cluster, None]).sum(0) / scores[cluster].sum()
    np.testing.assert_allclose(out_boxes, [expected, boxes[2]], rtol=1e-6)
    np.testing.assert_array_equal(out_scores, scores[[0, 2]])  # the best box's score, not a blend
    np.testing.assert_allclose(out_points[0], (points[cluster] * scores[cluster, None]).sum(0) / scores[cluster].sum(), rtol=1e-6)
    torch_out = weighted_nms(*(torch.from_numpy(a) for a in (boxes, scores, points)), 0.3)
    for a, b in zip(torch_out, (out_boxes, out_scores, out_points)):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-6)


def test_decode_numpy_equals_torch_and_clips_scores(blazeface, shared):
    image = model_inputs(blazeface, shared)[1]
    outputs = {k: v[0] for k, v in run_model(blazeface, to_nchw(image)).items()}
    anchors = ssd_anchors(blazeface.deploy.anchors, blazeface.deploy.input_size)
    cfg = family_of(blazeface.deploy).postprocess(blazeface.deploy)
    a = blazeface_detections(outputs["regressors"], outputs["classificators"], anchors, blazeface.deploy.input_size, cfg)
    b = blazeface_detections(outputs["regressors"].numpy(), outputs["classificators"].numpy(), anchors, blazeface.deploy.input_size, cfg)
    assert len(a) == len(b) >= 5
    for x, y in zip((a.boxes, a.scores, a.landmarks), (b.boxes, b.scores, b.landmarks)):
        np.testing.assert_allclose(x.numpy(), y, atol=1e-4)
    logits = np.full((len(anchors), 1), -1000.0, np.float32)
    logits[0] = 1000.0  # clipped to 100 first: sigmoid(100) == 1.0 in float32, not a NaN/overflow path
    one = blazeface_detections(np.zeros((len(anchors), 16), np.float32), logits, anchors, blazeface.deploy.input_size, cfg)
    assert len(one) == 1 and float(one.scores[0]) == 1.0


def test_family_declares_mediapipe_defaults_and_keypoints(blazeface):
    family = family_of(blazeface.deploy)
    post = family.postprocess(blazeface.deploy)
    expected_score = {"blazeface_short": 0.5, "blazeface_full": 0.6}[blazeface.deploy.name]
    assert (post.conf_threshold, post.nms_iou) == (expected_score, 0.3)
    assert family.keypoints(blazeface.deploy) == ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")
    assert len(family.output_columns("regressors", blazeface.deploy)) == 16


# What MediaPipe 0.10.14 itself finds with these files (tests/data/make_mediapipe_reference.py). Short range:
# identical. Full range: MediaPipe runs the file through its own XNNPACK build, whose scores differ from
# LiteRT's (and ours) by up to 4e-3 and boxes by 0.25 px; the faces are the same.
MEDIAPIPE_TOLERANCE = {"blazeface_short": dict(iou=0.9999, score=1e-4, px=0.01), "blazeface_full": dict(iou=0.99, score=5e-3, px=0.6)}


def test_same_faces_as_mediapipe(blazeface, shared):
    reference = json.loads((Path(__file__).parent / "data" / "mediapipe_face_detection.json").read_text())["models"][blazeface.deploy.name]
    tol = MEDIAPIPE_TOLERANCE[blazeface.deploy.name]
    total = 0
    for photo, faces in reference.items():
        found = detect_image(blazeface, read_image(shared / "images" / photo))
        assert len(found) == len(faces), photo
        if not faces:
            continue
        total += len(faces)
        ref_boxes = np.array([f["box_xyxy"] for f in faces])
        iou = box_iou(ref_boxes, found.boxes.astype(np.float64))
        match = iou.argmax(1)
        assert sorted(match.tolist()) == list(range(len(faces))) and iou.max(1).min() >= tol["iou"], photo
        np.testing.assert_allclose(found.scores[match], [f["score"] for f in faces], atol=tol["score"])
        np.testing.assert_allclose(found.landmarks[match], [f["landmarks_xy"] for f in faces], atol=tol["px"])
    assert total == {"blazeface_short": 5, "blazeface_full": 20}[blazeface.deploy.name]


def test_keypoints_are_in_mediapipes_order(blazeface, shared):
    """On the group photo (unmirrored, frontal faces) the person's right eye is on the image's left, both
    eyes above the mouth, the nose inside the box."""
    faces = detect_image(blazeface, read_image(shared / "images" / "group_768x1024.jpg"))
    assert len(faces) >= 5
    for box, points in zip(faces.boxes, faces.landmarks.reshape(-1, 6, 2)):
        right_eye, left_eye, nose, mouth = points[:4]
        assert right_eye[0] < nose[0] < left_eye[0]
        assert max(right_eye[1], left_eye[1]) < mouth[1]
        assert box[0] <= nose[0] <= box[2] and box[1] <= nose[1] <= box[3]


def test_predict_cli_with_googles_file(shared, tmp_path):
    out = tmp_path / "faces.json"
    args = ["predict", str(shared / "images" / "two_people_720x1280.jpg"), "--model", "blazeface_full", "--weights", str(google_file(shared, "blazeface_full")), "--json", str(out)]
    result = subprocess.run([sys.executable, "-m", "mobilekit", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    faces = json.loads(out.read_text())[0]["faces"]
    # Full range at MediaPipe's 0.6 finds the right-hand man's face (the shouting profile on the left scores ~0.58).
    assert len(faces) == 1 and faces[0]["score"] > 0.8 and len(faces[0]["landmarks_xy"]) == 12
    x1, y1, x2, y2 = faces[0]["box_xyxy"]
    assert 880 < x1 < x2 < 1100 and 90 < y1 < y2 < 300


def test_export_skips_the_uint8_output_file_with_a_warning():
    """The family declares uint8 outputs unusable: int8_full is dropped with the reason; RetinaFace keeps it."""
    from mobilekit.converters.export import _drop_unusable_uint8

    warnings = []
    formats = ("onnx", "fp32", "int8", "int8_full")
    kept = _drop_unusable_uint8(formats, create_model("blazeface_short").deploy, warnings.append)
    assert kept == ("onnx", "fp32", "int8") and len(warnings) == 1
    assert warnings[0].startswith("int8_full not written for blazeface_short: one uint8 scale per output")
    assert _drop_unusable_uint8(formats, create_model("retinaface_mnet025").deploy, warnings.append) == formats and len(warnings) == 1


@pytest.mark.parametrize("name, size", [("blazeface_short", 128), ("blazeface_full", 192), ("retinaface_mnet025", None)])
def test_the_models_own_size_is_the_default_where_the_family_needs_it(name, size):
    """Training, `mobilekit run` and `benchmark MODEL` use BlazeFace's own input size; other models keep
    the commands' defaults (256 for training and run, 640 for benchmarks)."""
    from mobilekit.benchmarks.cases import plan_cases
    from mobilekit.embedded_run import model_input_size
    from mobilekit.training.config import TrainConfig
    from mobilekit.training.loop import training_size

    deploy = create_model(name).deploy
    assert training_size(TrainConfig(model=name, data="d"), deploy) == (size or 256)
    assert model_input_size(name, 256) == (size or 256)
    assert {c.imgsz for c in plan_cases([name], [], [1], backends=("torch",))} == {(size or 640, size or 640)}
    if size:
        with pytest.raises(MobilekitError, match=f"trains at its own input size {size}x{size} only"):
            training_size(TrainConfig(model=name, data="d", imgsz=size + 32), deploy)
