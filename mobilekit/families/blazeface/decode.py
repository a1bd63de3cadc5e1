"""Decoder "blazeface": MediaPipe's SSD anchors, box/keypoint decode and weighted NMS, in NumPy and torch.

What MediaPipe's face detection graph does after the network (``SsdAnchorsCalculator``,
``TensorsToDetectionsCalculator``, ``NonMaxSuppressionCalculator`` with ``algorithm: WEIGHTED``):

* anchors: :func:`ssd_anchors` (normalised centres, width = height = 1);
* decode, per anchor (``x_scale = w_scale = input width``, ``y_scale = h_scale = input height``):
  ``cx = r[0] / W * anchor_w + anchor_cx``, ``w = r[2] / W * anchor_w`` (likewise y, h) and keypoint
  ``k``: ``x = r[4 + 2k] / W * anchor_w + anchor_cx``; boxes with a negative width or height are dropped;
* score: ``sigmoid(clip(logit, -100, 100))``, kept when ``>= min_score_thresh``;
* weighted NMS: see :func:`mobilekit.nms.weighted_nms`.

Coordinates are returned in model-input pixels (the normalised values times the input size).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mobilekit.detections import Detections, PostprocessConfig
from mobilekit.families.blazeface.anchors import SsdAnchorConfig
from mobilekit.nms import weighted_nms

SCORE_CLIPPING = 100.0  # TensorsToDetectionsCalculator's score_clipping_thresh in face_detection.pbtxt
BOX_COLUMNS = 4  # cx, cy, w, h before the keypoints


def ssd_anchors(cfg: SsdAnchorConfig, input_hw: tuple[int, int]) -> np.ndarray:
    """Anchors ``[N, 4]`` float32 (cx, cy, w, h; normalised, w = h = 1) in output-row order, as
    ``SsdAnchorsCalculator`` generates them with ``fixed_anchor_size: true``."""
    height, width = input_hw
    groups: list[tuple[int, int]] = []  # (stride, anchors per cell) of consecutive layers sharing a stride
    for stride in cfg.strides:
        if groups and groups[-1][0] == stride:
            groups[-1] = (stride, groups[-1][1] + cfg.anchors_per_layer)
        else:
            groups.append((stride, cfg.anchors_per_layer))
    levels = []
    for stride, per_cell in groups:
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        cy, cx = np.meshgrid((np.arange(rows) + cfg.anchor_offset) / rows, (np.arange(cols) + cfg.anchor_offset) / cols, indexing="ij")
        level = np.ones((rows, cols, per_cell, 4), dtype=np.float64)
        level[..., 0] = cx[:, :, None]
        level[..., 1] = cy[:, :, None]
        levels.append(level.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def ssd_anchor_scales(cfg: SsdAnchorConfig, input_hw: tuple[int, int]) -> np.ndarray:
    """Per anchor of :func:`ssd_anchors`, the scale (side / input side) ``SsdAnchorsCalculator`` would give it
    without ``fixed_anchor_size``: layer ``i`` of ``L`` has ``min + (max - min) * i / (L - 1)`` (the mean of
    the two when L = 1), its interpolated anchor ``sqrt(scale_i * scale_{i+1})`` (1.0 after the last layer).
    The network's anchor slots specialise in these sizes; training matches faces to them."""
    count = len(cfg.strides)

    def layer_scale(index: int) -> float:
        if count == 1:
            return (cfg.min_scale + cfg.max_scale) / 2
        return cfg.min_scale + (cfg.max_scale - cfg.min_scale) * index / (count - 1)

    height, width = input_hw
    levels, index = [], 0
    while index < count:
        stride, slots = cfg.strides[index], []
        while index < count and cfg.strides[index] == stride:
            scale = layer_scale(index)
            slots += [scale] * len(cfg.aspect_ratios)
            if cfg.interpolated_scale_aspect_ratio > 0:
                slots.append(math.sqrt(scale * (1.0 if index == count - 1 else layer_scale(index + 1))))
            index += 1
        cells = math.ceil(height / stride) * math.ceil(width / stride)
        levels.append(np.tile(np.array(slots, dtype=np.float32), cells))
    return np.concatenate(levels)


def _sigmoid(x):
    if isinstance(x, torch.Tensor):
        return torch.sigmoid(x)
    with np.errstate(over="ignore"):  # exp(100) overflows float32 to inf: sigmoid 0, as in MediaPipe's C++
        return 1.0 / (1.0 + np.exp(-x))


def decode_regressors(regressors, anchors, input_hw: tuple[int, int]):
    """``regressors`` [N, 4 + 2K] -> (boxes [N, 4] x1, y1, x2, y2, keypoints [N, 2K]), in input pixels."""
    height, width = input_hw
    scale = [width, height]
    if isinstance(regressors, torch.Tensor):
        anchors = torch.as_tensor(anchors, dtype=regressors.dtype, device=regressors.device)
        scale = torch.tensor(scale, dtype=regressors.dtype, device=regressors.device)
        cat = lambda parts: torch.cat(parts, dim=-1)  # noqa: E731
    else:
        anchors = anchors.astype(regressors.dtype, copy=False)
        scale = np.array(scale, dtype=regressors.dtype)
        cat = lambda parts: np.concatenate(parts, axis=-1)  # noqa: E731
    centers, sizes = anchors[:, :2], anchors[:, 2:]
    center = regressors[:, 0:2] / scale * sizes + centers
    size = regressors[:, 2:4] / scale * sizes
    boxes = cat([(center - size / 2) * scale, (center + size / 2) * scale])
    count = (regressors.shape[1] - BOX_COLUMNS) // 2
    points = cat([(regressors[:, BOX_COLUMNS + 2 * k : BOX_COLUMNS + 2 * k + 2] / scale * sizes + centers) * scale for k in range(count)])
    return boxes, points


def blazeface_detections(
    regressors, logits, anchors, input_hw: tuple[int, int], cfg: PostprocessConfig, score_clipping: float | None = SCORE_CLIPPING
) -> Detections:
    """One image's ``regressors`` [N, 16] and ``classificators`` [N, 1] -> faces in input pixels, as
    MediaPipe's graph finds them (``cfg.conf_threshold`` is ``min_score_thresh``, ``cfg.nms_iou`` the
    weighted NMS's ``min_suppression_threshold``)."""
    is_torch = isinstance(regressors, torch.Tensor)
    logits = logits.reshape(-1)
    if score_clipping is not None:
        logits = logits.clamp(-score_clipping, score_clipping) if is_torch else np.clip(logits, -score_clipping, score_clipping)
    scores = _sigmoid(logits)
    boxes, points = decode_regressors(regressors, anchors, input_hw)
    valid = (scores >= cfg.conf_threshold) & (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
    keep = torch.nonzero(valid).flatten() if is_torch else np.flatnonzero(valid)
    boxes, points, scores = boxes[keep], points[keep], scores[keep]
    order = torch.sort(scores, descending=True, stable=True).indices if is_torch else np.argsort(-scores, kind="stable")
    order = order[: cfg.pre_nms_top_k]
    return Detections(*weighted_nms(boxes[order], scores[order], points[order], cfg.nms_iou, max_keep=cfg.max_detections))
