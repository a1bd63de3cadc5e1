"""Strict, safe checkpoint loading and atomic saving.

``torch.load(weights_only=True)`` only: a checkpoint never runs code. Every mismatch between a
file and a model (missing keys, unexpected keys, shape mismatches) is an error that lists them.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from mobilekit.atomic import atomic_path
from mobilekit.errors import MobilekitError

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "ema", "net")
STRIP_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(MobilekitError):
    """A checkpoint that cannot be read, or does not fit the model."""


@dataclass
class LoadReport:
    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 12) -> str:
        lines = [f"{len(self.loaded)} tensors match"]
        for title, keys in (("missing from the file", self.missing), ("unexpected in the file", self.unexpected), ("shape mismatch", self.mismatched)):
            if keys:
                shown = ", ".join(keys[:limit]) + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")
                lines.append(f"{len(keys)} {title}: {shown}")
        return "; ".join(lines)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (plain, or wrapped under ``state_dict``/``model``/...), without
    ``module.`` prefixes. Raises :class:`CheckpointError` with the file name for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError, KeyError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt, truncated, or not a weights-only PyTorch file ({first})") from exc
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (tensor per key); found {type(obj).__name__}")
    return {_strip_prefix(k): v for k, v in obj.items()}


def _strip_prefix(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def compare_state_dict(module: nn.Module, state: dict[str, torch.Tensor], path: str = "") -> LoadReport:
    """What loading ``state`` into ``module`` would do, key by key."""
    expected = module.state_dict()
    report = LoadReport(path=path)
    for key, tensor in expected.items():
        if key not in state:
            report.missing.append(key)
        elif state[key].shape != tensor.shape:
            report.mismatched.append(f"{key} (file {tuple(state[key].shape)} vs model {tuple(tensor.shape)})")
        else:
            report.loaded.append(key)
    report.unexpected = [k for k in state if k not in expected]
    return report


def read_weights_for(module: nn.Module, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict for ``module`` from ``path``: a file format the model reads itself (its
    ``foreign_weight_suffixes``, e.g. BlazeFace from Google's ``.tflite``), else a PyTorch checkpoint."""
    if Path(path).suffix.lower() in getattr(module, "foreign_weight_suffixes", ()):
        if not Path(path).is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        return module.state_dict_from_file(path)
    return read_state_dict(path)


def load_weights(module: nn.Module, path: str | os.PathLike, ignore: tuple[str, ...] = ()) -> LoadReport:
    """Load ``path`` into ``module`` strictly; keys starting with an ``ignore`` prefix are dropped first."""
    state = read_weights_for(module, path)
    if ignore:
        state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    report = compare_state_dict(module, state, str(path))
    if not report.ok:
        name = getattr(getattr(module, "deploy", None), "name", type(module).__name__)
        raise CheckpointError(f"checkpoint {path} does not fit {name}: {report.describe()}")
    module.load_state_dict(state, strict=True)
    return report


def load_backbone(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load ImageNet MobileNetV1-0.25 weights into ``model.backbone_module()`` (classifier dropped)."""
    backbone = model.backbone_module() if hasattr(model, "backbone_module") else None
    if backbone is None:
        raise CheckpointError(f"{type(model).__name__} has no MobileNetV1-0.25 backbone to load {path} into")
    return load_weights(backbone, path, ignore=("fc.",))


def load_partial(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load every shared key of ``path`` into ``model`` (for fine-tuning a variant); anything that
    does not fit is reported, never silently ignored: shape mismatches and unknown keys raise.
    Reads any file the model reads (:func:`read_weights_for`), e.g. Google's ``.tflite`` for BlazeFace."""
    state = read_weights_for(model, path)
    report = compare_state_dict(model, state, str(path))
    if report.mismatched or report.unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit {type(model).__name__}: {report.describe()}")
    model.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    return report


def read_training_checkpoint(path: str | os.PathLike) -> dict:
    """A ``last.pt`` / ``best.pt`` written by ``mobilekit train`` (config, model, optimizer, epoch, ...); any other
    file is a one-line :class:`CheckpointError` naming it."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or not a checkpoint: the user's file to fix
        raise CheckpointError(f"cannot resume from {path}: {exc}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or "optimizer" not in ckpt or "epoch" not in ckpt:
        raise CheckpointError(f"{path} is not a mobilekit training checkpoint (last.pt / best.pt)")
    return ckpt


def atomic_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
