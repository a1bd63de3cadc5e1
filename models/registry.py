"""Model registry: ``create_model(name)`` builds any mobilekit detector by name."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from mobilekit.errors import MobilekitError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a model factory available to :func:`create_model` under ``name``."""

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


class UnknownModelError(MobilekitError):
    """A model name that is not registered."""


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model (randomly initialised; load weights with ``mobilekit.checkpoint``)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None
    return factory(**kwargs)
