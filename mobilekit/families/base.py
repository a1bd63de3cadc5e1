"""What every detector family declares (:class:`DetectorFamily`) and the parity thresholds it sets
(:class:`ParityTolerance`); the families themselves are the packages beside this module."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mobilekit.config import LANDMARK_NAMES, AnchorSpec, DeployConfig
from mobilekit.detections import DecoderSettings, Detections, PostprocessConfig

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
    anchor_type: ClassVar[type]  # the class of ``DeployConfig.anchors`` (with ``to_dict`` / ``from_dict``)
    legacy_anchor_key: ClassVar[str]  # where sidecars written before ``DeployConfig.anchors`` kept them
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

    def app_detect(self, outputs: dict[str, np.ndarray], anchors: np.ndarray | None, settings: DecoderSettings) -> Detections:
        """The NumPy mirror of this family's Dart ``familyDetect`` (:attr:`dart_decoder`): one image's outputs
        (no batch axis), ``anchors.json``'s rows, ``model_meta.json``'s decoder settings -> faces in input pixels."""
        raise NotImplementedError

    @property
    def dart_decoder(self) -> str:
        """The family's Dart decoder (package data; packages copy it to ``lib/family_decoder.dart``)."""
        return f"families/{self.name}/decoder.dart"

    def criterion(self, model: nn.Module, image_size: tuple[int, int], loc_weight: float) -> nn.Module:
        """The training loss for ``model`` at ``image_size``."""
        raise NotImplementedError

    def default_anchors(self) -> AnchorSpec | None:
        """The anchors of a model whose ``DeployConfig`` names none (None: the family has no default)."""
        return None

    def anchors_of(self, deploy: DeployConfig) -> AnchorSpec:
        """``deploy``'s anchors, checked to be this family's kind."""
        if not isinstance(deploy.anchors, self.anchor_type):
            raise ValueError(
                f"{deploy.name} is a {self.name!r} model but its anchors are {type(deploy.anchors).__name__}, "
                f"not {self.anchor_type.__name__}"
            )
        return deploy.anchors

    def anchors(self, deploy: DeployConfig) -> dict:
        """The anchor description recorded in sidecars and ``model_meta.json``."""
        return self.anchors_of(deploy).to_dict()

    def anchors_from_dict(self, deploy_dict: dict) -> AnchorSpec:
        """The anchors of a ``DeployConfig.to_dict`` (or of an older sidecar's ``legacy_anchor_key``)."""
        written = deploy_dict.get("anchors") or deploy_dict.get(self.legacy_anchor_key)
        if written:
            return self.anchor_type.from_dict(written)
        default = self.default_anchors()
        if default is None:
            raise ValueError(f"the deployment config of {deploy_dict.get('name')!r} has no anchors")
        return default

    def decoder_fields(self, deploy: DeployConfig) -> dict:
        """Family settings of ``model_meta.json``'s ``decoder`` block besides the common ones."""
        return {}

    def end_to_end_constants(self, deploy: DeployConfig, input_hw: tuple[int, int]) -> dict[str, np.ndarray]:
        """Arrays the end-to-end graph holds as constants (families with ``end_to_end``)."""
        raise NotImplementedError

    def end_to_end_decode(self, tf, outputs: dict, constants: dict[str, np.ndarray], input_hw: tuple[int, int]):
        """The network's outputs (TensorFlow, batch 1, by name) -> boxes ``[N, 4]`` x1, y1, x2, y2, scores ``[N]``
        and keypoints ``[N, 2L]``, in input pixels, inside the end-to-end graph (``tf`` is TensorFlow)."""
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
