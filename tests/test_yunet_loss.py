"""YuNet's training loss: EIoU, SimOTA and the whole criterion (mobilekit.families.yunet.loss)."""

from __future__ import annotations

import pytest
import torch

from mobilekit.families.yunet.decode import YuNetRawOutputs
from mobilekit.families.yunet.loss import (
    ASSIGN_OFFSET,
    YuNetLoss,
    eiou_loss,
    pairwise_iou,
    simota_assign,
)
from mobilekit.families.yunet.points import PointConfig, grid_points_torch

POINTS = PointConfig()


def raw_zeros(batch: int, num_points: int, requires_grad: bool = False, dtype=torch.float32) -> YuNetRawOutputs:
    return YuNetRawOutputs(
        *(torch.zeros(batch, num_points, c, dtype=dtype, requires_grad=requires_grad) for c in (1, 1, 4, 10))
    )


def face_row(box_px, landmarks_px, image_hw, has_landmarks=True) -> torch.Tensor:
    h, w = image_hw
    box = [box_px[0] / w, box_px[1] / h, box_px[2] / w, box_px[3] / h]
    lm = [v / (w if i % 2 == 0 else h) for i, v in enumerate(landmarks_px)] if has_landmarks else [0.0] * 10
    return torch.tensor([box + lm + [1.0 if has_landmarks else -1.0]], dtype=torch.float32)


# ---------------------------------------------------------------- EIoU


def test_eiou_zero_for_identical_boxes():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [10.0, 5.0, 40.0, 50.0]])
    assert torch.allclose(eiou_loss(boxes, boxes), torch.zeros(2), atol=1e-6)


def test_eiou_hand_computed_values():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 10.0, 9.5], [2.0, 0.0, 3.0, 1.0]])
    # overlap 1, union 7: d = 6/7 >= 0.1 -> d - 0.05
    # IoU 0.95: d = 0.05 < 0.1 -> 0.5 * 0.05**2 / 0.1 = 0.0125
    # disjoint, 1 apart, same row: extended intersection -1, union 3: d = 4/3 -> 4/3 - 0.05
    expected = torch.tensor([6 / 7 - 0.05, 0.0125, 4 / 3 - 0.05])
    assert torch.allclose(eiou_loss(pred, target), expected, atol=1e-5)


def test_eiou_gives_disjoint_boxes_a_gradient_towards_the_target():
    pred = torch.tensor([[0.0, 0.0, 1.0, 1.0]], requires_grad=True)
    eiou_loss(pred, torch.tensor([[2.0, 0.0, 3.0, 1.0]])).sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[0, 2] < 0  # growing the right edge towards the target lowers the loss


# ---------------------------------------------------------------- SimOTA


def assign_points(hw):
    pts = grid_points_torch(POINTS, hw)
    return torch.cat([pts[:, :2] + ASSIGN_OFFSET * pts[:, 2:], pts[:, 2:]], dim=1)


def test_simota_every_face_gets_a_point_in_its_centre_region():
    torch.manual_seed(0)
    hw = (320, 320)
    pts = assign_points(hw)
    gts = torch.tensor([[20.0, 30.0, 44.0, 58.0], [150.0, 40.0, 230.0, 140.0], [40.0, 170.0, 200.0, 310.0]])
    n = pts.shape[0]
    centres = pts[:, :2] + torch.randn(n, 2) * 10
    sizes = torch.rand(n, 2) * 100 + 8
    pred = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    gt_index, iou = simota_assign(torch.rand(n), pts, pred, gts)
    assert gt_index.shape == (n,) and iou.shape == (n,)
    assert gt_index.min() >= -1 and gt_index.max() < len(gts)
    centre = (gts[:, :2] + gts[:, 2:]) / 2
    for g in range(len(gts)):
        mine = gt_index == g
        assert mine.any(), f"face {g} got no point"
        offset = (pts[mine, :2] - centre[g]).abs()
        assert (offset < 2.5 * pts[mine, 2:]).all(dim=1).any()
        assert torch.allclose(iou[mine], pairwise_iou(pred[mine], gts[g : g + 1])[:, 0])
    assert (iou[gt_index < 0] == 0).all()


def test_simota_dynamic_k_from_the_best_ious():
    hw = (320, 320)
    pts = assign_points(hw)
    gt = torch.tensor([[100.0, 100.0, 220.0, 220.0]])
    pred = gt.expand(pts.shape[0], 4)  # every point predicts the face exactly: 10 best IoUs of 1
    gt_index, iou = simota_assign(torch.full((pts.shape[0],), 0.5), pts, pred, gt)
    assert int((gt_index == 0).sum()) == 10
    assert torch.allclose(iou[gt_index == 0], torch.ones(10))
    # a poor prediction everywhere (IoU < 0.1 with the face) still gives the face one point
    far = torch.tensor([[0.0, 0.0, 30.0, 30.0]]).expand(pts.shape[0], 4)
    gt_index, _ = simota_assign(torch.full((pts.shape[0],), 0.5), pts, far, gt)
    assert int((gt_index == 0).sum()) == 1


