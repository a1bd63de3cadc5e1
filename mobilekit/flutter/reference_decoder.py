"""The NumPy mirror of the Dart decoder shipped in every Flutter package (``lib/face_decoder.dart``).

Function for function what the app runs -- ``generateAnchors``, ``decode``, ``nms``,
``letterboxTransform``, ``undoLetterbox``, ``detect`` (``decodeYolo`` mirrors
:func:`mobilekit.families.yolo.decode.yolo_detections`, ``decodeBlazeFace`` and ``weightedNms``
:func:`mobilekit.families.blazeface.decode.blazeface_detections`) -- as a thin layer over the one implementation
of each step (:mod:`mobilekit.families.retinaface.priors`, :mod:`mobilekit.box_coder`, :mod:`mobilekit.nms`,
:mod:`mobilekit.image_io`). No Dart SDK runs here, so this mirror plus the golden files is the
tested contract: the packaged ``model.tflite`` + ``anchors.json`` + ``model_meta.json``, decoded
with these functions, must reproduce PyTorch's faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobilekit.box_coder import decode_boxes, decode_landmarks
from mobilekit.detections import Detections, PostprocessConfig
from mobilekit.errors import MobilekitError
from mobilekit.families.retinaface.priors import PriorConfig, prior_boxes
from mobilekit.image_io import InputTransform, resize_to_input
from mobilekit.nms import nms as greedy_nms


@dataclass(frozen=True)
class DecoderSettings:
    """What ``detect`` needs besides the outputs; read from ``model_meta.json`` ("decoder")."""

    kind: str  # "retinaface" | "yolo" | "blazeface" | "end_to_end"
    input_hw: tuple[int, int]
    variances: tuple[float, ...]
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
                variances=tuple(d.get("variances", ())),  # the priors' box coding: RetinaFace kinds only
                score_threshold=float(d["score_threshold"]),
                nms_iou=float(d["nms_iou"]),
                nms_offset=float(d["nms_offset"]),
                pre_nms_top_k=int(d["pre_nms_top_k"]),
                max_detections=int(d["max_detections"]),
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise MobilekitError(f"model_meta.json lacks decoder field {exc}") from None


def generate_anchors(priors: PriorConfig, input_hw: tuple[int, int]) -> np.ndarray:
    """``generateAnchors``: priors ``[N, 4]`` (cx, cy, w, h, normalised) in output-row order."""
    return prior_boxes(priors, input_hw)


def load_anchors(anchors_json: dict) -> np.ndarray:
    """``loadAnchors``: the ``anchors`` list of ``anchors.json`` as float32 ``[N, 4]``."""
    if anchors_json.get("layout") != "cx,cy,w,h" or not anchors_json.get("normalized"):
        raise MobilekitError(f"anchors.json layout {anchors_json.get('layout')!r} is not normalised cx,cy,w,h")
    anchors = np.asarray(anchors_json["anchors"], dtype=np.float32)
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise MobilekitError(f"anchors.json anchors have shape {anchors.shape}, expected [N, 4]")
    return anchors


def decode(
    loc: np.ndarray,
    conf: np.ndarray,
    landmarks: np.ndarray,
    anchors: np.ndarray,
    settings: DecoderSettings,
) -> Detections:
    """``decode``: rows with face score above the threshold, best first (stable), at most
    ``pre_nms_top_k``, decoded to model-input pixels (boxes x1, y1, x2, y2; landmarks x, y interleaved)."""
    scores = conf[:, 1]
    candidates = np.flatnonzero(scores > settings.score_threshold)
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")][: settings.pre_nms_top_k]
    height, width = settings.input_hw
    box_scale = np.array([width, height] * 2, dtype=np.float32)
    points_scale = np.array([width, height] * (landmarks.shape[-1] // 2), dtype=np.float32)
    rows = anchors[candidates]
    boxes = decode_boxes(loc[candidates], rows, settings.variances) * box_scale
    points = decode_landmarks(landmarks[candidates], rows, settings.variances) * points_scale
    return Detections(boxes, scores[candidates], points)


def nms(candidates: Detections, settings: DecoderSettings) -> Detections:
    """``nms``: greedy suppression over candidates sorted best first; keeps ``max_detections``."""
    kept = greedy_nms(candidates.boxes, candidates.scores, settings.nms_iou, offset=settings.nms_offset, max_keep=settings.max_detections)
    return Detections(candidates.boxes[kept], candidates.scores[kept], candidates.landmarks[kept])


def detect(outputs: dict[str, np.ndarray], anchors: np.ndarray | None, settings: DecoderSettings) -> Detections:
    """``detect``: one image's raw outputs by name (batch dimension allowed) -> faces in model-input pixels."""
    single = {name: value[0] if value.ndim == 3 else value for name, value in outputs.items()}
    from mobilekit.families.blazeface.decode import blazeface_detections
    from mobilekit.families.yolo.decode import yolo_detections

    decoders = {  # the decoder kinds of model_meta.json, as the Dart decoder's switch
        "retinaface": lambda: nms(decode(single["loc"], single["conf"], single["landmarks"], anchors, settings), settings),
        "yolo": lambda: yolo_detections(single["predictions"], settings.input_hw, postprocess_config(settings)),
        "blazeface": lambda: blazeface_detections(
            single["regressors"], single["classificators"], anchors, settings.input_hw, postprocess_config(settings)
        ),
        "end_to_end": lambda: end_to_end_detections(outputs),
    }
    if settings.kind not in decoders:
        raise MobilekitError(f"unknown decoder kind {settings.kind!r} in model_meta.json; known: {', '.join(decoders)}")
    return decoders[settings.kind]()


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


def postprocess_config(settings: DecoderSettings) -> PostprocessConfig:
    """The :class:`PostprocessConfig` that makes ``mobilekit.families.retinaface.decode`` decode like ``settings``."""
    return PostprocessConfig(
        conf_threshold=settings.score_threshold,
        nms_iou=settings.nms_iou,
        pre_nms_top_k=settings.pre_nms_top_k,
        max_detections=settings.max_detections,
        nms_offset=settings.nms_offset,
    )
