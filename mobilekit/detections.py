"""What every family's decode returns and takes: :class:`Detections` (faces in pixels) and
:class:`PostprocessConfig` (score threshold, top-k, NMS settings)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


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
