"""YOLOv5-Face training loss for "yolo" models (``YoloFaceLoss``).

As in YOLOv5-Face (``utils/loss.py``): a face is assigned to every anchor whose width and height
ratios to it are within ``anchor_t`` (4.0), in its own cell and the two nearest neighbouring
cells; CIoU box loss, objectness BCE towards the (detached) IoU, class BCE, WingLoss on the
landmarks of faces that have them (``has_landmarks == 1``), objectness balanced per level.
Like YOLOv5 the total is scaled by the batch size (per-image mean times images).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilekit.families.yolo.anchors import YoloAnchorConfig
from mobilekit.families.yolo.decode import CLS_INDEX, LANDMARK_SLICE, OBJ_INDEX, VALUES_PER_ANCHOR, YoloRawOutputs

ANCHOR_T = 4.0
BOX_GAIN, OBJ_GAIN, CLS_GAIN, LANDMARK_GAIN = 0.05, 1.0, 0.5, 0.005  # YOLOv5-Face hyp.scratch
LEVEL_BALANCE = {3: (4.0, 1.0, 0.4), 4: (4.0, 1.0, 0.25, 0.06), 5: (4.0, 1.0, 0.25, 0.06, 0.02)}
NEIGHBOUR_OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))  # own cell, left, up, right, down
EPS = 1e-7


def bbox_ciou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Complete IoU of paired boxes ``[n, 4]`` given as (cx, cy, w, h)."""
    p1, p2 = pred[:, :2] - pred[:, 2:] / 2, pred[:, :2] + pred[:, 2:] / 2
    t1, t2 = target[:, :2] - target[:, 2:] / 2, target[:, :2] + target[:, 2:] / 2
    inter = (torch.minimum(p2, t2) - torch.maximum(p1, t1)).clamp(min=0).prod(dim=1)
    (pw, ph), (tw, th) = pred[:, 2:].unbind(1), target[:, 2:].unbind(1)
    union = pw * ph + tw * th - inter + EPS
    iou = inter / union
    enclosing = torch.maximum(p2, t2) - torch.minimum(p1, t1)
    diagonal2 = (enclosing**2).sum(dim=1) + EPS
    center2 = ((pred[:, :2] - target[:, :2]) ** 2).sum(dim=1)
    v = (4 / math.pi**2) * (torch.atan(tw / (th + EPS)) - torch.atan(pw / (ph + EPS))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + EPS))
    return iou - (center2 / diagonal2 + v * alpha)


def wing_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, w: float = 10.0, e: float = 2.0) -> torch.Tensor:
    """Summed WingLoss (Feng et al. 2018) over entries where ``mask``; masked entries give exactly
    zero loss and zero gradient, whatever their target holds."""
    diff = torch.where(mask, pred - target, torch.zeros_like(pred)).abs()
    c = w - w * math.log(1 + w / e)
    return torch.where(diff < w, w * torch.log1p(diff / e), diff - c).sum()


