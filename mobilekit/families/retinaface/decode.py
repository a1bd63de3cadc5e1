"""Raw outputs -> faces: decode against priors, threshold, top-k, NMS. One implementation, used by
prediction, evaluation, parity, the end-to-end export checks and the Flutter reference decoder.

``decode_detections`` takes NumPy arrays or torch tensors (one image, no batch dimension) and
returns the same type; both backends give identical results.
"""

from __future__ import annotations

import numpy as np
import torch

from mobilekit.box_coder import decode_boxes, decode_landmarks
from mobilekit.detections import DecoderSettings, Detections, PostprocessConfig
from mobilekit.families.retinaface.priors import PriorConfig
from mobilekit.nms import nms


def decode_detections(
    loc,
    conf,
    landmarks,
    priors,
    priors_cfg: PriorConfig,
    scale_wh: tuple[float, float],
    cfg: PostprocessConfig = PostprocessConfig(),
) -> Detections:
    """Decode one image's outputs (``loc`` [N, 4], ``conf`` [N, 2] probabilities, ``landmarks`` [N, 10]).

    ``scale_wh`` is the (width, height) in pixels that normalised coordinates are multiplied by
    (the model input size for input-pixel coordinates, or the original image size for a stretch
    resize).
    """
    is_torch = isinstance(loc, torch.Tensor)
    variances = priors_cfg.variances
    width, height = scale_wh
    if is_torch:
        priors = priors.to(loc.device)
        box_scale = torch.tensor([width, height] * 2, dtype=loc.dtype, device=loc.device)
        lm_scale = torch.tensor([width, height] * (landmarks.shape[-1] // 2), dtype=loc.dtype, device=loc.device)
    else:
        box_scale = np.array([width, height] * 2, dtype=loc.dtype)
        lm_scale = np.array([width, height] * (landmarks.shape[-1] // 2), dtype=loc.dtype)
    scores = conf[:, 1]
    keep = scores > cfg.conf_threshold
    if is_torch:
        keep = torch.nonzero(keep).flatten()
    else:
        keep = np.flatnonzero(keep)
    loc, priors_kept, landmarks, scores = loc[keep], priors[keep], landmarks[keep], scores[keep]
    # Top-k by score before NMS (stable: ties keep prior order).
    order = torch.sort(scores, descending=True, stable=True).indices if is_torch else np.argsort(-scores, kind="stable")
    order = order[: cfg.pre_nms_top_k]
    loc, priors_kept, landmarks, scores = loc[order], priors_kept[order], landmarks[order], scores[order]
    boxes = decode_boxes(loc, priors_kept, variances) * box_scale
    points = decode_landmarks(landmarks, priors_kept, variances) * lm_scale
    kept = nms(boxes, scores, cfg.nms_iou, offset=cfg.nms_offset, max_keep=cfg.max_detections)
    return Detections(boxes[kept], scores[kept], points[kept])


def app_decode(loc: np.ndarray, conf: np.ndarray, landmarks: np.ndarray, anchors: np.ndarray, settings: DecoderSettings) -> Detections:
    """The Dart ``decode`` (``anchors``: anchors.json's priors): rows with face score above the threshold, best
    first (stable), at most ``pre_nms_top_k``, decoded to model-input pixels; the Dart ``nms`` follows."""
    scores = conf[:, 1]
    candidates = np.flatnonzero(scores > settings.score_threshold)
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")][: settings.pre_nms_top_k]
    height, width = settings.input_hw
    box_scale = np.array([width, height] * 2, dtype=np.float32)
    points_scale = np.array([width, height] * (landmarks.shape[-1] // 2), dtype=np.float32)
    rows = anchors[candidates]
    boxes = decode_boxes(loc[candidates], rows, settings.variances) * box_scale
    points = decode_landmarks(landmarks[candidates], rows, settings.variances) * points_scale
    faces = Detections(boxes, scores[candidates], points)
    kept = nms(faces.boxes, faces.scores, settings.nms_iou, offset=settings.nms_offset, max_keep=settings.max_detections)
    return Detections(faces.boxes[kept], faces.scores[kept], faces.landmarks[kept])
