"""Decoder "yolo": YOLOv5-Face grid anchors and decode, in NumPy and torch with the same operations.

A level's head map ``[B, A*16, H, W]`` holds per anchor 16 raw values: box (x, y, w, h),
objectness, 5 landmarks (x, y), class. Decoding (YOLOv5-Face, ``s`` the stride, ``g`` the cell):

* ``xy = (sigmoid * 2 - 0.5 + g) * s``, ``wh = (sigmoid * 2)^2 * anchor``
* ``landmark = raw * anchor + g * s``; objectness and class: ``sigmoid``

and every coordinate is divided by the input width / height, so predictions are normalised like
RetinaFace's (0..1 over the model input). Decoded rows are ``cx, cy, w, h, obj, l0x, l0y, ..., l4x,
l4y, cls``, ordered level -> row -> column -> anchor.

The decode is written as per-channel coefficients on 4-D NCHW maps
(``sig*k_sig + sig*sig*k_sig2 + raw*k_raw + gx*k_gx + gy*k_gy + k_const``): the exported graph
then holds only Sigmoid, Mul, Add with tiny broadcast constants (no slicing, no concatenation
of coordinates), which onnx2tf converts without layout surprises (TFLite fp32 within 3e-7 at 640). The model calls :func:`decode_levels` in its
exported graph; the NumPy path is the reference mirror for parity checks and apps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch

from mobilekit.detections import Detections, PostprocessConfig
from mobilekit.families.yolo.anchors import YoloAnchorConfig
from mobilekit.nms import nms

VALUES_PER_ANCHOR = 16
OBJ_INDEX = 4
LANDMARK_SLICE = slice(5, 15)
CLS_INDEX = 15
YOLO_NMS_OFFSET = 0.0  # YOLO's area convention: x2 - x1, no +1


class YoloRawOutputs(NamedTuple):
    """What a "yolo" model's ``forward`` returns: raw head maps ``[B, A*16, H_l, W_l]`` per level
    and the ``(H, W)`` of the input they were computed on (decode and loss need both)."""

    levels: tuple[torch.Tensor, ...]
    input_hw: tuple[int, int]


def level_sizes(cfg: YoloAnchorConfig, input_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """``(rows, cols)`` per level: ``ceil(H / stride) x ceil(W / stride)`` (stride-2 convs with pad 1)."""
    height, width = input_hw
    return [(math.ceil(height / s), math.ceil(width / s)) for s in cfg.strides]


def num_predictions(cfg: YoloAnchorConfig, input_hw: tuple[int, int]) -> int:
    return sum(r * c for r, c in level_sizes(cfg, input_hw)) * cfg.anchors_per_location


@dataclass(frozen=True)
class LevelCoefficients:
    """Per-channel decode coefficients of one level, float32 ``[1, A*16, 1, 1]`` each."""

    sig: np.ndarray
    sig2: np.ndarray
    raw: np.ndarray
    gx: np.ndarray
    gy: np.ndarray
    const: np.ndarray


def level_coefficients(anchors: Sequence[tuple[float, float]], stride: int, input_hw: tuple[int, int]) -> LevelCoefficients:
    """Decode coefficients (computed in float64, rounded once) for one level."""
    height, width = input_hw
    channels = len(anchors) * VALUES_PER_ANCHOR
    k = {name: np.zeros(channels, dtype=np.float64) for name in ("sig", "sig2", "raw", "gx", "gy", "const")}
    for a, (anchor_w, anchor_h) in enumerate(anchors):
        base = a * VALUES_PER_ANCHOR
        for axis, (size, grid_key, anchor) in enumerate(((width, "gx", anchor_w), (height, "gy", anchor_h))):
            k["sig"][base + axis] = 2.0 * stride / size
            k[grid_key][base + axis] = stride / size
            k["const"][base + axis] = -0.5 * stride / size
            k["sig2"][base + 2 + axis] = 4.0 * anchor / size
            for point in range(5):
                column = base + LANDMARK_SLICE.start + 2 * point + axis
                k["raw"][column] = anchor / size
                k[grid_key][column] = stride / size
        k["sig"][base + OBJ_INDEX] = 1.0
        k["sig"][base + CLS_INDEX] = 1.0
    return LevelCoefficients(**{name: v.astype(np.float32).reshape(1, channels, 1, 1) for name, v in k.items()})


def _sigmoid(x):
    return torch.sigmoid(x) if isinstance(x, torch.Tensor) else 1.0 / (1.0 + np.exp(-x))


def decode_level(raw, coeffs: LevelCoefficients):
    """Decode one raw head map ``[B, A*16, H, W]`` (NumPy or torch) -> decoded rows ``[B, H*W*A, 16]``."""
    batch, channels, rows, cols = raw.shape
    gx = np.arange(cols, dtype=np.float32).reshape(1, 1, 1, cols)
    gy = np.arange(rows, dtype=np.float32).reshape(1, 1, rows, 1)
    constants = [coeffs.sig, coeffs.sig2, coeffs.raw, coeffs.gx, coeffs.gy, coeffs.const, gx, gy]
    if isinstance(raw, torch.Tensor):
        constants = [torch.from_numpy(c).to(device=raw.device, dtype=raw.dtype) for c in constants]
    k_sig, k_sig2, k_raw, k_gx, k_gy, k_const, gx, gy = constants
    sig = _sigmoid(raw)
    decoded = sig * k_sig + sig * sig * k_sig2 + raw * k_raw + gx * k_gx + gy * k_gy + k_const
    if isinstance(raw, torch.Tensor):
        return decoded.permute(0, 2, 3, 1).reshape(batch, rows * cols * (channels // VALUES_PER_ANCHOR), VALUES_PER_ANCHOR)
    return decoded.transpose(0, 2, 3, 1).reshape(batch, rows * cols * (channels // VALUES_PER_ANCHOR), VALUES_PER_ANCHOR)


def decode_levels(levels: Sequence, cfg: YoloAnchorConfig, input_hw: tuple[int, int]):
    """All levels' raw head maps -> predictions ``[B, N, 16]`` (the ``predictions`` output)."""
    if len(levels) != len(cfg.strides):
        raise ValueError(f"got {len(levels)} head maps for {len(cfg.strides)} anchor levels")
    expected = level_sizes(cfg, input_hw)
    decoded = []
    for level, (raw, anchors, stride, size) in enumerate(zip(levels, cfg.anchors, cfg.strides, expected)):
        if tuple(raw.shape[-2:]) != size or raw.shape[1] != len(anchors) * VALUES_PER_ANCHOR:
            raise ValueError(f"head map {level} has shape {tuple(raw.shape)}, expected [B, {len(anchors) * VALUES_PER_ANCHOR}, {size[0]}, {size[1]}]")
        decoded.append(decode_level(raw, level_coefficients(anchors, stride, input_hw)))
    if isinstance(decoded[0], torch.Tensor):
        return torch.cat(decoded, dim=1)
    return np.concatenate(decoded, axis=1)


