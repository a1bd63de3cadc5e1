"""Detector families: everything that depends on the kind of detection head, declared once.

A model's ``DeployConfig.decoder`` names its family and :func:`family_of` returns the declaration.
Prediction, evaluation, training, export sidecars, parity, benchmarks and packaging ask the family
(its decode, loss, augmentation, anchors, output meanings and columns, NMS convention, default
thresholds, parity face thresholds); no other module compares family names. Adding a family is one
subclass here (plus its Dart decoder), registered in :data:`FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mobilekit.config import LANDMARK_NAMES, DeployConfig
from mobilekit.detections import Detections, PostprocessConfig
from mobilekit.blazeface_decode import SCORE_CLIPPING
from mobilekit.yolo_decode import YOLO_NMS_OFFSET

if TYPE_CHECKING:
    import torch.nn as nn


@dataclass(frozen=True)
class ParityTolerance:
    """The face thresholds fp16 and int8 files meet against the float64 PyTorch reference (fp32 files meet
    the model's float criterion, :mod:`mobilekit.converters.float_criterion`)."""

    fp16_match_iou: float = 0.9
    int8_match_iou: float = 0.5
    int8_min_recall: float = 0.95
    int8_min_precision: float = 0.95

    def match_iou(self, precision: str) -> float:
        """IoU at which a face counts as the same face: fp32/fp16 must keep boxes in place, int8 may move them."""
        return self.int8_match_iou if precision == "int8" else self.fp16_match_iou


class DetectorFamily:
    """One kind of detection head. Class attributes are the declaration; methods act on a model's
    ``DeployConfig`` (which carries the per-model values: priors or anchors, ``nms_iou``, thresholds)."""

    name: ClassVar[str]
    augmentation: ClassVar[str]  # FaceDataset mode: "crop_stretch" (RetinaFace's) or "letterbox"
    nms_offset: ClassVar[float]  # NMS area convention: (x2 - x1 + offset) * (y2 - y1 + offset)
    eval_score_threshold: ClassVar[float] = 0.02  # evaluation and parity decode down to this score
    output_meanings: ClassVar[dict[str, str]]
    score_output: ClassVar[str]  # the output holding the face score (labels.txt labels it in the standard metadata)
    end_to_end: ClassVar[bool] = False  # whether `mobilekit package --end-to-end` can build decode + NMS into the graph
    distillation: ClassVar[bool] = False  # whether a student of this family can learn from a RetinaFace-style teacher
    parity: ClassVar[ParityTolerance] = ParityTolerance()
    keypoint_names: ClassVar[tuple[str, ...]] = LANDMARK_NAMES  # in output order; a model has the first num_landmarks
    # Per keypoint, the label.txt landmarks (LANDMARK_NAMES) whose mean it is in training targets; a keypoint
    # the labels lack maps to () and is masked in the loss. None: the keypoints are the label landmarks.
    keypoint_sources: ClassVar[dict[str, tuple[str, ...]] | None] = None
    score_clipping: ClassVar[float | None] = None  # logits clipped to +-this before the sigmoid (model_meta's decoder)
    native_input_only: ClassVar[bool] = False  # whether images go to the model's deploy.input_size unless a size is given
    uint8_outputs_unusable: ClassVar[str] = ""  # why full-integer files (uint8 outputs) lose this family's faces; empty: they do not

    def postprocess(self, deploy: DeployConfig, **overrides) -> PostprocessConfig:
        """Evaluation decode settings for ``deploy`` (score >= ``eval_score_threshold``, the model's
        ``nms_iou``, the family's NMS convention); keyword ``overrides`` replace fields (CLI flags)."""
        base = PostprocessConfig(conf_threshold=self.eval_score_threshold, nms_iou=deploy.nms_iou, nms_offset=self.nms_offset)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def decode(self, deploy: DeployConfig, outputs: dict, input_hw: tuple[int, int], cfg: PostprocessConfig) -> Detections:
        """One image's deployment outputs (by name, NumPy or torch, no batch axis) -> faces in input pixels."""
        raise NotImplementedError

    def criterion(self, model: nn.Module, image_size: tuple[int, int], loc_weight: float) -> nn.Module:
        """The training loss for ``model`` at ``image_size``."""
        raise NotImplementedError

    def anchors(self, deploy: DeployConfig) -> dict:
        """The anchor description recorded in sidecars and ``model_meta.json``."""
        raise NotImplementedError

    def anchors_document(self, deploy: DeployConfig, input_hw: tuple[int, int]) -> dict:
        """``anchors.json`` of a Flutter package."""
        raise NotImplementedError

    def output_columns(self, name: str, deploy: DeployConfig) -> list[str]:
        """The meaning of every column of output ``name``'s last axis."""
        raise NotImplementedError

    def keypoints(self, deploy: DeployConfig) -> tuple[str, ...]:
        """The names of ``deploy``'s keypoints, in output order."""
        return self.keypoint_names[: deploy.num_landmarks]

    def keypoint_columns(self, deploy: DeployConfig) -> list[str]:
        return [f"{name}_{axis}" for name in self.keypoints(deploy) for axis in ("x", "y")]

    def label_keypoint_map(self, deploy: DeployConfig) -> np.ndarray:
        """``[L, 5]`` float32 weights turning a label's 5 landmarks into ``deploy``'s L keypoints
        (``keypoints = weights @ landmarks``); an all-zero row is a keypoint the labels lack."""
        names = self.keypoints(deploy)
        sources = self.keypoint_sources or {name: (name,) for name in names}
        weights = np.zeros((len(names), len(LANDMARK_NAMES)), dtype=np.float32)
        for row, name in enumerate(names):
            for source in sources[name]:
                weights[row, LANDMARK_NAMES.index(source)] = 1.0 / len(sources[name])
        return weights

    def label_landmarks(self, deploy: DeployConfig, keypoints: np.ndarray) -> np.ndarray | None:
        """Detected keypoints ``[K, 2L]`` -> label.txt's 5 landmarks ``[K, 5, 2]`` (pseudo-labels), or None
        when the keypoints do not give all five (BlazeFace: one mouth centre for two corners)."""
        weights = self.label_keypoint_map(deploy)
        exact = weights.max(axis=1) == 1.0  # keypoints that are one label landmark, not a mean of several
        rows = [np.flatnonzero(exact & (weights[:, j] == 1.0)) for j in range(len(LANDMARK_NAMES))]
        if any(len(r) == 0 for r in rows):
            return None
        return np.asarray(keypoints).reshape(len(keypoints), -1, 2)[:, [int(r[0]) for r in rows]]

    def parity_tolerance(self, deploy: DeployConfig) -> ParityTolerance:
        """The face thresholds of ``deploy``'s parity: its family's."""
        return self.parity

    def output_groups(self, name: str, deploy: DeployConfig) -> dict[str, slice]:
        """Parity reports each group of an output's last axis separately; by default the whole output."""
        return {name: slice(None)}


class RetinaFaceFamily(DetectorFamily):
    """SSD-style priors, ``loc``/``conf``/``landmarks`` encoded against them (Pytorch_Retinaface)."""

    name = "retinaface"
    augmentation = "crop_stretch"
    nms_offset = 1.0  # py_cpu_nms's x2 - x1 + 1
    output_meanings = {
        "loc": "box offsets per prior (dx, dy, dw, dh), encoded against the priors with the variances",
        "conf": "class probabilities per prior (softmax over background, face)",
        "landmarks": "5 landmark offsets per prior (x, y interleaved), encoded against the priors",
    }
    score_output = "conf"
    end_to_end = True
    distillation = True

    def decode(self, deploy, outputs, input_hw, cfg):
        import torch

        from mobilekit.postprocess import decode_detections
        from mobilekit.priors import prior_boxes, prior_boxes_torch

        loc = outputs["loc"]
        if isinstance(loc, torch.Tensor):
            priors = prior_boxes_torch(deploy.priors, input_hw, loc.device)
        else:
            priors = prior_boxes(deploy.priors, input_hw)
        height, width = input_hw
        return decode_detections(loc, outputs["conf"], outputs["landmarks"], priors, deploy.priors, (width, height), cfg)

    def criterion(self, model, image_size, loc_weight):
        from mobilekit.training.losses import MultiBoxLoss

        return MultiBoxLoss(model.deploy.priors, image_size, loc_weight=loc_weight)

    def anchors(self, deploy):
        return deploy.priors.to_dict()

    def anchors_document(self, deploy, input_hw):
        from mobilekit.flutter.reference_decoder import generate_anchors

        height, width = input_hw
        anchors = generate_anchors(deploy.priors, input_hw)
        return {
            "layout": "cx,cy,w,h",
            "normalized": True,
            "input_size": [height, width],
            "order": "level -> row -> column -> min_size (output-row order)",
            "min_sizes": [list(s) for s in deploy.priors.min_sizes],
            "steps": list(deploy.priors.steps),
            "variances": list(deploy.priors.variances),
            "clip": deploy.priors.clip,
            "count": int(len(anchors)),
            "anchors": [[float(v) for v in row] for row in anchors],
        }

    def output_columns(self, name, deploy):
        points = self.keypoint_columns(deploy)
        return {
            "loc": ["dx", "dy", "dw", "dh"],
            "conf": ["background_prob", "face_prob"],
            "landmarks": [f"{p}_offset" for p in points],
        }.get(name, [])


class YoloFamily(DetectorFamily):
    """YOLOv5-Face grid anchors, decoded inside the graph to one ``predictions`` output."""

    name = "yolo"
    augmentation = "letterbox"
    nms_offset = YOLO_NMS_OFFSET  # YOLO's x2 - x1
    output_meanings = {
        "predictions": "decoded predictions per grid anchor, normalised 0-1 (cx, cy, w, h, objectness, landmarks x/y, face class)",
    }
    score_output = "predictions"

    def decode(self, deploy, outputs, input_hw, cfg):
        from mobilekit.yolo_decode import yolo_detections

        return yolo_detections(outputs["predictions"], input_hw, cfg)

    def criterion(self, model, image_size, loc_weight):
        from mobilekit.training.yolo_loss import YoloFaceLoss

        return YoloFaceLoss(model)

    def anchors(self, deploy):
        return self._grid(deploy).to_dict()

    def anchors_document(self, deploy, input_hw):
        from mobilekit.yolo_decode import level_sizes, num_predictions

        grid = self._grid(deploy)
        height, width = input_hw
        return {
            "layout": "yolo_grid",
            "normalized": True,
            "decoded_in_graph": True,
            "note": "the 'predictions' output is already decoded (cx, cy, w, h normalised 0-1): no anchor math in the app",
            "input_size": [height, width],
            "order": "level -> row -> column -> anchor (output-row order)",
            "strides": list(grid.strides),
            "anchors_wh_pixels": [[list(a) for a in level] for level in grid.anchors],
            "grid_sizes": [list(s) for s in level_sizes(grid, input_hw)],
            "count": num_predictions(grid, input_hw),
        }

    def output_columns(self, name, deploy):
        if name == "predictions":
            return ["cx", "cy", "w", "h", "objectness", *self.keypoint_columns(deploy), "face_class_prob"]
        return []

    def output_groups(self, name, deploy):
        if name != "predictions":
            return super().output_groups(name, deploy)
        keypoints_end = 5 + 2 * deploy.num_landmarks
        return {
            "predictions.box": slice(0, 4),
            "predictions.objectness": slice(4, 5),
            "predictions.keypoints": slice(5, keypoints_end),
            "predictions.class": slice(keypoints_end, None),
        }

    @staticmethod
    def _grid(deploy: DeployConfig):
        if deploy.yolo_anchors is None:
            raise ValueError(f"{deploy.name} is a 'yolo' model but its deployment config has no yolo_anchors")
        return deploy.yolo_anchors


class BlazeFaceFamily(DetectorFamily):
    """MediaPipe's BlazeFace: SSD anchors of fixed size, regressions in input pixels relative to the anchor
    centre, sigmoid scores clipped at +-100, weighted NMS (:mod:`mobilekit.blazeface_decode`)."""

    name = "blazeface"
    augmentation = "letterbox"
    nms_offset = 0.0  # normalised-coordinate IoU, no +1
    output_meanings = {
        "regressors": "per anchor: box centre x, y (offsets from the anchor centre), width, height, then 6 keypoints x, y "
        "(offsets from the anchor centre); input pixels",
        "classificators": "per anchor: face score logit (MediaPipe: sigmoid after clipping to [-100, 100])",
    }
    score_output = "classificators"
    score_clipping = SCORE_CLIPPING
    # MediaPipe's FaceKeyPoint order; "right" is the person's right (the image's left on an unmirrored photo).
    keypoint_names = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")
    # The person's right eye is the image's left: label.txt's "left_eye" (checked on the shared photos against
    # the RetinaFace reference detections); the ears are not in RetinaFace-layout labels.
    keypoint_sources = {
        "right_eye": ("left_eye",),
        "left_eye": ("right_eye",),
        "nose_tip": ("nose",),
        "mouth_center": ("left_mouth_corner", "right_mouth_corner"),
        "right_ear_tragion": (),
        "left_ear_tragion": (),
    }
    native_input_only = True  # anchors and training are for the model's own input size
    uint8_outputs_unusable = (
        "one uint8 scale per output spans the hopeless anchors' values (logits down to -600, regressors to "
        "hundreds of pixels): 2.2 logits and 1.7 px per step on blazeface_short, 6 false faces on 3 photos"
    )

    def postprocess(self, deploy, **overrides):
        """MediaPipe's decode: score >= the model's ``min_score_thresh`` (``deploy.score_threshold``: it also
        decides which boxes the weighted NMS blends, so evaluation uses it too), weighted NMS at ``nms_iou``."""
        base = PostprocessConfig(conf_threshold=deploy.score_threshold, nms_iou=deploy.nms_iou, nms_offset=self.nms_offset)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def decode(self, deploy, outputs, input_hw, cfg):
        from mobilekit.blazeface_decode import blazeface_detections, ssd_anchors

        anchors = ssd_anchors(self._anchors(deploy), input_hw)
        return blazeface_detections(outputs["regressors"], outputs["classificators"], anchors, input_hw, cfg)

    def criterion(self, model, image_size, loc_weight):
        from mobilekit.training.blazeface_loss import BlazeFaceLoss

        mask = self.label_keypoint_map(model.deploy).any(axis=1)
        return BlazeFaceLoss(self._anchors(model.deploy), image_size, tuple(bool(m) for m in mask), loc_weight=loc_weight)

    def anchors(self, deploy):
        return self._anchors(deploy).to_dict()

    def anchors_document(self, deploy, input_hw):
        from mobilekit.blazeface_decode import ssd_anchors

        height, width = input_hw
        anchors = ssd_anchors(self._anchors(deploy), input_hw)
        return {
            "layout": "cx,cy,w,h",
            "normalized": True,
            "input_size": [height, width],
            "order": "stride group -> row -> column -> anchor (output-row order)",
            **{k: v for k, v in self._anchors(deploy).to_dict().items() if k not in ("type", "order")},
            "decode": "x = regressor / input_width * anchor_w + anchor_cx (centres and keypoints), w = regressor / input_width * anchor_w; "
            "likewise y with the height; normalised, times the input size for pixels",
            "count": int(len(anchors)),
            "anchors": [[float(v) for v in row] for row in anchors],
        }

    def output_columns(self, name, deploy):
        return {
            "regressors": ["cx_offset", "cy_offset", "w", "h", *[f"{p}_offset" for p in self.keypoint_columns(deploy)]],
            "classificators": ["face_logit"],
        }.get(name, [])

    def output_groups(self, name, deploy):
        if name != "regressors":
            return super().output_groups(name, deploy)
        return {"regressors.box": slice(0, 4), "regressors.keypoints": slice(4, None)}

    @staticmethod
    def _anchors(deploy: DeployConfig):
        if deploy.ssd_anchors is None:
            raise ValueError(f"{deploy.name} is a 'blazeface' model but its deployment config has no ssd_anchors")
        return deploy.ssd_anchors


FAMILIES: dict[str, DetectorFamily] = {family.name: family for family in (RetinaFaceFamily(), YoloFamily(), BlazeFaceFamily())}


def family_of(deploy: DeployConfig) -> DetectorFamily:
    """The family declared by ``deploy.decoder``."""
    try:
        return FAMILIES[deploy.decoder]
    except KeyError:
        raise ValueError(f"{deploy.name} declares decoder {deploy.decoder!r}; known families: {', '.join(FAMILIES)}") from None


def decode_outputs(deploy: DeployConfig, outputs: dict, input_hw: tuple[int, int], cfg: PostprocessConfig | None = None) -> Detections:
    """One image's deployment outputs -> faces in model-input pixels, with the model's family decode and,
    unless ``cfg`` is given, the family's evaluation defaults for this model."""
    family = family_of(deploy)
    return family.decode(deploy, outputs, input_hw, cfg if cfg is not None else family.postprocess(deploy))