class YoloFaceLoss(nn.Module):
    """``loss(raw_outputs, targets) -> (total, parts)`` for a model whose ``deploy.anchors`` are YOLO grid anchors.

    ``targets``: per image ``[K, 15]`` rows ``x1, y1, x2, y2, l0x, l0y, ..., l4x, l4y, has_landmarks``
    normalised to 0..1 over the model input, ``has_landmarks`` 1 or -1.
    """

    def __init__(self, model: nn.Module, anchor_t: float = ANCHOR_T) -> None:
        super().__init__()
        cfg = model.deploy.anchors
        if not isinstance(cfg, YoloAnchorConfig):
            raise ValueError(f"{model.deploy.name} has no YOLO grid anchors; YoloFaceLoss is for decoder 'yolo'")
        self.strides = tuple(cfg.strides)
        self.anchor_t = anchor_t
        self.balance = LEVEL_BALANCE[len(self.strides)]
        self.register_buffer("anchors", torch.tensor(cfg.anchors, dtype=torch.float32), persistent=False)  # [L, A, 2] pixels
        self.register_buffer("offsets", torch.tensor(NEIGHBOUR_OFFSETS) * 0.5, persistent=False)

    @staticmethod
    def target_table(targets: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        """``[M, 16]`` rows: image index, cx, cy, w, h, 10 landmark coords, has_landmarks (normalised)."""
        rows = []
        for index, t in enumerate(targets):
            t = t.to(device=device, dtype=torch.float32)
            if t.ndim != 2 or t.shape[1] != 15:
                raise ValueError(f"targets[{index}] must be [K, 15], got shape {tuple(t.shape)}")
            centers, sizes = (t[:, 0:2] + t[:, 2:4]) / 2, t[:, 2:4] - t[:, 0:2]
            rows.append(torch.cat([torch.full_like(t[:, :1], index), centers, sizes, t[:, 4:15]], dim=1))
        return torch.cat(rows) if rows else torch.zeros(0, 16, device=device)

    def assign(self, table: torch.Tensor, level: int, grid_hw: tuple[int, int], input_hw: tuple[int, int]):
        """YOLOv5 assignment on one level -> (image, anchor, row, col) indices, box targets (xy in
        the cell, wh in grid units), landmark targets (relative to the cell), landmark flags,
        anchors (grid units)."""
        rows, cols = grid_hw
        stride = self.strides[level]
        anchors = self.anchors[level] / stride
        scale = table.new_tensor([input_hw[1] / stride, input_hw[0] / stride])
        gxy, gwh = table[:, 1:3] * scale, table[:, 3:5] * scale
        glm = table[:, 5:15] * scale.repeat(5)
        ratio = gwh[None] / anchors[:, None]  # [A, M, 2]
        fits = torch.max(ratio, 1 / ratio).amax(dim=2) < self.anchor_t  # [A, M]
        anchor_index, target_index = fits.nonzero(as_tuple=True)
        gxy, gwh, glm = gxy[target_index], gwh[target_index], glm[target_index]
        image, flags = table[target_index, 0].long(), table[target_index, 15]
        inverse = table.new_tensor([cols, rows]) - gxy
        left_up = (gxy % 1 < 0.5) & (gxy > 1)
        right_down = (inverse % 1 < 0.5) & (inverse > 1)
        chosen = torch.stack([torch.ones_like(left_up[:, 0]), left_up[:, 0], left_up[:, 1], right_down[:, 0], right_down[:, 1]])  # [5, n]
        copy, which = chosen.nonzero(as_tuple=True)
        gxy, gwh, glm = gxy[which], gwh[which], glm[which]
        cell = (gxy - self.offsets[copy]).long()
        col, row = cell[:, 0].clamp(0, cols - 1), cell[:, 1].clamp(0, rows - 1)
        cell = torch.stack([col, row], dim=1).to(gxy.dtype)
        box = torch.cat([gxy - cell, gwh], dim=1)
        landmarks = glm - cell.repeat(1, 5)
        anchor_index = anchor_index[which]
        return (image[which], anchor_index, row, col), box, landmarks, flags[which] > 0, anchors[anchor_index]

    def forward(self, raw_outputs: YoloRawOutputs, targets: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        levels, input_hw = raw_outputs
        if len(levels) != len(self.strides):
            raise ValueError(f"got {len(levels)} head maps for {len(self.strides)} anchor levels")
        device = levels[0].device
        batch = levels[0].shape[0]
        table = self.target_table(targets, device)
        zero = torch.zeros((), device=device)
        loss_box, loss_obj, loss_cls, loss_lm = zero, zero, zero, zero
        for level, raw in enumerate(levels):
            b, channels, rows, cols = raw.shape
            pred = raw.float().view(b, channels // VALUES_PER_ANCHOR, VALUES_PER_ANCHOR, rows, cols).permute(0, 1, 3, 4, 2)
            obj_target = torch.zeros(pred.shape[:4], device=device)
            (image, anchor, row, col), box, landmarks, has_lm, anchors = self.assign(table, level, (rows, cols), input_hw)
            if image.numel():
                p = pred[image, anchor, row, col]
                pbox = torch.cat([torch.sigmoid(p[:, 0:2]) * 2 - 0.5, (torch.sigmoid(p[:, 2:4]) * 2) ** 2 * anchors], dim=1)
                iou = bbox_ciou(pbox, box)
                loss_box = loss_box + (1.0 - iou).mean()
                obj_target[image, anchor, row, col] = iou.detach().clamp(min=0)
                loss_cls = loss_cls + F.binary_cross_entropy_with_logits(p[:, CLS_INDEX], torch.ones_like(iou))
                mask = has_lm[:, None].expand(-1, 10)
                plm = p[:, LANDMARK_SLICE] * anchors.repeat(1, 5)
                loss_lm = loss_lm + wing_loss(plm, landmarks, mask) / (mask.sum() + 1e-13)
            loss_obj = loss_obj + F.binary_cross_entropy_with_logits(pred[..., OBJ_INDEX], obj_target) * self.balance[level]
        parts = {
            "box": loss_box * BOX_GAIN,
            "obj": loss_obj * OBJ_GAIN,
            "cls": loss_cls * CLS_GAIN,
            "landmarks": loss_lm * LANDMARK_GAIN,
        }
        total = sum(parts.values()) * batch
        return total, {k: v.detach() for k, v in parts.items()}
