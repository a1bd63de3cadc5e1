"""Model registry: ``create_model(name)`` builds any mobilekit detector by name."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import torch.nn as nn

from mobilekit.config import DeployConfig
from mobilekit.errors import MobilekitError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_RELEASED: dict[str, str] = {}  # model name -> its released weights (a mobilekit.package_data name)


def register_model(name: str, released: str | None = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a model factory available to :func:`create_model` under ``name``; ``released``, the
    shipped file (:mod:`mobilekit.package_data`) of the weights its authors released, makes them the weights
    ``name`` means wherever none are given (:func:`released_weights`)."""

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = factory
        if released is not None:
            _RELEASED[name] = released
        return factory

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def released_weights(name: str) -> Path | None:
    """The weights model ``name`` stands for when a command is given none: the released weights mobilekit
    ships for it (YuNet-n/-s: the authors'), else None (the model has no such weights: pass a checkpoint).
    ``mobilekit predict / eval / export`` load them in place of ``--weights``, ``mobilekit train`` and
    ``mobilekit run`` fine-tune from them (``--from-scratch``: random initialisation); :func:`create_model`
    itself always builds a randomly initialised model."""
    if name not in _RELEASED:
        return None
    from mobilekit.package_data import shipped_path

    return shipped_path(_RELEASED[name])



def weights_or_released(name: str, weights: str | Path | None) -> Path:
    """``weights``, else ``name``'s :func:`released_weights`; a one-line error naming the option when it has none."""
    if weights is not None:
        return Path(weights)
    released = released_weights(name)
    if released is None:
        raise MobilekitError(f"no weights for {name}: pass --weights PATH (only {', '.join(sorted(_RELEASED))} come with weights)")
    return released


class UnknownModelError(MobilekitError):
    """A model name that is not registered."""


def is_model_file(name: str) -> bool:
    """``my_detector.py:build`` names a factory in a Python file instead of a registered model."""
    path, _, function = name.rpartition(":")
    return path.endswith(".py") and function.isidentifier()


def model_file_factory(name: str) -> Callable[..., nn.Module]:
    """The factory ``FUNCTION`` of ``PATH.py:FUNCTION``, imported from that file."""
    path, _, function = name.rpartition(":")
    file = Path(path).expanduser()
    if not file.is_file():
        raise UnknownModelError(f"model file not found: {file} (from {name})")
    module_name = f"mobilekit_user_model_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: name it and the error, no traceback
        raise UnknownModelError(f"cannot import {file}: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise UnknownModelError(f"{file} has no function {function}() (from {name})")
    return factory


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model, or ``PATH.py:FUNCTION`` (your own: a function returning a
    ``FaceDetector`` with its ``DeployConfig``); randomly initialised, load weights with
    ``mobilekit.checkpoint``."""
    if is_model_file(name):
        model = model_file_factory(name)(**kwargs)
        if not isinstance(getattr(model, "deploy", None), DeployConfig) or not isinstance(model, nn.Module):
            raise UnknownModelError(f"{name} must return an nn.Module with a .deploy DeployConfig (e.g. a mobilekit FaceDetector)")
        return model
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; available: {', '.join(list_models())}, or your own as PATH.py:FUNCTION"
        ) from None
    return factory(**kwargs)