def test_simota_contested_point_goes_to_its_cheapest_face():
    hw = (320, 320)
    pts = assign_points(hw)
    gts = torch.tensor([[100.0, 100.0, 200.0, 200.0], [108.0, 108.0, 208.0, 208.0]])
    pred = gts[:1].expand(pts.shape[0], 4)  # every prediction is exactly face 0 (IoU 1; 0.73 with face 1)
    scores = torch.exp(-((pts[:, :2] - 150.0) ** 2).sum(1) / 5000.0)  # distinct, highest at face 0's centre
    alone = [simota_assign(scores, pts, pred, gts[g : g + 1])[0] == 0 for g in range(2)]
    contested = alone[0] & alone[1]
    assert contested.any()  # both faces want some points
    gt_index, _ = simota_assign(scores, pts, pred, gts)
    assert (gt_index[alone[0]] == 0).all()  # face 0 (cheaper: IoU 1) keeps all its points, the contested ones too
    assert ((gt_index == 1) & alone[0]).sum() == 0
    assert ((gt_index >= 0) == (alone[0] | alone[1])).all()  # nothing else changes hands


def test_simota_no_faces_or_no_candidates():
    pts = assign_points((64, 64))
    pred = torch.tensor([[0.0, 0.0, 8.0, 8.0]]).expand(pts.shape[0], 4)
    gt_index, iou = simota_assign(torch.rand(pts.shape[0]), pts, pred, torch.zeros(0, 4))
    assert (gt_index == -1).all() and (iou == 0).all()
    gt_index, _ = simota_assign(torch.rand(pts.shape[0]), pts, pred, torch.tensor([[1000.0, 1000.0, 1010.0, 1010.0]]))
    assert (gt_index == -1).all()


# ---------------------------------------------------------------- YuNetLoss


def test_loss_finite_without_faces():
    hw = (64, 64)
    criterion = YuNetLoss(POINTS, hw)
    n = criterion.points.shape[0]
    raw = raw_zeros(2, n, requires_grad=True)
    total, parts = criterion(raw, [torch.zeros(0, 15), torch.zeros(0, 15)])
    assert torch.isfinite(total)
    assert set(parts) == {"box", "cls", "obj", "landmarks"}
    assert parts["box"] == 0 and parts["cls"] == 0 and parts["landmarks"] == 0
    assert parts["obj"] > 0 and not parts["obj"].requires_grad
    total.backward()
    assert torch.isfinite(raw.obj.grad).all() and (raw.obj.grad > 0).all()  # every point pushed to background


def test_loss_faces_without_landmarks_and_empty_images_mixed():
    hw = (64, 64)
    criterion = YuNetLoss(POINTS, hw)
    n = criterion.points.shape[0]
    raw = raw_zeros(2, n, requires_grad=True)
    targets = [face_row((16, 16, 48, 48), None, hw, has_landmarks=False), torch.zeros(0, 15)]
    total, parts = criterion(raw, targets)
    assert torch.isfinite(total) and parts["box"] > 0 and parts["cls"] > 0
    assert parts["landmarks"] == 0
    total.backward()
    assert (raw.kps.grad == 0).all()
    for t in raw:
        assert torch.isfinite(t.grad).all()


def test_keypoint_mask_limits_the_landmark_term():
    hw = (64, 64)
    criterion = YuNetLoss(POINTS, hw, keypoint_mask=(True, True, False, False, False))
    n = criterion.points.shape[0]
    raw = raw_zeros(1, n, requires_grad=True)
    lm = (24, 28, 40, 28, 32, 36, 26, 44, 38, 44)
    total, parts = criterion(raw, [face_row((16, 16, 48, 52), lm, hw)])
    assert parts["landmarks"] > 0
    total.backward()
    grad = raw.kps.grad[0]
    assert grad[:, :4].abs().sum() > 0 and (grad[:, 4:] == 0).all()


def test_loss_under_low_precision_inputs():
    hw = (64, 64)
    criterion = YuNetLoss(POINTS, hw)
    n = criterion.points.shape[0]
    raw = raw_zeros(1, n, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = criterion(raw, [face_row((16, 16, 48, 48), (24, 28, 40, 28, 32, 36, 26, 44, 38, 44), hw)])
    assert total.dtype == torch.float32 and torch.isfinite(total)


def test_loss_rejects_outputs_of_another_input_size():
    criterion = YuNetLoss(POINTS, (64, 64))
    with pytest.raises(ValueError, match="points"):
        criterion(raw_zeros(1, 10), [torch.zeros(0, 15)])


def test_gradient_descent_on_raw_outputs_finds_the_face():
    torch.manual_seed(0)
    hw = (64, 64)
    criterion = YuNetLoss(POINTS, hw)
    n = criterion.points.shape[0]
    box = torch.tensor([14.0, 10.0, 46.0, 50.0])
    lm = torch.tensor([22.0, 24.0, 38.0, 24.0, 30.0, 32.0, 24.0, 40.0, 36.0, 40.0])
    targets = [face_row(box.tolist(), lm.tolist(), hw)]
    raw = YuNetRawOutputs(*(torch.nn.Parameter(torch.randn(1, n, c) * 0.1) for c in (1, 1, 4, 10)))
    optimiser = torch.optim.Adam(raw, lr=0.05)
    first = None
    for _ in range(100):
        total, _ = criterion(raw, targets)
        first = float(total.detach()) if first is None else first
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    final = criterion(raw, targets)[0].detach()
    assert float(final) < 0.5 * first
    with torch.no_grad():
        score = (raw.cls.sigmoid() * raw.obj.sigmoid())[0, :, 0]
        top = int(score.argmax())
        decoded = criterion.decode_boxes(raw.bbox)[0, top]
        assert pairwise_iou(decoded[None], box[None])[0, 0] > 0.9
        point = criterion.points[top]
        landmarks = raw.kps[0, top] * point[2] + point[:2].repeat(5)
        assert (landmarks - lm).abs().max() < 1.0  # pixels
