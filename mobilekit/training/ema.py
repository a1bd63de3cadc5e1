"""Exponential moving average of model weights (evaluated and deployed instead of the raw weights)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn


class ModelEMA:
    """``ema = d * ema + (1 - d) * weights`` after each optimiser step, with
    ``d = decay * (1 - exp(-updates / tau))`` so early, fast-changing weights are not over-smoothed."""

    def __init__(self, model: nn.Module, decay: float = 0.998, tau: float = 100.0, updates: int = 0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.tau))
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach(), alpha=1.0 - d)
            else:
                value.copy_(source[name])
