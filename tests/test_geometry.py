"""Priors, box coding and NMS: the single source of truth, in NumPy and torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mobilekit.box_coder import box_iou, decode_boxes, decode_landmarks, encode_boxes, encode_landmarks
from mobilekit.detections import PostprocessConfig
from mobilekit.families.retinaface.decode import decode_detections
from mobilekit.families.retinaface.priors import PriorConfig, feature_map_sizes, num_priors, prior_boxes, prior_boxes_torch
from mobilekit.nms import nms, nms_on_device

CFG = PriorConfig()


def reference_priors(cfg: PriorConfig, height: int, width: int) -> np.ndarray:
    """Pytorch_Retinaface's PriorBox, written out as loops."""
    anchors = []
    for k, step in enumerate(cfg.steps):
        for i in range(math.ceil(height / step)):
            for j in range(math.ceil(width / step)):
                for size in cfg.min_sizes[k]:
                    anchors.append([(j + 0.5) * step / width, (i + 0.5) * step / height, size / width, size / height])
    return np.array(anchors, dtype=np.float32).reshape(-1, 4)


@pytest.mark.parametrize("size", [(333, 517), (1, 1), (640, 640), (624, 1024), (7, 9)])
def test_priors_count_and_order_match_reference_loops(size):
    priors = prior_boxes(CFG, size)
    expected = reference_priors(CFG, *size)
    assert priors.shape == (num_priors(CFG, size), 4)
    np.testing.assert_array_equal(priors, expected)
    assert torch.equal(prior_boxes_torch(CFG, size), torch.from_numpy(expected))


def test_odd_size_feature_maps_use_ceil():
    assert feature_map_sizes(CFG, (333, 517)) == [(42, 65), (21, 33), (11, 17)]
    assert feature_map_sizes(CFG, (1, 1)) == [(1, 1)] * 3
    assert num_priors(CFG, (1, 1)) == 6


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 0.8, size=(n, 2))
    wh = rng.uniform(0.01, 0.3, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 50))
def test_encode_decode_round_trip_numpy_and_torch(seed, n):
    rng = np.random.default_rng(seed)
    all_priors = prior_boxes(CFG, (64, 96))
    priors = all_priors[rng.integers(0, len(all_priors), size=n)]
    boxes = random_boxes(rng, n)
    points = rng.uniform(0, 1, size=(n, 10)).astype(np.float32)
    loc = encode_boxes(boxes, priors, CFG.variances)
    np.testing.assert_allclose(decode_boxes(loc, priors, CFG.variances), boxes, atol=1e-5)
    lm = encode_landmarks(points, priors, CFG.variances)
    np.testing.assert_allclose(decode_landmarks(lm, priors, CFG.variances), points, atol=1e-5)
    # torch performs the same operations; only exp/log may differ in the last bit between libms.
    t = torch.from_numpy
    np.testing.assert_allclose(decode_boxes(t(loc), t(priors), CFG.variances).numpy(), decode_boxes(loc, priors, CFG.variances), rtol=3e-7, atol=1e-7)
    assert np.array_equal(encode_landmarks(t(points), t(priors), CFG.variances).numpy(), lm)
    assert np.array_equal(decode_landmarks(t(lm), t(priors), CFG.variances).numpy(), decode_landmarks(lm, priors, CFG.variances))


def brute_force_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, offset: float) -> list[int]:
    """Greedy NMS from its definition: highest remaining score first, suppress IoU > threshold."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    suppressed, keep = set(), []
    for i in order:
        if i in suppressed:
            continue
        keep.append(i)
        for j in order:
            if j not in suppressed and j != i and j not in keep:
                xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
                xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
                inter = max(0.0, xx2 - xx1 + offset) * max(0.0, yy2 - yy1 + offset)
                area_i = (boxes[i, 2] - boxes[i, 0] + offset) * (boxes[i, 3] - boxes[i, 1] + offset)
                area_j = (boxes[j, 2] - boxes[j, 0] + offset) * (boxes[j, 3] - boxes[j, 1] + offset)
                if inter / (area_i + area_j - inter) > threshold:
                    suppressed.add(j)
    return keep


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 60), threshold=st.floats(0.1, 0.9), offset=st.sampled_from([0.0, 1.0]))
def test_nms_matches_brute_force(seed, n, threshold, offset):
    rng = np.random.default_rng(seed)
    boxes = (random_boxes(rng, n) * 200).astype(np.float64)
    scores = rng.choice(np.linspace(0.05, 1, 12), size=n)  # repeated scores exercise ties
    expected = brute_force_nms(boxes, scores, threshold, offset)
    assert nms(boxes, scores, threshold, offset).tolist() == expected
    assert nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold, offset).tolist() == expected
    assert nms_on_device(torch.from_numpy(boxes), torch.from_numpy(scores), threshold, offset).tolist() == expected
    for max_keep in (1, 3):
        assert nms(boxes, scores, threshold, offset, max_keep).tolist() == expected[:max_keep]
        assert nms_on_device(torch.from_numpy(boxes), torch.from_numpy(scores), threshold, offset, max_keep).tolist() == expected[:max_keep]


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 50 / 150, 0.0])
    assert torch.allclose(box_iou(torch.from_numpy(a), torch.from_numpy(b)), torch.from_numpy(box_iou(a, b)))


def test_decode_detections_identical_in_numpy_and_torch():
    rng = np.random.default_rng(0)
    size = (96, 128)
    priors = prior_boxes(CFG, size)
    n = len(priors)
    loc = rng.normal(0, 1, size=(n, 4)).astype(np.float32)
    logits = rng.normal(0, 2, size=(n, 2)).astype(np.float32)
    conf = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    landmarks = rng.normal(0, 1, size=(n, 10)).astype(np.float32)
    cfg = PostprocessConfig(conf_threshold=0.3)
    dn = decode_detections(loc, conf, landmarks, priors, CFG, (128, 96), cfg)
    dt = decode_detections(*(torch.from_numpy(a) for a in (loc, conf, landmarks, priors)), CFG, (128, 96), cfg).numpy()
    assert len(dn) > 5
    np.testing.assert_array_equal(dn.scores, dt.scores)
    np.testing.assert_array_equal(dn.landmarks, dt.landmarks)
    np.testing.assert_allclose(dn.boxes, dt.boxes, rtol=3e-7, atol=1e-4)  # exp may differ by 1 ulp
    assert np.all(np.diff(dn.scores) <= 0)
