"""The NumPy mirror of the Dart decoder shipped in every Flutter package (``lib/face_decoder.dart``; the
family's part, ``lib/family_decoder.dart``, is mirrored by the family's ``app_detect``).

Function for function what the app runs -- ``loadAnchors``, ``nms``, ``detect``, ``endToEndDetections``,
``letterboxTransform``, ``undoLetterbox`` -- as a thin layer over the one implementation of each step
(:mod:`mobilekit.nms`, :mod:`mobilekit.image_io`, the family's decode). No Dart SDK runs here, so this mirror plus the golden files is the
tested contract: the packaged ``model.tflite`` + ``anchors.json`` + ``model_meta.json``, decoded
with these functions, must reproduce PyTorch's faces.
"""

from __future__ import annotations

import numpy as np

from mobilekit.detections import DecoderSettings, Detections
from mobilekit.errors import MobilekitError
from mobilekit.families import FAMILIES
from mobilekit.image_io import InputTransform, resize_to_input


def load_anchors(anchors_json: dict) -> np.ndarray:
    """``loadAnchors``: the ``anchors`` list of ``anchors.json`` as float32 ``[N, 4]``."""
    if anchors_json.get("layout") != "cx,cy,w,h" or not anchors_json.get("normalized"):
        raise MobilekitError(f"anchors.json layout {anchors_json.get('layout')!r} is not normalised cx,cy,w,h")
    anchors = np.asarray(anchors_json["anchors"], dtype=np.float32)
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise MobilekitError(f"anchors.json anchors have shape {anchors.shape}, expected [N, 4]")
    return anchors


def detect(outputs: dict[str, np.ndarray], anchors: np.ndarray | None, settings: DecoderSettings) -> Detections:
    """``detect``: one image's raw outputs by name (batch dimension allowed) -> faces in model-input pixels:
    the end-to-end model's rows, or the family's ``app_detect`` (the Dart ``familyDetect``)."""
    if settings.kind == "end_to_end":
        return end_to_end_detections(outputs)
    if settings.kind not in FAMILIES:
        raise MobilekitError(f"unknown decoder kind {settings.kind!r} in model_meta.json; known: end_to_end, {', '.join(FAMILIES)}")
    single = {name: value[0] if value.ndim == 3 else value for name, value in outputs.items()}
    return FAMILIES[settings.kind].app_detect(single, anchors, settings)


def end_to_end_detections(outputs: dict[str, np.ndarray]) -> Detections:
    """``endToEndDetections``: the first ``num_detections`` rows of an end-to-end model's outputs."""
    count = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
    return Detections(
        outputs["boxes"].reshape(-1, 4)[:count],
        outputs["scores"].reshape(-1)[:count],
        outputs["landmarks"].reshape(outputs["boxes"].reshape(-1, 4).shape[0], -1)[:count],
    )


def letterbox_transform(image_hw: tuple[int, int], input_hw: tuple[int, int], mode: str = "letterbox") -> InputTransform:
    """``letterboxTransform``: how image pixels map to model-input pixels (the transform
    :func:`mobilekit.image_io.resize_to_input` applies, computed by it on a blank frame)."""
    blank = np.zeros((*image_hw, 3), dtype=np.uint8)
    return resize_to_input(blank, input_hw, mode)[1]


def undo_letterbox(faces: Detections, transform: InputTransform) -> Detections:
    """``undoLetterbox``: faces in model-input pixels -> faces in the original image's pixels."""
    return Detections(transform.to_image(faces.boxes), faces.scores, transform.to_image(faces.landmarks))
