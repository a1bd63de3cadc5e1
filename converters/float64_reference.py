"""Fast float64 grouped convolutions for the parity reference.

PyTorch's CPU kernels have no fast float64 path for grouped (depthwise) convolutions: it loops over
the groups, ~50x slower than float32, and dominates a float64 forward pass of these mobile models.
``grouped_conv2d`` computes the same sums as one unfold + batched matmul in float64;
:class:`FastFloat64GroupedConvs` routes float64 grouped ``conv2d`` calls through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _pair(value: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def grouped_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding, dilation, groups: int) -> torch.Tensor:
    """``F.conv2d`` with numeric ``padding`` as unfold (im2col) + one batched matmul per group."""
    n, _, height, width = x.shape
    out_channels, in_per_group, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = F.unfold(x, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))
    cols = cols.view(n, groups, in_per_group * kh * kw, out_h * out_w)
    kernels = weight.reshape(groups, out_channels // groups, in_per_group * kh * kw)
    out = torch.matmul(kernels.unsqueeze(0), cols).reshape(n, out_channels, out_h, out_w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class FastFloat64GroupedConvs(TorchFunctionMode):
    """Within this mode, float64 ``conv2d`` calls with ``groups > 1`` and numeric padding use :func:`grouped_conv2d`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv2d:
            names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
            bound = {**dict(zip(names, args)), **kwargs}
            x, groups, padding = bound["input"], bound.get("groups", 1), bound.get("padding", 0)
            if x.dtype == torch.float64 and groups > 1 and not isinstance(padding, str):
                return grouped_conv2d(
                    x, bound["weight"], bound.get("bias"), bound.get("stride", 1), padding, bound.get("dilation", 1), groups
                )
        return func(*args, **kwargs)
