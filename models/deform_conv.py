"""Modulated deformable convolution (DCNv2), exact and exportable to ONNX / TFLite.

Semantics are torchvision's ``deform_conv2d`` with a mask: kernel point ``k`` of output pixel
``(i, j)`` samples the input bilinearly at
``(i * stride - pad + ky * dil + dy_k, j * stride - pad + kx * dil + dx_k)`` (zero outside the
image), multiplies by ``mask_k`` and the samples of all kernel points and channels are weighted
by the convolution kernel. Offset channel ``2k`` is ``dy_k``, ``2k + 1`` is ``dx_k``.

Formulation (see ``benchmarks/deform_conv_formulations.md``): the bilinear corner indices and
weights (mask and out-of-image zeros folded in) are computed once per layer on the small
``[N, K, Ho, Wo]`` offset maps; the four neighbours are fetched with ONE row gather from the
channels-last input (``[N*H*W, C]`` rows), weighted and summed, and a single matrix multiply over
the ``K*C`` sampled columns gives the output. Only Floor, Clip, Gather, MatMul and elementwise
ops: no ``grid_sample``, no custom op; everything shape-related is static given the input.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def modulated_deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """``x`` [N, C, H, W], ``offset`` [N, 2K, Ho, Wo] (dy, dx interleaved), ``mask`` [N, K, Ho, Wo],
    ``weight`` [Cout, C, kh, kw] (K = kh * kw) -> [N, Cout, Ho, Wo]."""
    n, c, h, w = x.shape
    cout, _, kh, kw = weight.shape
    k = kh * kw
    ho, wo = offset.shape[-2:]
    (sy, sx), (py, px), (dy, dx) = _pair(stride), _pair(padding), _pair(dilation)

    # Sampling positions [N, K, Ho, Wo] in input pixels.
    offset = offset.reshape(n, k, 2, ho, wo)
    ky = torch.arange(kh, dtype=x.dtype, device=x.device).repeat_interleave(kw) * dy
    kx = torch.arange(kw, dtype=x.dtype, device=x.device).repeat(kh) * dx
    rows = torch.arange(ho, dtype=x.dtype, device=x.device) * sy - py
    cols = torch.arange(wo, dtype=x.dtype, device=x.device) * sx - px
    pos_y = offset[:, :, 0] + (ky.view(k, 1, 1) + rows.view(1, ho, 1))
    pos_x = offset[:, :, 1] + (kx.view(k, 1, 1) + cols.view(1, 1, wo))

    y0 = torch.floor(pos_y)
    x0 = torch.floor(pos_x)
    ly = pos_y - y0
    lx = pos_x - x0
    # A corner outside the image weighs zero (valid = 1 iff 0 <= index <= size - 1, integer index).
    wy0 = (1.0 - ly) * torch.clamp(y0 + 1.0, 0.0, 1.0) * torch.clamp(h - y0, 0.0, 1.0)
    wy1 = ly * torch.clamp(y0 + 2.0, 0.0, 1.0) * torch.clamp(h - 1.0 - y0, 0.0, 1.0)
    wx0 = (1.0 - lx) * torch.clamp(x0 + 1.0, 0.0, 1.0) * torch.clamp(w - x0, 0.0, 1.0)
    wx1 = lx * torch.clamp(x0 + 2.0, 0.0, 1.0) * torch.clamp(w - 1.0 - x0, 0.0, 1.0)
    wy0, wy1 = wy0 * mask, wy1 * mask
    # Clamped (in-image) corner rows/columns; out-of-image ones carry zero weight anyway.
    y0c = torch.clamp(y0, 0.0, h - 1.0)
    y1c = torch.clamp(y0 + 1.0, 0.0, h - 1.0)
    x0c = torch.clamp(x0, 0.0, w - 1.0)
    x1c = torch.clamp(x0 + 1.0, 0.0, w - 1.0)
    batch_base = (torch.arange(n, dtype=x.dtype, device=x.device) * (h * w)).view(n, 1, 1, 1)
    row0 = y0c * w + batch_base
    row1 = y1c * w + batch_base
    # [N, 4, K, Ho, Wo] -> [N, Ho, Wo, 4, K]: corner-major inside each output pixel.
    index = torch.stack([row0 + x0c, row0 + x1c, row1 + x0c, row1 + x1c], dim=1)
    corner_w = torch.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], dim=1)
    index = index.permute(0, 3, 4, 1, 2).reshape(-1).to(torch.int64)
    corner_w = corner_w.permute(0, 3, 4, 1, 2).reshape(n * ho * wo, 4, k, 1)

    # One gather of the 4*K neighbours of every output pixel, rows of C channels.
    table = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    samples = torch.index_select(table, 0, index).reshape(n * ho * wo, 4, k, c)
    columns = (samples * corner_w).sum(dim=1).reshape(n * ho * wo, k * c)
    # [Cout, C, kh, kw] -> [Cout, K*C] matching the (k, c) column order.
    out = F.linear(columns, weight.permute(0, 2, 3, 1).reshape(cout, k * c), bias)
    return out.reshape(n, ho, wo, cout).permute(0, 3, 1, 2)


class DeformConv(nn.Module):
    """DCNv2 block of the FeatherFace checkpoints: offsets from a 3x3 conv (2K channels, bias),
    mask = 2 * sigmoid(3x3 conv, K channels, bias), deformable conv ``regular_conv`` (no bias).

    Offset and modulator convs start at zero (plain conv, mask 1), as in the reference.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        k = kernel_size * kernel_size
        conv = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.offset_conv = nn.Conv2d(in_channels, 2 * k, bias=True, **conv)
        self.modulator_conv = nn.Conv2d(in_channels, k, bias=True, **conv)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, bias=bias, **conv)
        for layer in (self.offset_conv, self.modulator_conv):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def extra_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        """MACs of the deformable product (``regular_conv`` is never called as a module)."""
        kh, kw = self.regular_conv.kernel_size
        return output.numel() * self.regular_conv.in_channels * kh * kw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x))
        return modulated_deform_conv2d(
            x, offset, mask, self.regular_conv.weight, self.regular_conv.bias, self.stride, self.padding, self.dilation
        )


@torch.no_grad()
def randomize_offsets(model: nn.Module, offset_std: float = 1.0, seed: int = 0) -> int:
    """Give every :class:`DeformConv` in ``model`` random offset/modulator convs (offsets of about
    ``offset_std`` pixels, masks spread over (0, 2)) so that tests and export parity checks exercise
    real deformable sampling instead of the zero-initialised plain conv. Returns how many."""
    generator = torch.Generator().manual_seed(seed)
    layers = [m for m in model.modules() if isinstance(m, DeformConv)]
    for layer in layers:
        for conv, std in ((layer.offset_conv, offset_std), (layer.modulator_conv, 1.0)):
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (std / fan_in**0.5))
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * std)
    return len(layers)
