"""RetinaFace's decode in TensorFlow, for the end-to-end graph (:mod:`mobilekit.flutter.end_to_end`): the
math of :mod:`mobilekit.box_coder` against the priors baked in as a constant."""

from __future__ import annotations

import numpy as np

from mobilekit.families.retinaface.priors import PriorConfig, prior_boxes


def graph_constants(priors: PriorConfig, input_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """The arrays the graph holds: the priors ``[N, 4]`` and the variances."""
    return {"priors": prior_boxes(priors, input_hw), "variances": np.asarray(priors.variances, dtype=np.float32)}


def tf_decode(tf, outputs: dict, constants: dict[str, np.ndarray], input_hw: tuple[int, int]):
    """``loc``/``conf``/``landmarks`` of one image (batch 1) -> boxes ``[N, 4]`` x1, y1, x2, y2 and keypoints
    ``[N, 2L]`` in input pixels, face scores ``[N]``; ``decode_boxes`` / ``decode_landmarks`` in TensorFlow."""
    height, width = input_hw
    v0, v1 = (float(v) for v in constants["variances"])
    priors = tf.constant(constants["priors"])
    centers, sizes = priors[:, :2], priors[:, 2:]
    loc, scores, offsets = outputs["loc"][0], outputs["conf"][0, :, 1], outputs["landmarks"][0]
    box_centers = centers + loc[:, :2] * v0 * sizes
    box_sizes = sizes * tf.exp(loc[:, 2:] * v1)
    top_left = box_centers - box_sizes / 2
    boxes = tf.concat([top_left, top_left + box_sizes], axis=1) * tf.constant([width, height] * 2, tf.float32)
    count = offsets.shape[-1] // 2
    points = tf.concat([centers + offsets[:, 2 * i : 2 * i + 2] * v0 * sizes for i in range(count)], axis=1)
    return boxes, scores, points * tf.constant([width, height] * count, tf.float32)
