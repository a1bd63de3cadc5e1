"""ADYOLOv5-Face: model contract, the "yolo" decoder (NumPy/torch mirror, YOLOv5-Face formulas,
in-graph decode in ONNX) and the YOLOv5-Face loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mobilekit.checkpoint import load_backbone
from mobilekit.detections import PostprocessConfig
from mobilekit.families import decode_outputs, family_of
from mobilekit.families.yolo.anchors import YoloAnchorConfig
from mobilekit.families.yolo.decode import decode_levels, level_sizes, num_predictions, yolo_detections
from mobilekit.families.yolo.loss import YoloFaceLoss, bbox_ciou
from mobilekit.image_io import read_image, resize_to_input, to_nchw
from mobilekit.inference import detect_image, run_model
from mobilekit.models import DeployModule, create_model
from mobilekit.models.adyolo import ADYOLO_ANCHORS, ADYOLOv5Face
from mobilekit.profiling import cost_breakdown, count_params

ADYOLO_PARAMS = 592_236




@pytest.fixture(scope="module")
def model() -> ADYOLOv5Face:
    torch.manual_seed(0)
    return create_model("adyolov5_face").eval()


def random_levels(batch: int, input_hw: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1.5, (batch, 48, r, c)).astype(np.float32) for r, c in level_sizes(ADYOLO_ANCHORS, input_hw)]


# -- model contract ------------------------------------------------------------------------------
def test_size_config_and_output_layout(model):
    assert count_params(model) == ADYOLO_PARAMS < 1_500_000
    assert cost_breakdown(model, (64, 64))[-1].params == ADYOLO_PARAMS
    deploy = model.deploy
    assert (deploy.channel_order, deploy.mean, deploy.std) == ("RGB", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))
    assert (deploy.resize, deploy.pad_value, deploy.decoder, deploy.output_names) == ("letterbox", 114.0, "yolo", ("predictions",))
    meta = json.loads(json.dumps(deploy.to_dict()))
    assert meta["anchors"]["strides"] == [4, 8, 16, 32] and meta["anchors"]["anchors_wh"][0][0] == [6, 7]
    x = torch.rand(2, 3, 100, 132) * 255  # not a multiple of 32: ceil-sized levels
    with torch.no_grad():
        raw = model(x)
        (predictions,) = model.deploy_outputs(raw)
    assert raw.input_hw == (100, 132)
    assert [tuple(t.shape[-2:]) for t in raw.levels] == [(25, 33), (13, 17), (7, 9), (4, 5)]
    assert predictions.shape == (2, num_predictions(ADYOLO_ANCHORS, (100, 132)), 16)


def test_trains_at_batch_size_one_and_eval_matches_across_batch_sizes(model):
    torch.manual_seed(1)
    net = create_model("adyolov5_face").train()
    raw = net(torch.rand(1, 3, 64, 64) * 255)
    sum(level.square().mean() for level in raw.levels).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    x = torch.rand(8, 3, 64, 96, generator=torch.Generator().manual_seed(2)) * 255
    with torch.no_grad():
        batched = model.deploy_outputs(model(x))[0]
        single = model.deploy_outputs(model(x[5:6]))[0]
    torch.testing.assert_close(batched[5:6], single, atol=1e-5, rtol=0)


def test_loads_the_imagenet_backbone(shared):
    assert load_backbone(create_model("adyolov5_face"), shared / "weights" / "mobilenetv1_025_imagenet.tar").ok


def test_folding_input_preprocessing_keeps_the_outputs():
    torch.manual_seed(3)
    net = create_model("adyolov5_face").eval()
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        before = net.deploy_outputs(net(x))[0]
        net.fold_input_preprocessing()
        after = net.deploy_outputs(net(x))[0]
    assert net.input_std_is_one and net.first_conv() is net.body.stage1[0][0]
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


def test_detect_image_undoes_the_letterbox(model, shared_images):
    image = read_image(shared_images[0])
    post = PostprocessConfig(conf_threshold=0.0, max_detections=50)
    dets = detect_image(model, image, imgsz=(128, 128), post=post)
    assert len(dets) > 0 and dets.boxes.shape[1:] == (4,) and dets.landmarks.shape[1:] == (10,)
    resized, transform = resize_to_input(image, (128, 128), "letterbox", 114)
    assert transform.pad_x + transform.pad_y > 0 and resized[0, 0].tolist() == [114, 114, 114]
    single = {k: v[0] for k, v in run_model(model, to_nchw(resized)).items()}
    in_input = decode_outputs(model.deploy, single, (128, 128), post).numpy()
    np.testing.assert_allclose(dets.boxes, transform.to_image(in_input.boxes), rtol=1e-6)
    np.testing.assert_allclose(dets.scores, in_input.scores)


# -- decoder -------------------------------------------------------------------------------------
def test_numpy_and_torch_decode_agree():
    levels = random_levels(2, (96, 160))
    decoded_np = decode_levels(levels, ADYOLO_ANCHORS, (96, 160))
    decoded_t = decode_levels([torch.from_numpy(x) for x in levels], ADYOLO_ANCHORS, (96, 160))
    np.testing.assert_allclose(decoded_t.numpy(), decoded_np, atol=1e-6, rtol=1e-6)
    cfg = PostprocessConfig(conf_threshold=0.3)
    det_np = yolo_detections(decoded_np[0], (96, 160), cfg)
    det_t = yolo_detections(torch.from_numpy(decoded_np[0]), (96, 160), cfg).numpy()
    assert len(det_np) > 5
    for a, b in zip((det_np.boxes, det_np.scores, det_np.landmarks), (det_t.boxes, det_t.scores, det_t.landmarks)):
        np.testing.assert_array_equal(a, b)


def test_decode_follows_the_yolov5_face_formulas():
    height, width = 64, 96
    cfg = YoloAnchorConfig(anchors=(((10, 13), (16, 30)),), strides=(8,))
    raw = np.random.default_rng(4).normal(0, 1, (1, 32, 8, 12)).astype(np.float64)
    decoded = decode_levels([raw.astype(np.float32)], cfg, (height, width))[0]
    row, col, anchor = 5, 7, 1
    v = raw[0, anchor * 16 : anchor * 16 + 16, row, col]
    sig = 1 / (1 + np.exp(-v))
    aw, ah = cfg.anchors[0][anchor]
    cx, cy = (sig[0] * 2 - 0.5 + col) * 8, (sig[1] * 2 - 0.5 + row) * 8
    bw, bh = (sig[2] * 2) ** 2 * aw, (sig[3] * 2) ** 2 * ah
    lm = np.stack([v[5:15:2] * aw + col * 8, v[6:15:2] * ah + row * 8], axis=1).ravel()
    expected = np.concatenate([[cx / width, cy / height, bw / width, bh / height, sig[4]], lm / np.tile([width, height], 5), [sig[15]]])
    np.testing.assert_allclose(decoded[(row * 12 + col) * 2 + anchor], expected, atol=1e-6, rtol=1e-5)


def test_decode_outputs_gives_pixel_boxes_scored_obj_times_cls():
    predictions = np.zeros((3, 16), dtype=np.float32)
    predictions[:, :4] = [[0.5, 0.5, 0.25, 0.5], [0.52, 0.5, 0.25, 0.5], [0.1, 0.1, 0.1, 0.1]]
    predictions[:, 4], predictions[:, 15] = [0.9, 0.8, 0.5], [0.9, 1.0, 0.5]
    predictions[:, 5:15] = 0.25
    deploy = create_model("adyolov5_face").deploy
    dets = decode_outputs(deploy, {"predictions": predictions}, (100, 200), PostprocessConfig(conf_threshold=0.2, nms_iou=0.5))
    np.testing.assert_allclose(dets.scores, [0.81, 0.25], rtol=1e-6)  # the second box is suppressed
    np.testing.assert_allclose(dets.boxes[0], [75, 25, 125, 75], rtol=1e-6)
    np.testing.assert_allclose(dets.landmarks[0], [50, 25] * 5, rtol=1e-6)


def test_exported_onnx_decodes_in_graph_like_the_numpy_mirror(model, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(5)) * 255
    path = tmp_path / "adyolo.onnx"
    torch.onnx.export(DeployModule(model).eval(), (x,), str(path), opset_version=17, input_names=["images"], output_names=["predictions"], dynamo=False)
    (got,) = onnxruntime.InferenceSession(str(path)).run(None, {"images": x.numpy()})
    with torch.no_grad():
        levels = [t.numpy() for t in model(x).levels]
    np.testing.assert_allclose(got, decode_levels(levels, ADYOLO_ANCHORS, (64, 96)), atol=1e-5, rtol=1e-4)


# -- loss ----------------------------------------------------------------------------------------
FACES = torch.tensor(
    [
        [0.10, 0.10, 0.40, 0.50, 0.20, 0.20, 0.30, 0.20, 0.25, 0.30, 0.20, 0.40, 0.30, 0.40, 1.0],
        [0.60, 0.50, 0.75, 0.70] + [-1.0] * 10 + [-1.0],
    ]
)


def test_ciou_is_one_for_identical_boxes_and_penalises_distance():
    box = torch.tensor([[5.0, 5.0, 2.0, 3.0]])
    torch.testing.assert_close(bbox_ciou(box, box), torch.ones(1), atol=1e-5, rtol=0)
    far = torch.tensor([[9.0, 5.0, 2.0, 3.0]])
    assert bbox_ciou(far, box) < 0  # no overlap and a centre-distance penalty


def test_assignment_uses_anchor_ratio_and_neighbour_cells():
    net = create_model("adyolov5_face")
    loss = YoloFaceLoss(net)
    face = torch.tensor([[0.30, 0.30, 0.42, 0.46] + [0.35] * 10 + [1.0]])  # 15.4 x 20.5 px at 128
    table = loss.target_table([face], torch.device("cpu"))
    (image, anchor, row, col), box, landmarks, has_lm, anchors = loss.assign(table, 1, (16, 16), (128, 128))
    # stride 8: anchors (18,23) (26,33) (37,47) all within ratio 4 -> 3 anchors x 3 cells
    assert len(image) == 9 and set(anchor.tolist()) == {0, 1, 2}
    centre = ((0.30 + 0.42) / 2 * 16, (0.30 + 0.46) / 2 * 16)  # (5.76, 6.08): own cell + right + up
    assert {(int(c), int(r)) for c, r in zip(col, row)} == {(5, 6), (6, 6), (5, 5)}
    assert box[:, :2].min() >= -0.5 and box[:, :2].max() <= 1.5 and has_lm.all()
    torch.testing.assert_close(landmarks[:, 0] + col.float(), torch.full((9,), 0.35 * 16))
    # stride 32 anchors (>= 174 px) are more than 4x the face: no positives
    assert loss.assign(table, 3, (4, 4), (128, 128))[0][0].numel() == 0


@pytest.mark.slow
def test_loss_decreases_when_overfitting_one_batch():
    torch.manual_seed(6)
    net = create_model("adyolov5_face").train()
    criterion = YoloFaceLoss(net)
    images = torch.rand(2, 3, 64, 64) * 255
    targets = [FACES, FACES[:1]]
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        total, parts = criterion(net(images), targets)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert set(parts) == {"box", "obj", "cls", "landmarks"}
    assert all(np.isfinite(losses)) and losses[-1] < 0.6 * losses[0]


def test_absent_landmarks_contribute_no_loss_and_no_gradient():
    torch.manual_seed(7)
    net = create_model("adyolov5_face").eval()
    criterion = YoloFaceLoss(net)
    with torch.no_grad():
        raw = net(torch.rand(1, 3, 64, 64) * 255)
    levels = [t.clone().requires_grad_(True) for t in raw.levels]
    no_landmarks = FACES[1:].clone()
    garbage = no_landmarks.clone()
    garbage[:, 4:14] = torch.tensor([7.0, -3.0, float("nan"), 1e6, 0.5, 0.5, 2.0, 2.0, -9.0, 4.0])
    (total_a, parts_a) = criterion(type(raw)(tuple(levels), raw.input_hw), [no_landmarks])
    total_a.backward()
    for level in levels:
        assert torch.all(level.grad.view(1, 3, 16, *level.shape[-2:])[:, :, 5:15] == 0)
    assert float(parts_a["landmarks"]) == 0.0
    total_b, _ = criterion(type(raw)(tuple(t.detach() for t in levels), raw.input_hw), [garbage])
    assert float(total_b) == pytest.approx(float(total_a.detach()), rel=0, abs=0)


def test_images_without_faces_only_train_objectness_towards_zero():
    torch.manual_seed(8)
    net = create_model("adyolov5_face").train()
    total, parts = YoloFaceLoss(net)(net(torch.rand(2, 3, 64, 64) * 255), [torch.zeros(0, 15), torch.zeros(0, 15)])
    total.backward()
    assert float(parts["box"]) == float(parts["cls"]) == float(parts["landmarks"]) == 0.0 < float(parts["obj"])
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_every_path_decodes_with_the_models_own_nms():
    """predict, eval, parity, benchmark and the package's golden files all take ADYOLOv5-Face's NMS 0.5
    (RetinaFace's 0.4 used to leak into all but the golden files)."""
    from mobilekit.flutter.package import decoder_settings

    deploy = create_model("adyolov5_face").deploy
    post = family_of(deploy).postprocess(deploy)
    assert post.nms_iou == deploy.nms_iou == 0.5 and post.nms_offset == 0.0
    assert decoder_settings(deploy, (640, 640), None)["nms_iou"] == post.nms_iou
    assert family_of(deploy).postprocess(deploy, nms_iou=0.3).nms_iou == 0.3  # a CLI flag overrides
    predictions = np.zeros((2, 16), dtype=np.float32)  # two faces overlapping at IoU 0.45
    predictions[:, :4] = [[0.4, 0.5, 0.2, 0.2], [0.4 + 0.2 * (1 - 0.9 / 1.45), 0.5, 0.2, 0.2]]
    predictions[:, 4], predictions[:, 15] = 0.9, 1.0
    kept = decode_outputs(deploy, {"predictions": predictions}, (100, 100))
    assert len(kept) == 2  # both kept at 0.5; RetinaFace's 0.4 would suppress one
    assert len(decode_outputs(deploy, {"predictions": predictions}, (100, 100), family_of(deploy).postprocess(deploy, nms_iou=0.4))) == 1
