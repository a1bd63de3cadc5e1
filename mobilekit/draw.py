"""Drawing detections on an image (boxes, scores, landmarks: 5, or 6 for BlazeFace)."""

from __future__ import annotations

import cv2
import numpy as np

from mobilekit.detections import Detections

# One colour per landmark index (RGB): RetinaFace's left eye, right eye, nose, left / right mouth corner;
# BlazeFace's right eye, left eye, nose tip, mouth centre, right / left ear tragion.
LANDMARK_COLORS = ((255, 0, 0), (0, 255, 255), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 0))


def draw_detections(image: np.ndarray, dets: Detections, min_score: float = 0.5) -> np.ndarray:
    """A copy of the RGB image with every face scoring >= ``min_score`` drawn."""
    canvas = image.copy()
    d = dets.numpy()
    thickness = max(1, round(min(image.shape[:2]) / 400))
    for box, score, points in zip(d.boxes, d.scores, d.landmarks):
        if score < min_score:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 255, 0), thickness)
        cv2.putText(canvas, f"{score:.2f}", (x1, max(0, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, (255, 255, 255), thickness)
        for (x, y), color in zip(points.reshape(-1, 2), LANDMARK_COLORS):
            cv2.circle(canvas, (int(round(x)), int(round(y))), thickness + 1, color, -1)
    return canvas
