"""Comparing a model with the shared reference detections (used for every model with a reference)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

from mobilekit.box_coder import box_iou
from mobilekit.families.retinaface.priors import prior_boxes
from mobilekit.image_io import read_image, to_nchw
from mobilekit.inference import detect_image, run_model
from mobilekit.models import FaceDetector


def assert_reproduces_raw_outputs(
    model: FaceDetector, shared: Path, name: str, atol: float = 1e-4, atol_landmarks: float | None = None
) -> None:
    """Raw outputs within ``atol`` (landmarks within ``atol_landmarks`` where given) of the reference."""
    raw = np.load(shared / "reference" / f"{name}_crowd_raw.npz")
    image = read_image(shared / "images" / "crowd_624x1024.jpg")
    outputs = run_model(model, to_nchw(image))
    for ours, theirs in (("loc", "loc"), ("conf", "conf"), ("landmarks", "landms")):
        tol = atol_landmarks if ours == "landmarks" and atol_landmarks is not None else atol
        err = np.abs(outputs[ours].numpy() - raw[theirs]).max()
        assert err <= tol, f"{name} {ours}: max abs error {err} > {tol}"
    np.testing.assert_array_equal(prior_boxes(model.deploy.anchors, image.shape[:2]), raw["priors"])


def assert_reproduces_detections(model: FaceDetector, shared: Path, name: str) -> None:
    """Every reference face with score >= 0.5 matched: corners within 0.5 px, score within 1e-4."""
    reference = json.loads((shared / "reference" / f"{name}_detections.json").read_text())
    for result in reference["results"]:
        image = read_image(shared / "images" / result["image"])
        assert image.shape[:2] == (result["height"], result["width"])
        dets = detect_image(model, image)
        faces = [f for f in result["faces"] if f["score"] >= 0.5]
        assert faces, result["image"]
        ref_boxes = np.array([f["box_xyxy"] for f in faces], dtype=np.float32)
        iou = box_iou(ref_boxes, dets.boxes)
        for k, face in enumerate(faces):
            j = int(iou[k].argmax())
            assert np.abs(dets.boxes[j] - ref_boxes[k]).max() <= 0.5, (result["image"], face)
            assert abs(float(dets.scores[j]) - face["score"]) <= 1e-4, (result["image"], face)
            assert np.abs(dets.landmarks[j] - np.array(face["landmarks_xy"])).max() <= 0.5, (result["image"], face)
        assert int((dets.scores >= 0.5).sum()) == len(faces), result["image"]


def assert_folding_is_exact(model: FaceDetector) -> None:
    """Folding the channel order / std into the first conv (as export does) changes no output."""
    folded = copy.deepcopy(model)
    folded.fold_input_preprocessing()
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        for a, b in zip(model(x), folded(x)):
            assert torch.allclose(a, b, atol=1e-4)
