"""What every family's decode returns and takes: :class:`Detections` (faces in pixels),
:class:`PostprocessConfig` (score threshold, top-k, NMS settings) and :class:`DecoderSettings` (the app's
decoder settings, ``model_meta.json``'s ``decoder`` block, as the Dart decoder reads them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mobilekit.errors import MobilekitError


@dataclass(frozen=True)
class PostprocessConfig:
    """Reference RetinaFace settings: score > 0.02, top 5000, NMS 0.4 (+1 area), keep 750."""

    conf_threshold: float = 0.02
    nms_iou: float = 0.4
    pre_nms_top_k: int = 5000
    max_detections: int = 750
    nms_offset: float = 1.0


@dataclass
class Detections:
    """Faces in pixels of the decoded frame: ``boxes`` [K, 4] xyxy, ``scores`` [K], ``landmarks`` [K, 2L]
    (the family's L keypoints, x/y interleaved: 5 for RetinaFace/YOLO, 6 for BlazeFace)."""

    boxes: np.ndarray | torch.Tensor
    scores: np.ndarray | torch.Tensor
    landmarks: np.ndarray | torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def numpy(self) -> "Detections":
        def conv(x):
            return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x

        return Detections(conv(self.boxes), conv(self.scores), conv(self.landmarks))

    def to_json(self) -> list[dict]:
        d = self.numpy()
        return [
            {
                "box_xyxy": [round(float(v), 3) for v in box],
                "score": round(float(score), 5),
                "landmarks_xy": [round(float(v), 3) for v in lms],
            }
            for box, score, lms in zip(d.boxes, d.scores, d.landmarks)
        ]


@dataclass(frozen=True)
class DecoderSettings:
    """What ``detect`` needs besides the outputs; read from ``model_meta.json`` ("decoder")."""

    kind: str  # a family's name, or "end_to_end"
    input_hw: tuple[int, int]
    variances: tuple[float, ...]  # the priors' box coding (RetinaFace kinds only)
    score_clipping: float | None  # logits clipped to +-this before the sigmoid (BlazeFace); None: no clipping
    score_threshold: float
    nms_iou: float
    nms_offset: float
    pre_nms_top_k: int
    max_detections: int

    @classmethod
    def from_meta(cls, meta: dict) -> "DecoderSettings":
        try:
            d = meta["decoder"]
            return cls(
                kind=d["kind"],
                input_hw=tuple(meta["input"]["shape"][1:3]),
                variances=tuple(d.get("variances", ())),
                score_clipping=None if d.get("score_clipping") is None else float(d["score_clipping"]),
                score_threshold=float(d["score_threshold"]),
                nms_iou=float(d["nms_iou"]),
                nms_offset=float(d["nms_offset"]),
                pre_nms_top_k=int(d["pre_nms_top_k"]),
                max_detections=int(d["max_detections"]),
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise MobilekitError(f"model_meta.json lacks decoder field {exc}") from None

    def postprocess_config(self) -> PostprocessConfig:
        """The :class:`PostprocessConfig` that makes the library's decode behave like these settings."""
        return PostprocessConfig(
            conf_threshold=self.score_threshold,
            nms_iou=self.nms_iou,
            pre_nms_top_k=self.pre_nms_top_k,
            max_detections=self.max_detections,
            nms_offset=self.nms_offset,
        )