def yolo_detections(predictions, input_hw: tuple[int, int], cfg: PostprocessConfig = PostprocessConfig()) -> Detections:
    """One image's decoded ``predictions`` [N, 16] -> faces in model-input pixels.

    Score = obj * cls; score threshold, top-k and ``max_detections`` from ``cfg``; NMS with
    ``cfg.nms_iou`` and YOLO's area convention (offset 0; ``cfg.nms_offset`` is RetinaFace's).
    """
    is_torch = isinstance(predictions, torch.Tensor)
    height, width = input_hw
    scores = predictions[:, OBJ_INDEX] * predictions[:, CLS_INDEX]
    keep = torch.nonzero(scores > cfg.conf_threshold).flatten() if is_torch else np.flatnonzero(scores > cfg.conf_threshold)
    predictions, scores = predictions[keep], scores[keep]
    order = torch.sort(scores, descending=True, stable=True).indices if is_torch else np.argsort(-scores, kind="stable")
    order = order[: cfg.pre_nms_top_k]
    predictions, scores = predictions[order], scores[order]
    centers, sizes = predictions[:, 0:2], predictions[:, 2:4]
    corners = [centers - sizes / 2, centers + sizes / 2]
    scale = [width, height] * ((LANDMARK_SLICE.stop - LANDMARK_SLICE.start) // 2)
    if is_torch:
        scale = torch.tensor(scale, dtype=predictions.dtype, device=predictions.device)
        boxes = torch.cat(corners, dim=1) * scale[:4]
    else:
        scale = np.array(scale, dtype=predictions.dtype)
        boxes = np.concatenate(corners, axis=1) * scale[:4]
    points = predictions[:, LANDMARK_SLICE] * scale
    kept = nms(boxes, scores, cfg.nms_iou, offset=YOLO_NMS_OFFSET, max_keep=cfg.max_detections)
    return Detections(boxes[kept], scores[kept], points[kept])
