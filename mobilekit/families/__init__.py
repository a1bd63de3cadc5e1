"""Detector families: everything that depends on the kind of detection head, declared once.

A model's ``DeployConfig.decoder`` names its family and :func:`family_of` returns the declaration.
Prediction, evaluation, training, export sidecars, parity, benchmarks and packaging ask the family
(its decode, loss, augmentation, anchors, output meanings and columns, NMS convention, default
thresholds, parity face thresholds); no other module compares family names. A family is one package
beside this module (declaration, anchors, decode, loss, Dart decoder), registered in :data:`FAMILIES`.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import TYPE_CHECKING

from mobilekit.config import DeployConfig
from mobilekit.detections import Detections, PostprocessConfig
from mobilekit.families.base import DetectorFamily, ParityTolerance
from mobilekit.families.blazeface.family import BlazeFaceFamily
from mobilekit.families.retinaface.family import RetinaFaceFamily
from mobilekit.families.retinaface.loss import LOC_WEIGHT
from mobilekit.families.yolo.family import YoloFamily
from mobilekit.families.yunet.family import YuNetFamily

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["FAMILIES", "DetectorFamily", "ParityTolerance", "build_criterion", "decode_outputs", "deploy_from_dict", "family_of", "with_family_anchors"]

FAMILIES: dict[str, DetectorFamily] = {family.name: family for family in (RetinaFaceFamily(), YoloFamily(), BlazeFaceFamily(), YuNetFamily())}


def family_of(deploy: DeployConfig) -> DetectorFamily:
    """The family declared by ``deploy.decoder``."""
    try:
        return FAMILIES[deploy.decoder]
    except KeyError:
        raise ValueError(f"{deploy.name} declares decoder {deploy.decoder!r}; known families: {', '.join(FAMILIES)}") from None


def with_family_anchors(deploy: DeployConfig) -> DeployConfig:
    """``deploy`` with its family's default anchors when it names none."""
    if deploy.anchors is not None:
        return deploy
    default = family_of(deploy).default_anchors()
    if default is None:
        raise ValueError(f"{deploy.name} is a {deploy.decoder!r} model: its DeployConfig must set anchors")
    return replace(deploy, anchors=default)


def deploy_from_dict(d: dict) -> DeployConfig:
    """Inverse of ``DeployConfig.to_dict``, e.g. for the ``deploy`` block of an export sidecar (the family
    parses its anchors; older sidecars, which kept them under ``priors`` / ``yolo_anchors`` / ``ssd_anchors``,
    load too)."""
    names = {f.name for f in fields(DeployConfig)}
    values = {k: v for k, v in d.items() if k in names}
    for key in ("input_size", "mean", "std", "output_names", "int8_keep_float"):
        if key in values:
            values[key] = tuple(values[key])
    deploy = DeployConfig(**{**values, "anchors": None})
    return replace(deploy, anchors=family_of(deploy).anchors_from_dict(d))


def decode_outputs(deploy: DeployConfig, outputs: dict, input_hw: tuple[int, int], cfg: PostprocessConfig | None = None) -> Detections:
    """One image's deployment outputs -> faces in model-input pixels, with the model's family decode and,
    unless ``cfg`` is given, the family's evaluation defaults for this model."""
    family = family_of(deploy)
    return family.decode(deploy, outputs, input_hw, cfg if cfg is not None else family.postprocess(deploy))


def build_criterion(model: nn.Module, image_size: tuple[int, int], loc_weight: float = LOC_WEIGHT) -> nn.Module:
    """The training loss ``model``'s family declares, for ``image_size``."""
    return family_of(model.deploy).criterion(model, image_size, loc_weight)
