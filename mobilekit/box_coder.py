"""Encode/decode of boxes and landmarks against priors (RetinaFace / SSD convention).

Every function accepts NumPy arrays or torch tensors (any leading batch dimensions) and
performs the same floating-point operations in the same order for both: results are
bit-identical except where ``exp``/``log`` implementations differ in the last bit.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _cat(parts: Sequence[Array]) -> Array:
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(list(parts), dim=-1)
    return np.concatenate(parts, axis=-1)


def _xp(x: Array):
    return torch if isinstance(x, torch.Tensor) else np


def decode_boxes(loc: Array, priors: Array, variances: Sequence[float]) -> Array:
    """Regression ``loc`` (dx, dy, dw, dh) -> boxes (x1, y1, x2, y2), normalised like ``priors``."""
    centers = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    sizes = priors[..., 2:] * _xp(loc).exp(loc[..., 2:] * variances[1])
    top_left = centers - sizes / 2
    return _cat([top_left, top_left + sizes])


def encode_boxes(boxes: Array, priors: Array, variances: Sequence[float]) -> Array:
    """Boxes (x1, y1, x2, y2) -> regression targets; inverse of :func:`decode_boxes`."""
    centers = ((boxes[..., :2] + boxes[..., 2:]) / 2 - priors[..., :2]) / (variances[0] * priors[..., 2:])
    sizes = _xp(boxes).log((boxes[..., 2:] - boxes[..., :2]) / priors[..., 2:]) / variances[1]
    return _cat([centers, sizes])


def decode_landmarks(pre: Array, priors: Array, variances: Sequence[float]) -> Array:
    """Landmark regression ``[..., 2K]`` -> points (x0, y0, ..., xK-1, yK-1), normalised."""
    k = pre.shape[-1] // 2
    return _cat([priors[..., :2] + pre[..., 2 * i : 2 * i + 2] * variances[0] * priors[..., 2:] for i in range(k)])


def encode_landmarks(points: Array, priors: Array, variances: Sequence[float]) -> Array:
    """Points (x0, y0, ...) -> landmark regression targets; inverse of :func:`decode_landmarks`."""
    k = points.shape[-1] // 2
    return _cat([(points[..., 2 * i : 2 * i + 2] - priors[..., :2]) / (variances[0] * priors[..., 2:]) for i in range(k)])


def box_iou(a: Array, b: Array, offset: float = 0.0) -> Array:
    """Pairwise IoU ``[len(a), len(b)]`` of xyxy boxes; ``offset=1`` is the inclusive-pixel convention."""
    xp = _xp(a)
    area_a = (a[:, 2] - a[:, 0] + offset) * (a[:, 3] - a[:, 1] + offset)
    area_b = (b[:, 2] - b[:, 0] + offset) * (b[:, 3] - b[:, 1] + offset)
    top_left = xp.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = xp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = bottom_right - top_left + offset
    wh = wh.clamp(min=0) if xp is torch else np.maximum(wh, 0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)
