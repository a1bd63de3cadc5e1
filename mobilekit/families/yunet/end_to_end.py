"""YuNet's decode in TensorFlow, for the end-to-end graph (:mod:`mobilekit.flutter.end_to_end`): the math of
:func:`mobilekit.families.yunet.decode.decode_yunet` against the points baked in as a constant."""

from __future__ import annotations

import numpy as np

from mobilekit.families.yunet.points import PointConfig, grid_points


def graph_constants(points: PointConfig, input_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """The array the graph holds: the points ``[N, 4]`` (x, y, stride, stride) in input pixels."""
    return {"points": grid_points(points, input_hw)}


def tf_decode(tf, outputs: dict, constants: dict[str, np.ndarray], input_hw: tuple[int, int]):
    """``cls``/``obj``/``bbox``/``kps`` of one image (batch 1) -> boxes ``[N, 4]`` x1, y1, x2, y2 and keypoints
    ``[N, 2L]`` in input pixels, face scores ``[N]`` = ``sqrt(clip(cls) * clip(obj))`` (OpenCV's score)."""
    points = tf.constant(constants["points"])
    xy, stride = points[:, :2], points[:, 2:]
    cls, obj = outputs["cls"][0, :, 0], outputs["obj"][0, :, 0]
    bbox, kps = outputs["bbox"][0], outputs["kps"][0]
    scores = tf.sqrt(tf.clip_by_value(cls, 0.0, 1.0) * tf.clip_by_value(obj, 0.0, 1.0))
    centre = xy + bbox[:, :2] * stride
    size = tf.exp(bbox[:, 2:]) * stride
    top_left = centre - size / 2
    boxes = tf.concat([top_left, top_left + size], axis=1)
    count = kps.shape[-1] // 2
    keypoints = tf.concat([xy + kps[:, 2 * i : 2 * i + 2] * stride for i in range(count)], axis=1)
    return boxes, scores, keypoints
