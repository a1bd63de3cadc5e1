"""YuNet (libfacedetection) in PyTorch against its authors' files and OpenCV's FaceDetectorYN.

* the authors' MMDetection checkpoints load strictly, keys unchanged;
* the raw outputs equal ONNX Runtime on the authors' ``yunet_{n,s}_dynamic.onnx`` (BGR pixels as they are,
  padded bottom/right to a multiple of 32, which is what OpenCV feeds it);
* decoding finds the faces ``cv2.FaceDetectorYN`` finds (``tests/data/yunet_opencv_reference.json``, written by
  ``tests/data/make_yunet_reference.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilekit.checkpoint import read_state_dict
from mobilekit.detections import PostprocessConfig
from mobilekit.errors import MobilekitError
from mobilekit.families.yunet.decode import YUNET_NMS_OFFSET, YuNetRawOutputs, decode_yunet
from mobilekit.families.yunet.points import PointConfig, grid_points
from mobilekit.image_io import read_image
from mobilekit.models.yunet import STRIDES, YUNET_VARIANTS, YuNet, load_authors_weights, yunet_deploy

PHOTOS = ("two_people_720x1280.jpg", "group_768x1024.jpg", "crowd_624x1024.jpg", "bus_1080x810.jpg", "crowd_898x1600.jpg", "crowd_1150x2048.jpg")
QUICK_PHOTO = "crowd_624x1024.jpg"  # 624 is not a multiple of 32: padding and cropping are exercised
REFERENCE = Path(__file__).parent / "data" / "yunet_opencv_reference.json"
# Parameters as PyTorch counts them (BatchNorm weight and bias included, running statistics not): the counts
# libfacedetection.train publishes. The authors' ONNX convolutions hold 2 x (BatchNorm channels) fewer: folded.
PARAMETERS = {"n": 75_856, "s": 54_608}
BATCHNORM_CHANNELS = {"n": 1_008, "s": 752}


def authors_pth(shared: Path, variant: str) -> Path:
    return shared / "weights" / f"yunet_{variant}.pth"


def load(shared: Path, variant: str) -> YuNet:
    return load_authors_weights(YuNet(variant), authors_pth(shared, variant)).eval()


@pytest.fixture(scope="module")
def models(shared):
    return {variant: load(shared, variant) for variant in "ns"}


def nchw(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].float()


@torch.no_grad()
def deploy_outputs(model: YuNet, rgb: np.ndarray) -> dict[str, np.ndarray]:
    outputs = model.deploy_outputs(model(nchw(rgb)))
    return {name: out[0].numpy() for name, out in zip(model.deploy.output_names, outputs)}


def onnx_outputs(shared: Path, variant: str, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """The authors' dynamic ONNX on what OpenCV feeds it, each level cropped to ``ceil(H/s) x ceil(W/s)``."""
    ort = pytest.importorskip("onnxruntime")
    height, width = rgb.shape[:2]
    padded = np.zeros((math.ceil(height / 32) * 32, math.ceil(width / 32) * 32, 3), dtype=np.float32)
    padded[:height, :width] = rgb[..., ::-1]  # BGR, 0-255, black padding at the bottom/right
    session = ort.InferenceSession(str(shared / "weights" / f"yunet_{variant}_dynamic.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = dict(zip(names, session.run(None, {"input": padded.transpose(2, 0, 1)[None]})))
    cropped = {}
    for name, value in results.items():
        stride = int(name.split("_")[1])
        grid = value[0].reshape(padded.shape[0] // stride, padded.shape[1] // stride, -1)
        cropped[name] = grid[: math.ceil(height / stride), : math.ceil(width / stride)].reshape(-1, grid.shape[-1])
    return cropped


def split_levels(output: np.ndarray, input_hw: tuple[int, int]) -> dict[int, np.ndarray]:
    sizes = [math.ceil(input_hw[0] / s) * math.ceil(input_hw[1] / s) for s in STRIDES]
    return dict(zip(STRIDES, np.split(output, np.cumsum(sizes)[:-1])))


def opencv_cfg(threshold: float, nms_iou: float) -> PostprocessConfig:
    """FaceDetectorYN's post-processing: no cap on the number of faces."""
    return PostprocessConfig(conf_threshold=threshold, nms_iou=nms_iou, pre_nms_top_k=5000, max_detections=100_000, nms_offset=YUNET_NMS_OFFSET)


# -- weights -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["n", "s"])
def test_authors_checkpoint_loads_strictly_with_its_own_keys(shared, variant):
    model = YuNet(variant)
    state = read_state_dict(authors_pth(shared, variant))
    assert list(state) and set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[variant] == YUNET_VARIANTS[variant]["params"]
    bn = sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn == BATCHNORM_CHANNELS[variant]
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(shared / "weights" / f"yunet_{variant}_dynamic.onnx")).graph
    conv_inputs = {name for node in graph.node if node.op_type == "Conv" for name in node.input[1:]}
    assert sum(int(np.prod(t.dims)) for t in graph.initializer if t.name in conv_inputs) == PARAMETERS[variant] - 2 * bn


def test_the_other_variants_checkpoint_is_rejected_with_its_name(shared):
    with pytest.raises(MobilekitError) as info:
        load_authors_weights(YuNet("n"), authors_pth(shared, "s"))
    message = str(info.value)
    assert "yunet_s.pth" in message and "yunet_n" in message and "\n" not in message


def test_registered_names_and_deploy_config():
    from mobilekit.models.registry import create_model

    for variant in "ns":
        model = create_model(f"yunet_{variant}")
        assert isinstance(model, YuNet) and model.variant == variant
    deploy = yunet_deploy("yunet_s")
    assert (deploy.channel_order, deploy.mean, deploy.std) == ("BGR", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert deploy.output_names == ("cls", "obj", "bbox", "kps") and deploy.decoder == "yunet"
    assert (deploy.score_threshold, deploy.nms_iou) == (0.9, 0.3)  # cv2.FaceDetectorYN's defaults
    assert deploy.anchors == PointConfig((8, 16, 32))


# -- raw outputs ---------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("hw", [(64, 64), (100, 150), (33, 31)])
def test_raw_output_rows_match_the_points(hw):
    model = YuNet("s").eval()
    raw = model(torch.rand(2, 3, *hw) * 255)
    assert isinstance(raw, YuNetRawOutputs)
    rows = len(grid_points(PointConfig(), hw))
    assert [tuple(t.shape) for t in raw] == [(2, rows, 1), (2, rows, 1), (2, rows, 4), (2, rows, 10)]


@torch.no_grad()
def test_folding_the_input_channel_order_is_exact(shared):
    model = load(shared, "n")
    images = torch.rand(1, 3, 96, 128) * 255
    before = model(images)
    model.fold_input_preprocessing()
    assert model.channel_permutation is None
    for a, b in zip(before, model(images)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def assert_equal_to_onnx(model: YuNet, shared: Path, variant: str, photo: str) -> None:
    rgb = read_image(shared / "images" / photo)
    ours = deploy_outputs(model, rgb)
    theirs = onnx_outputs(shared, variant, rgb)
    assert len(theirs) == 12
    for name, output in ours.items():
        for stride, level in split_levels(output, rgb.shape[:2]).items():
            np.testing.assert_allclose(level, theirs[f"{name}_{stride}"], atol=1e-4, rtol=0, err_msg=f"{photo} {name}_{stride}")


@pytest.mark.parametrize("variant", ["n", "s"])
def test_raw_outputs_equal_the_authors_onnx(models, shared, variant):
    assert_equal_to_onnx(models[variant], shared, variant, QUICK_PHOTO)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["n", "s"])
def test_raw_outputs_equal_the_authors_onnx_on_every_photo(models, shared, variant):
    for photo in PHOTOS:
        assert_equal_to_onnx(models[variant], shared, variant, photo)


# -- decode ------------------------------------------------------------------------------------------


def assert_same_faces_as_opencv(model: YuNet, shared: Path, photo: str) -> None:
    reference = json.loads(REFERENCE.read_text())
    assert reference["model"] == model.deploy.name
    rgb = read_image(shared / "images" / photo)
    outputs = deploy_outputs(model, rgb)
    points = grid_points(model.deploy.anchors, rgb.shape[:2])
    for threshold, photos in reference["faces"].items():
        faces = np.array(photos[photo], dtype=np.float64).reshape(-1, 15)
        found = decode_yunet(*outputs.values(), points, opencv_cfg(float(threshold), reference["nms_iou"]))
        assert len(found) == len(faces), f"{photo} at {threshold}: {len(found)} faces, FaceDetectorYN {len(faces)}"
        np.testing.assert_allclose(found.scores, faces[:, 0], atol=1e-3, err_msg=f"{photo} at {threshold}")
        np.testing.assert_allclose(found.boxes, faces[:, 1:5], atol=1.0, err_msg=f"{photo} at {threshold}")
        np.testing.assert_allclose(found.landmarks, faces[:, 5:], atol=1.0, err_msg=f"{photo} at {threshold}")


def test_same_faces_as_opencv(models, shared):
    assert_same_faces_as_opencv(models["s"], shared, QUICK_PHOTO)


@pytest.mark.slow
def test_same_faces_as_opencv_on_every_photo(models, shared):
    """The two large crowds at 0.5 (several hundred faces) need NMS on OpenCV's truncated integer boxes."""
    for photo in PHOTOS:
        assert_same_faces_as_opencv(models["s"], shared, photo)


def test_decode_numpy_equals_torch(models, shared):
    model = models["s"]
    rgb = read_image(shared / "images" / QUICK_PHOTO)
    outputs = deploy_outputs(model, rgb)
    points = grid_points(model.deploy.anchors, rgb.shape[:2])
    cfg = opencv_cfg(0.5, 0.3)
    a = decode_yunet(*outputs.values(), points, cfg)
    b = decode_yunet(*(torch.from_numpy(o) for o in outputs.values()), torch.from_numpy(points), cfg)
    assert isinstance(b.boxes, torch.Tensor) and len(a) == len(b) > 10
    for x, y in zip((a.boxes, a.scores, a.landmarks), (b.boxes, b.scores, b.landmarks)):
        np.testing.assert_allclose(x, y.numpy(), atol=1e-4)


def test_decode_formula_on_a_hand_made_row():
    points = np.array([[16.0, 24.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0]], dtype=np.float32)
    cls = np.array([[0.81], [0.1]], dtype=np.float32)
    obj = np.array([[1.2], [0.1]], dtype=np.float32)  # clamped to 1 before the square root
    bbox = np.array([[0.5, -0.25, math.log(4.0), 0.0], [0, 0, 0, 0]], dtype=np.float32)
    kps = np.tile(np.array([[1.0, 2.0]], dtype=np.float32), (2, 5))
    found = decode_yunet(cls, obj, bbox, kps, points, opencv_cfg(0.5, 0.3))
    assert len(found) == 1
    np.testing.assert_allclose(found.scores, [0.9], rtol=1e-6)
    np.testing.assert_allclose(found.boxes, [[20.0 - 16.0, 22.0 - 4.0, 20.0 + 16.0, 22.0 + 4.0]])
    np.testing.assert_allclose(found.landmarks, [[24.0, 40.0] * 5])
    empty = decode_yunet(cls, obj, bbox, kps, points, opencv_cfg(0.95, 0.3))
    assert len(empty) == 0 and empty.landmarks.shape == (0, 10)
