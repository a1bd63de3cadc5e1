"""Greedy non-maximum suppression, one implementation for NumPy arrays and torch tensors.

It follows Pytorch_Retinaface's ``py_cpu_nms``: visit boxes by descending score (ties keep input
order), keep a box, drop every remaining box whose IoU with it is above the threshold.
``offset=1`` reproduces that implementation's ``x2 - x1 + 1`` area convention. ``max_keep`` stops
once that many boxes are kept (the same first indices as truncating the full result).

The loop runs in NumPy for NumPy arrays and CPU tensors (the same float operations; a torch loop pays
dispatch overhead for every kept box, several times slower) and in torch ops on the tensors' own
device otherwise.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _descending(scores: Array) -> Array:
    if isinstance(scores, torch.Tensor):
        return torch.sort(scores, descending=True, stable=True).indices
    return np.argsort(-scores, kind="stable")


def _greedy(boxes: Array, scores: Array, iou_threshold: float, offset: float, max_keep: int | None) -> list:
    xp = torch if isinstance(boxes, torch.Tensor) else np
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + offset) * (y2 - y1 + offset)
    order = _descending(scores)
    keep = []
    while order.shape[0] > 0 and (max_keep is None or len(keep) < max_keep):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = (xp.minimum(x2[i], x2[rest]) - xp.maximum(x1[i], x1[rest]) + offset).clip(min=0.0)
        h = (xp.minimum(y2[i], y2[rest]) - xp.maximum(y1[i], y1[rest]) + offset).clip(min=0.0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return keep


def nms(boxes: Array, scores: Array, iou_threshold: float, offset: float = 1.0, max_keep: int | None = None) -> Array:
    """Indices (int64) of the kept boxes, by descending score; a tensor on the boxes' device for tensors."""
    if isinstance(boxes, torch.Tensor):
        if boxes.device.type != "cpu":
            return nms_on_device(boxes, scores, iou_threshold, offset, max_keep)
        return torch.from_numpy(nms(boxes.detach().numpy(), scores.detach().numpy(), iou_threshold, offset, max_keep))
    return np.asarray(_greedy(boxes, scores, iou_threshold, offset, max_keep), dtype=np.int64)


def nms_on_device(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: float = 1.0, max_keep: int | None = None) -> torch.Tensor:
    """The torch-op loop wherever the tensors are (what CUDA tensors use), also for CPU tensors."""
    keep = _greedy(boxes, scores, iou_threshold, offset, max_keep)
    return torch.stack(keep).to(torch.int64) if keep else torch.empty(0, dtype=torch.int64, device=boxes.device)


def weighted_nms(boxes: Array, scores: Array, points: Array, iou_threshold: float, max_keep: int | None = None) -> tuple[Array, Array, Array]:
    """MediaPipe's weighted NMS ("blending"; ``NonMaxSuppressionCalculator``, ``algorithm: WEIGHTED``).

    Visit boxes by descending score; the best remaining box and every remaining box whose IoU with it
    is above ``iou_threshold`` (itself included) form a cluster that leaves the pool; the output is the
    cluster's score-weighted mean box and keypoints with the best box's score. IoU without a +1 (MediaPipe
    works on normalised coordinates). A best box of zero area overlaps nothing, not even itself: it is
    output unblended and, as in MediaPipe, ends the loop. Returns (boxes, scores, points), best first.
    """
    xp = torch if isinstance(boxes, torch.Tensor) else np
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = _descending(scores)
    kept_boxes, kept_scores, kept_points = [], [], []
    while order.shape[0] > 0 and (max_keep is None or len(kept_scores) < max_keep):
        i = order[0]
        w = (xp.minimum(x2[i], x2[order]) - xp.maximum(x1[i], x1[order])).clip(min=0.0)
        h = (xp.minimum(y2[i], y2[order]) - xp.maximum(y1[i], y1[order])).clip(min=0.0)
        inter = w * h
        union = areas[i] + areas[order] - inter
        iou = xp.where(union > 0, inter / xp.where(union > 0, union, 1.0), 0.0)
        cluster = iou > iou_threshold
        members, order = order[cluster], order[~cluster]
        kept_scores.append(scores[i])
        if members.shape[0] == 0:
            kept_boxes.append(boxes[i])
            kept_points.append(points[i])
            break
        weights = scores[members][:, None]
        total = weights.sum()
        kept_boxes.append((boxes[members] * weights).sum(0) / total)
        kept_points.append((points[members] * weights).sum(0) / total)
    if not kept_scores:
        return boxes[:0], scores[:0], points[:0]
    return xp.stack(kept_boxes), xp.stack(kept_scores), xp.stack(kept_points)
