"""Greedy non-maximum suppression, in NumPy and torch with identical results.

Both follow Pytorch_Retinaface's ``py_cpu_nms``: visit boxes by descending score (ties keep
input order), keep a box, drop every remaining box whose IoU with it is above the threshold.
``offset=1`` reproduces that implementation's ``x2 - x1 + 1`` area convention. ``max_keep`` stops
once that many boxes are kept (the same first indices as truncating the full result).
"""

from __future__ import annotations

import numpy as np
import torch


def nms_numpy(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, offset: float = 1.0, max_keep: int | None = None
) -> np.ndarray:
    """Indices of kept boxes (int64), by descending score."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + offset) * (y2 - y1 + offset)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0 and (max_keep is None or len(keep) < max_keep):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + offset, 0.0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + offset, 0.0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def nms_torch(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: float = 1.0, max_keep: int | None = None
) -> torch.Tensor:
    """Indices of kept boxes (int64, on the boxes' device), by descending score.

    CPU tensors go through :func:`nms_numpy`: the same float arithmetic, identical indices, and
    several times faster than a torch loop that pays per-op dispatch for every kept box.
    """
    if boxes.device.type == "cpu":
        return torch.from_numpy(nms_numpy(boxes.detach().numpy(), scores.detach().numpy(), iou_threshold, offset, max_keep))
    return nms_torch_on_device(boxes, scores, iou_threshold, offset, max_keep)


def nms_torch_on_device(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: float = 1.0, max_keep: int | None = None
) -> torch.Tensor:
    """The same greedy loop in torch ops, on the boxes' own device (no copy to the host)."""
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    areas = (x2 - x1 + offset) * (y2 - y1 + offset)
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    while order.numel() > 0 and (max_keep is None or len(keep) < max_keep):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + offset).clamp(min=0.0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + offset).clamp(min=0.0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    if not keep:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    return torch.stack(keep).to(torch.int64)
