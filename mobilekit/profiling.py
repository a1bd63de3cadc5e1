"""Parameter and multiply-accumulate counts, total and per component."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class ComponentCost:
    name: str
    params: int
    macs: int


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    return output.numel() * (module.in_channels // module.groups) * kh * kw


@torch.no_grad()
def count_macs(model: nn.Module, image_size: tuple[int, int]) -> dict[nn.Module, int]:
    """MACs of one forward pass at ``image_size`` (H, W), per module that does the work.

    Counted: every ``nn.Conv2d`` / ``nn.Linear`` call, plus ``extra_macs(inputs, output)`` of
    modules that compute with their weights functionally (e.g. deformable convolution).
    """
    macs: dict[nn.Module, int] = {}

    def hook(module: nn.Module, inputs, output) -> None:
        if isinstance(module, nn.Conv2d):
            n = _conv_macs(module, output)
        elif isinstance(module, nn.Linear):
            n = output.numel() * module.in_features
        else:
            n = module.extra_macs(inputs, output)
        macs[module] = macs.get(module, 0) + int(n)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) or hasattr(m, "extra_macs")
    ]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        model(torch.zeros(1, 3, *image_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs


def cost_breakdown(model: nn.Module, image_size: tuple[int, int]) -> list[ComponentCost]:
    """Params and MACs per component (``model.component_modules()``), plus a total row."""
    macs = count_macs(model, image_size)
    components = model.component_modules() if hasattr(model, "component_modules") else dict(model.named_children())
    rows = []
    for name, part in components.items():
        members = set(part.modules())
        rows.append(ComponentCost(name, count_params(part), sum(v for m, v in macs.items() if m in members)))
    rows.append(ComponentCost("total", count_params(model), sum(macs.values())))
    accounted = sum(r.params for r in rows[:-1])
    if accounted != rows[-1].params:
        raise RuntimeError(f"components of {type(model).__name__} cover {accounted} of {rows[-1].params} parameters")
    return rows
