"""YuNet's training loss (``YuNetLoss``), the recipe of libfacedetection.train.

As in ``configs/yunet_n.py`` and ``mmdet/models/dense_heads/yunet_head.py`` (``YuNet_Head.loss``):

* assignment: SimOTA (:func:`simota_assign`; centre radius 2.5 strides, 10 candidate IoUs for the
  dynamic k, cost ``1 * cls + 3 * (-log IoU)``) on the joint score ``sigmoid(cls) * sigmoid(obj)`` and the
  decoded boxes, all detached. The centre / inside-box tests use the points shifted by half a stride
  (the cell centres); the boxes and keypoints are decoded from the unshifted points;
* box: EIoU (:func:`eiou_loss`, smooth point 0.1) between the positives' decoded boxes (input pixels)
  and their faces, weight 5;
* cls: sigmoid BCE on the positives only, towards the (detached) IoU of the prediction with its face;
* obj: sigmoid BCE on every point, towards 1 for positives and 0 elsewhere;
  box, cls and obj are sums divided by the number of positives in the batch (at least 1);
* landmarks: Smooth-L1 (beta 1/9) on the keypoints encoded as ``(k - point) / stride``, over the
  positives whose face has landmarks, summed over their supervised coordinates and divided by their
  count, weight 0.1.

``total = box + cls + obj + landmarks`` (MMDetection sums the parts).

Deviations from the reference: images without faces are allowed (the reference drops them from
training; here every point of such an image is an objectness negative); the positive count is not
averaged across distributed processes (the reference's ``reduce_mean``); ``keypoint_mask`` restricts the
landmark term to the keypoints the labels have (the reference weights a face by the mean visibility of
its 5 points, which is 0 or 1 for WIDER FACE labels); the log-size regressions are clamped at
``MAX_LOG_SIZE`` before ``exp`` so that a diverging output cannot overflow to inf.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mobilekit.families.yunet.decode import YuNetRawOutputs
from mobilekit.families.yunet.points import PointConfig, grid_points_torch
from mobilekit.targets import pad_targets

BOX_WEIGHT, CLS_WEIGHT, OBJ_WEIGHT, LANDMARK_WEIGHT = 5.0, 1.0, 1.0, 0.1  # configs/yunet_n.py loss_* weights
LANDMARK_BETA = 1.0 / 9.0  # loss_kps SmoothL1Loss beta
EIOU_SMOOTH_POINT = 0.1  # EIoULoss defaults (mmdet/models/losses/iou_loss.py)
EIOU_EPS = 1e-6
CENTER_RADIUS = 2.5  # train_cfg.assigner SimOTAAssigner(center_radius=2.5)
CANDIDATE_TOPK = 10  # SimOTAAssigner defaults
IOU_COST_WEIGHT = 3.0
CLS_COST_WEIGHT = 1.0
ASSIGN_OFFSET = 0.5  # YuNet_Head._get_target_single assigns with the points moved to the cell centres
OUTSIDE_COST = 1e5  # SimOTA's INF for a (point, face) pair not both inside the box and the centre region
MAX_LOG_SIZE = 10.0  # box sizes up to e**10 strides


def eiou_loss(
    pred_xyxy: torch.Tensor, target_xyxy: torch.Tensor, smooth_point: float = EIOU_SMOOTH_POINT, eps: float = EIOU_EPS
) -> torch.Tensor:
    """Smooth extended-IoU loss per pair of boxes (Extended-IoU loss, IEEE 9429909, as in YuNet).

    ``pred_xyxy``, ``target_xyxy``: ``[n, 4]`` (x1, y1, x2, y2), any unit; returns ``[n]``.
    The extended intersection equals the true intersection when the boxes overlap and turns negative
    when they do not (so disjoint boxes still get a gradient); ``d = 1 - inter / union`` and the loss is
    ``0.5 * d**2 / smooth_point`` below ``smooth_point``, ``d - 0.5 * smooth_point`` above. 0 for
    identical boxes (up to ``eps``).
    """
    p_x1, p_y1, p_x2, p_y2 = pred_xyxy.unbind(-1)
    t_x1, t_y1, t_x2, t_y2 = target_xyxy.unbind(-1)
    origin_x, origin_y = torch.minimum(p_x1, t_x1), torch.minimum(p_y1, t_y1)
    # inner edges relative to the common top-left corner (all >= 0 for valid boxes)
    a_x, b_x = torch.maximum(p_x1, t_x1) - origin_x, torch.minimum(p_x2, t_x2) - origin_x
    a_y, b_y = torch.maximum(p_y1, t_y1) - origin_y, torch.minimum(p_y2, t_y2) - origin_y
    inter = (
        b_x * b_y
        + torch.minimum(a_x, b_x) * torch.minimum(a_y, b_y)
        - a_x * torch.maximum(a_y, b_y)
        - torch.maximum(a_x, b_x) * a_y
    )  # (b_x - a_x) * (b_y - a_y) when the boxes overlap
    union = (p_x2 - p_x1) * (p_y2 - p_y1) + (t_x2 - t_x1) * (t_y2 - t_y1) - inter + eps
    d = 1.0 - inter / union
    small = (d < smooth_point).detach()
    return torch.where(small, 0.5 * d * d / smooth_point, d - 0.5 * smooth_point)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """IoU ``[len(a), len(b)]`` of xyxy boxes, union clamped at ``eps`` (MMDetection's ``bbox_overlaps``)."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=eps)


@torch.no_grad()
def simota_assign(
    scores: torch.Tensor,
    points: torch.Tensor,
    pred_xyxy: torch.Tensor,
    gt_xyxy: torch.Tensor,
    center_radius: float = CENTER_RADIUS,
    candidate_topk: int = CANDIDATE_TOPK,
    iou_weight: float = IOU_COST_WEIGHT,
    cls_weight: float = CLS_COST_WEIGHT,
    eps: float = 1e-7,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SimOTA (YOLOX; MMDetection's ``SimOTAAssigner``) for one image and one class.

    ``scores`` [N] predicted face probabilities, ``points`` [N, 4] ``(x, y, stride_x, stride_y)`` where the
    centre and inside-box tests are made, ``pred_xyxy`` [N, 4] decoded predicted boxes, ``gt_xyxy`` [K, 4]
    faces (same unit as ``points``). Returns ``gt_index`` [N] long (the face of each point, -1 background:
    a point never has two faces) and ``iou`` [N] (IoU of a positive's prediction with its face, 0 elsewhere).

    Candidates are the points inside any face's box or centre region (``center_radius`` strides around
    its centre). Cost per (candidate, face): ``cls_weight * BCE(sqrt(score), 1) + iou_weight * -log(IoU)``,
    plus ``OUTSIDE_COST`` unless the point is both inside the box and the centre region. Each face takes
    its ``k`` cheapest candidates, ``k = max(1, int(sum of its candidate_topk best IoUs))``; a point taken by
    several faces keeps only its cheapest face.
    """
    num_points, num_gt = points.shape[0], gt_xyxy.shape[0]
    gt_index = torch.full((num_points,), -1, dtype=torch.long, device=points.device)
    matched_iou = torch.zeros(num_points, dtype=torch.float32, device=points.device)
    if num_gt == 0 or num_points == 0:
        return gt_index, matched_iou
    x, y = points[:, 0:1], points[:, 1:2]
    inside_box = (x > gt_xyxy[:, 0]) & (x < gt_xyxy[:, 2]) & (y > gt_xyxy[:, 1]) & (y < gt_xyxy[:, 3])  # [N, K]
    centre = (gt_xyxy[:, :2] + gt_xyxy[:, 2:]) / 2
    inside_centre = ((x - centre[:, 0]).abs() < center_radius * points[:, 2:3]) & (
        (y - centre[:, 1]).abs() < center_radius * points[:, 3:4]
    )
    candidates = (inside_box | inside_centre).any(dim=1).nonzero().squeeze(1)  # [M]
    num_candidates = candidates.numel()
    if num_candidates == 0:
        return gt_index, matched_iou

    ious = pairwise_iou(pred_xyxy[candidates].float(), gt_xyxy.float())  # [M, K]
    probability = scores[candidates].float().clamp(0.0, 1.0).sqrt()
    cls_cost = -torch.log(probability).clamp(max=100.0)  # F.binary_cross_entropy(p, 1) clamps the log at -100
    cost = (
        cls_weight * cls_cost[:, None]
        + iou_weight * -torch.log(ious + eps)
        + OUTSIDE_COST * (~(inside_box & inside_centre)[candidates]).float()
    )

    topk = min(candidate_topk, num_candidates)
    dynamic_k = ious.topk(topk, dim=0).values.sum(0).int().clamp(min=1)  # [K], <= topk
    order = cost.topk(topk, dim=0, largest=False).indices  # [topk, K] cheapest candidates first
    taken = torch.arange(topk, device=cost.device)[:, None] < dynamic_k[None]
    matching = torch.zeros_like(cost, dtype=torch.bool).scatter_(0, order, taken)  # [M, K]
    contested = matching.sum(dim=1) > 1
    cheapest = F.one_hot(cost.argmin(dim=1), num_gt).bool()
    matching = torch.where(contested[:, None], cheapest, matching)

    positive = matching.any(dim=1)
    face = matching.to(torch.uint8).argmax(dim=1)
    gt_index[candidates] = torch.where(positive, face, torch.full_like(face, -1))
    matched_iou[candidates] = (ious * matching).sum(dim=1)
    return gt_index, matched_iou


class YuNetLoss(nn.Module):
    """``loss(raw_outputs, targets) -> (total, parts)`` for a YuNet head trained at ``image_size`` (H, W).

    ``raw_outputs``: ``.cls`` [B, N, 1] and ``.obj`` [B, N, 1] logits, ``.bbox`` [B, N, 4] (dx, dy, log w,
    log h in strides), ``.kps`` [B, N, 2L] (offsets in strides), N the points of ``points`` at
    ``image_size``. ``targets``: per image ``[K, 4 + 2L + 1]`` normalised rows (:mod:`mobilekit.data.dataset`).
    ``keypoint_mask`` (one flag per keypoint, default all) says which keypoints the labels supervise.
    """

    def __init__(
        self,
        points: PointConfig,
        image_size: tuple[int, int],
        num_keypoints: int = 5,
        keypoint_mask: tuple[bool, ...] | None = None,
    ) -> None:
        super().__init__()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_keypoints = num_keypoints
        if keypoint_mask is None:
            keypoint_mask = (True,) * num_keypoints
        if len(keypoint_mask) != num_keypoints:
            raise ValueError(f"keypoint_mask has {len(keypoint_mask)} flags for {num_keypoints} keypoints")
        self.register_buffer("points", grid_points_torch(points, self.image_size), persistent=False)  # [N, 4]
        mask = torch.tensor(keypoint_mask, dtype=torch.bool).repeat_interleave(2)  # per coordinate
        self.register_buffer("coordinate_mask", mask, persistent=False)

    def decode_boxes(self, bbox: torch.Tensor) -> torch.Tensor:
        """Raw ``[..., N, 4]`` -> xyxy in input pixels (``YuNet_Head._bbox_decode``)."""
        xy, stride = self.points[:, :2], self.points[:, 2:]
        centre = xy + bbox[..., :2] * stride
        size = bbox[..., 2:].clamp(max=MAX_LOG_SIZE).exp() * stride
        return torch.cat([centre - size / 2, centre + size / 2], dim=-1)

    def forward(self, raw_outputs: YuNetRawOutputs, targets: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device = raw_outputs.cls.device
        with torch.autocast(device_type=device.type, enabled=False):
            return self._loss(
                raw_outputs.cls.float(), raw_outputs.obj.float(), raw_outputs.bbox.float(), raw_outputs.kps.float(), targets
            )

    def _loss(self, cls, obj, bbox, kps, targets):
        batch, num_points = cls.shape[:2]
        if num_points != self.points.shape[0]:
            raise ValueError(f"got {num_points} points, the head at {self.image_size} has {self.points.shape[0]}")
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} target tensors for a batch of {batch}")
        width_l = 2 * self.num_keypoints
        for index, t in enumerate(targets):
            if t.ndim != 2 or t.shape[1] != 4 + width_l + 1:
                raise ValueError(f"targets[{index}] must be [K, {4 + width_l + 1}], got shape {tuple(t.shape)}")
        cls, obj = cls.squeeze(-1), obj.squeeze(-1)  # [B, N]
        boxes = self.decode_boxes(bbox)  # [B, N, 4] pixels

        truths, valid = pad_targets([t.to(device=cls.device, dtype=torch.float32) for t in targets])
        height, width = self.image_size
        scale = truths.new_tensor([width, height])
        gt_boxes = truths[..., :4] * scale.repeat(2)  # [B, K, 4] pixels
        gt_points = truths[..., 4 : 4 + width_l] * scale.repeat(self.num_keypoints)  # [B, K, 2L] pixels
        has_landmarks = truths[..., -1] > 0  # [B, K]

        assign_points = torch.cat([self.points[:, :2] + ASSIGN_OFFSET * self.points[:, 2:], self.points[:, 2:]], dim=1)
        scores = cls.detach().sigmoid() * obj.detach().sigmoid()
        faces, ious = [], []
        for i in range(batch):  # SimOTA per image (face counts differ)
            face, iou = simota_assign(scores[i], assign_points, boxes[i].detach(), gt_boxes[i][valid[i]])
            faces.append(face)
            ious.append(iou)
        face, iou = torch.stack(faces), torch.stack(ious)  # [B, N]
        positive = face >= 0
        num_positive = positive.sum().clamp(min=1).float()

        index = face.clamp(min=0)
        matched = torch.gather(gt_boxes, 1, index[..., None].expand(-1, -1, 4))  # [B, N, 4]
        loss_box = eiou_loss(boxes[positive], matched[positive]).sum() / num_positive
        loss_cls = F.binary_cross_entropy_with_logits(cls[positive], iou[positive], reduction="sum") / num_positive
        loss_obj = F.binary_cross_entropy_with_logits(obj, positive.float(), reduction="sum") / num_positive

        matched_points = torch.gather(gt_points, 1, index[..., None].expand(-1, -1, width_l))  # [B, N, 2L]
        with_landmarks = positive & torch.gather(has_landmarks, 1, index)  # [B, N]
        xy, stride = self.points[:, :2].repeat(1, self.num_keypoints), self.points[:, 2:].repeat(1, self.num_keypoints)
        encoded = (matched_points - xy) / stride
        mask = with_landmarks[..., None] & self.coordinate_mask  # [B, N, 2L]
        error = torch.where(mask, kps - encoded, torch.zeros_like(kps))
        loss_lm = F.smooth_l1_loss(error, torch.zeros_like(error), beta=LANDMARK_BETA, reduction="sum")
        loss_lm = loss_lm / with_landmarks.sum().clamp(min=1).float()

        parts = {
            "box": BOX_WEIGHT * loss_box,
            "cls": CLS_WEIGHT * loss_cls,
            "obj": OBJ_WEIGHT * loss_obj,
            "landmarks": LANDMARK_WEIGHT * loss_lm,
        }
        total = sum(parts.values())
        return total, {k: v.detach() for k, v in parts.items()}
