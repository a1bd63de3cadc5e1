"""Where an exported model's weights came from, and how to rebuild that exact PyTorch model."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from mobilekit.checkpoint import load_weights
from mobilekit.converters.sidecars import sha256_file
from mobilekit.errors import MobilekitError
from mobilekit.models import FaceDetector, create_model
from mobilekit.models.registry import is_model_file, released_weights, weights_or_released


@torch.no_grad()
def randomize_for_testing(model: nn.Module, seed: int = 0) -> nn.Module:
    """Perturb every normalisation layer's running stats and affine parameters (deterministically).

    Freshly initialised models have BN mean 0 / var 1 / weight 1 / bias 0, which hides folding
    and conversion bugs; after this, every BN does real work while activations stay in range.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return torch.rand(t.shape, generator=generator) * (high - low) + low

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            module.running_mean.copy_(uniform(module.running_mean, -0.2, 0.2))
            module.running_var.copy_(uniform(module.running_var, 0.5, 2.0))
            if module.affine:
                module.weight.copy_(uniform(module.weight, 0.5, 1.5))
                module.bias.copy_(uniform(module.bias, -0.2, 0.2))
    return model.eval()


def source_weights(name: str, weights: str | Path | None, random_init: bool) -> Path | None:
    """The weights an export of ``name`` uses: ``weights``, else (unless ``random_init``) the model's released
    weights (:func:`~mobilekit.models.registry.weights_or_released`)."""
    if weights is not None and random_init:
        raise MobilekitError("--weights and --random-init exclude each other")
    if random_init:
        return None
    if weights is None and released_weights(name) is None:
        raise MobilekitError(f"no weights for {name}: pass --weights PATH (or --random-init for a test export)")
    return weights_or_released(name, weights)


def build_source_model(name: str, weights: str | Path | None = None, random_seed: int | None = None) -> FaceDetector:
    """``name`` with ``weights`` loaded strictly, or (only when asked) randomly initialised from ``random_seed``."""
    if weights is not None:
        if not Path(weights).is_file():
            raise MobilekitError(f"weights file not found: {weights}")
        model = create_model(name)
        load_weights(model, weights)
        return model.eval()
    if random_seed is None:
        raise MobilekitError(f"no weights for {name}: pass --weights PATH (or --random-init for a test export)")
    torch.manual_seed(random_seed)
    return randomize_for_testing(create_model(name), random_seed)


def source_metadata(weights: str | Path | None, random_seed: int | None, model: str | None = None) -> dict:
    """What the sidecar records so :func:`rebuild_source_model` can rebuild the model later: the weights
    (or the random seed) and, for your own ``PATH.py:FUNCTION`` model, that file and its sha256."""
    built = {}
    if model is not None and is_model_file(model):
        path, _, function = model.rpartition(":")
        file = Path(path).expanduser().resolve()
        built = {"build": f"{file}:{function}", "build_sha256": sha256_file(file)}
    if weights is not None:
        path = Path(weights).resolve()
        return {**built, "weights": str(path), "weights_sha256": sha256_file(path), "random_init": False}
    return {
        **built,
        "weights": None,
        "random_init": True,
        "random_seed": random_seed,
        "warning": "RANDOMLY INITIALISED (randomize_for_testing): for pipeline tests only, detects nothing",
    }


def source_model_name(model_meta: dict) -> str:
    """What to build for a sidecar's ``model`` block: the recorded ``PATH.py:FUNCTION`` or the registered name."""
    return model_meta.get("build") or model_meta["name"]


def rebuild_source_model(model_meta: dict, weights: str | Path | None = None) -> FaceDetector:
    """The PyTorch model a sidecar describes, with ``weights`` (default: the recorded ones) or the
    recorded random seed; a model file that changed since the export is an error."""
    build = model_meta.get("build")
    if build is not None:
        file = Path(build.rpartition(":")[0])
        if not file.is_file():
            raise MobilekitError(f"model file {file} recorded in the sidecar is not on this machine")
        if sha256_file(file) != model_meta.get("build_sha256"):
            raise MobilekitError(f"model file {file} changed since the export (sha256 differs): re-export it")
    source_weights = weights or model_meta.get("weights")
    if source_weights is not None and not Path(source_weights).is_file():
        raise MobilekitError(f"weights {source_weights} recorded for {model_meta['name']} not found: pass --weights PATH")
    return build_source_model(source_model_name(model_meta), source_weights, None if source_weights else model_meta.get("random_seed"))
