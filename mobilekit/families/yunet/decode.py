"""Decoder "yunet": YuNet's raw outputs, and their decode into faces as OpenCV's ``cv::FaceDetectorYN`` does it.

Contract (OpenCV 5.0 ``modules/objdetect/src/face_detect.cpp``, ``FaceDetectorYNImpl::postProcess``), per
point ``(x, y, s, s)`` of :func:`mobilekit.families.yunet.points.grid_points`:

* score ``sqrt(clamp(cls, 0, 1) * clamp(obj, 0, 1))`` of the sigmoid outputs ``cls`` and ``obj``;
* box centre ``x + dx * s``, ``y + dy * s`` (OpenCV: ``(col + dx) * s``), size ``exp(dw) * s``, ``exp(dh) * s``;
  boxes are returned as xyxy in model-input pixels;
* keypoint ``k``: ``x + kps[2k] * s``, ``y + kps[2k + 1] * s`` (right eye, left eye, nose tip, right and left
  mouth corners: OpenCV's order, "right" being the person's right);
* scores ``> cfg.conf_threshold`` (``cv::dnn::NMSBoxes``'s test), the ``cfg.pre_nms_top_k`` best (stable
  order), greedy NMS at ``cfg.nms_iou`` with ``cfg.nms_offset`` (0: ``cv::Rect`` areas ``w * h``). OpenCV runs
  NMS on integer rectangles (``Rect2i(int(x1), int(y1), int(w), int(h))``, truncation); the decode does too,
  so that the same boxes survive, and returns the float boxes. Then the ``cfg.max_detections`` best.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from mobilekit.detections import DecoderSettings, Detections, PostprocessConfig
from mobilekit.nms import nms

YUNET_NMS_OFFSET = 0.0  # cv::dnn::NMSBoxes on cv::Rect: area = width * height


class YuNetRawOutputs(NamedTuple):
    """What a YuNet model's ``forward`` returns, rows ordered level (stride 8, 16, 32) -> row -> column,
    ``N = sum ceil(H / s) * ceil(W / s)``: ``cls`` [B, N, 1] and ``obj`` [B, N, 1] logits (before the sigmoid),
    ``bbox`` [B, N, 4] (dx, dy, log w, log h in stride units), ``kps`` [B, N, 10] (x, y offsets in stride units)."""

    cls: torch.Tensor
    obj: torch.Tensor
    bbox: torch.Tensor
    kps: torch.Tensor


def decode_yunet(cls, obj, bbox, kps, points, cfg: PostprocessConfig) -> Detections:
    """One image's deployment outputs (sigmoid ``cls`` [N, 1], sigmoid ``obj`` [N, 1], ``bbox`` [N, 4],
    ``kps`` [N, 10]; NumPy or torch, no batch axis) and ``points`` [N, 4] -> faces in input pixels, best first,
    in the inputs' type."""
    is_torch = isinstance(bbox, torch.Tensor)
    if is_torch:
        points = torch.as_tensor(points, dtype=bbox.dtype, device=bbox.device)
        xp, trunc, exp, keep_where = torch, torch.trunc, torch.exp, lambda m: torch.nonzero(m).flatten()
    else:
        points = np.asarray(points, dtype=bbox.dtype)
        xp, trunc, exp, keep_where = np, np.trunc, np.exp, np.flatnonzero
    if points.shape[0] != bbox.shape[0]:
        raise ValueError(f"{bbox.shape[0]} output rows but {points.shape[0]} points: outputs and points are for different input sizes")
    scores = xp.sqrt(cls.reshape(-1).clip(0.0, 1.0) * obj.reshape(-1).clip(0.0, 1.0))
    keep = keep_where(scores > cfg.conf_threshold)
    scores, bbox, kps, points = scores[keep], bbox[keep], kps[keep], points[keep]
    order = torch.sort(scores, descending=True, stable=True).indices if is_torch else np.argsort(-scores, kind="stable")
    order = order[: cfg.pre_nms_top_k]
    scores, bbox, kps, points = scores[order], bbox[order], kps[order], points[order]

    xy, stride = points[:, :2], points[:, 2:]
    centre, size = xy + bbox[:, :2] * stride, exp(bbox[:, 2:]) * stride
    corner = centre - size / 2
    cat = torch.cat if is_torch else np.concatenate
    boxes = cat([corner, corner + size], 1)
    count = kps.shape[0]
    landmarks = (kps.reshape(count, kps.shape[1] // 2, 2) * stride[:, None] + xy[:, None]).reshape(count, kps.shape[1])
    int_corner = trunc(corner)  # OpenCV's Rect2i(int(x1), int(y1), int(w), int(h))
    kept = nms(cat([int_corner, int_corner + trunc(size)], 1), scores, cfg.nms_iou, cfg.nms_offset, cfg.max_detections)
    return Detections(boxes[kept], scores[kept], landmarks[kept])


def app_decode(outputs: dict[str, np.ndarray], anchors: np.ndarray, settings: DecoderSettings) -> Detections:
    """The Dart ``familyDetect`` of ``decoder.dart`` (``decodeYuNet`` + ``integerNms``): ``anchors`` are anchors.json's
    normalised points (x / W, y / H, stride / W, stride / H); the same decode as :func:`decode_yunet` written
    in normalised coordinates as the app computes it."""
    height, width = settings.input_hw
    scale = np.array([width, height], dtype=np.float32)
    scores = np.sqrt(outputs["cls"].reshape(-1).clip(0.0, 1.0) * outputs["obj"].reshape(-1).clip(0.0, 1.0))
    rows = np.flatnonzero(scores > settings.score_threshold)
    rows = rows[np.argsort(-scores[rows], kind="stable")][: settings.pre_nms_top_k]
    points, bbox, kps = anchors[rows], outputs["bbox"][rows], outputs["kps"][rows]
    centre, size = points[:, :2] + bbox[:, :2] * points[:, 2:], np.exp(bbox[:, 2:]) * points[:, 2:]
    boxes = np.concatenate([(centre - size / 2) * scale, (centre + size / 2) * scale], 1)
    count = len(rows)
    keypoints = ((points[:, None, :2] + kps.reshape(count, -1, 2) * points[:, None, 2:]) * scale).reshape(count, -1)
    corner = np.trunc(boxes[:, :2])
    rects = np.concatenate([corner, corner + np.trunc(boxes[:, 2:] - boxes[:, :2])], 1)
    kept = nms(rects, scores[rows], settings.nms_iou, settings.nms_offset, settings.max_detections)
    return Detections(boxes[kept], scores[rows][kept], keypoints[kept])
