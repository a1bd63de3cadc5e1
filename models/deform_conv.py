"""Modulated deformable convolution (DCNv2), exact and exportable to ONNX / TFLite.

Semantics are torchvision's ``deform_conv2d`` with a mask: kernel point ``k`` of output pixel
``(i, j)`` samples the input bilinearly at
``(i * stride - pad + ky * dil + dy_k, j * stride - pad + kx * dil + dx_k)`` (zero outside the
image), multiplies by ``mask_k`` and the samples of all kernel points and channels are weighted
by the convolution kernel. Offset channel ``2k`` is ``dy_k``, ``2k + 1`` is ``dx_k``.

Formulation (measured in ``benchmarks/deform_conv_formulations.md``): computed once per layer on the
small ``[N, K, Ho, Wo]`` offset maps and shared by all channels, each sample reads a 2x2 pixel block
clamped inside the image, whose top-left row index is int32 arithmetic on ``floor(offset)`` (exact,
and untouched by int8 quantisation) and whose four pixels weigh ``tent(position - pixel)`` (mask
folded in; out-of-image parts of a sample weigh zero). Each block pixel is one row gather from a
channels-last table (index = top-left + a constant), the weighted rows are summed. Where the layer
narrows (Cout < C) the kernel is applied first (one 1x1 conv to K*Cout channels, gathers of
Cout-wide rows, sum over the K kernel points), otherwise the C-wide input rows are gathered and ONE
matrix multiply over the ``K*C`` sampled columns gives the output: either way the gathered and
weighted tensors, which dominate the run time, are min(C, Cout) wide. Only Conv, Floor, Clip, Abs,
Gather, MatMul, ReduceSum and elementwise ops on tensors of rank <= 4 (2-D for the big ones): no
``grid_sample``, no custom op, static shapes given the input.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _block_taps(
    dy: torch.Tensor, dx: torch.Tensor, mask: torch.Tensor, size: tuple[int, int], kernel: tuple[int, int],
    stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Top-left pixel (row, col; int32 [N, K, Ho, Wo]) of the 2x2 block each sample reads, and the weights
    [M, 1] of the block's four pixels (M = N*Ho*Wo*K ordered (n, ho, wo, k)).

    The block is clamped inside the image (size >= 2), so its four pixels are always valid rows of the
    table; each pixel weighs tent(position - pixel) = max(0, 1 - |t|), which is the bilinear weight
    when the sample lies in the block and zero for the part of the block outside the sample's reach:
    samples partly or wholly outside the image get exactly the zero-padded value.
    """
    n, k, ho, wo = dy.shape
    h, w = size
    like = dict(dtype=dy.dtype, device=dy.device)
    ky = torch.arange(kernel[0], **like).repeat_interleave(kernel[1]) * dilation[0]
    kx = torch.arange(kernel[1], **like).repeat(kernel[0]) * dilation[1]
    grid_y = ky.view(1, k, 1, 1) + (torch.arange(ho, **like) * stride[0] - padding[0]).view(1, 1, ho, 1)
    grid_x = kx.view(1, k, 1, 1) + (torch.arange(wo, **like) * stride[1] - padding[1]).view(1, 1, 1, wo)

    def axis(offset: torch.Tensor, grid: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Floor and fraction from the offset alone (the grid is integer): weights as accurate as the offsets.
        floor = torch.floor(offset)
        first = torch.clamp(floor + grid, 0.0, length - 2.0)
        t = (offset - floor) + (floor + grid - first)  # sample position relative to the block's first pixel
        # The block index in int32 from floor(offset): exact, and untouched by int8 quantisation
        # (float index arithmetic would be quantised to 8 bits and read the wrong pixels).
        # (Max/Min, not Clip: onnx2tf turns an integer Clip(0, 6) into Relu6, which TFLite lacks for int32.)
        int32 = dict(dtype=torch.int32, device=offset.device)
        block = torch.minimum(torch.maximum(floor.to(torch.int32) + grid.to(torch.int32), torch.tensor(0, **int32)), torch.tensor(length - 2, **int32))
        return block, torch.relu(1.0 - torch.abs(t)), torch.relu(1.0 - torch.abs(t - 1.0))

    row, wy0, wy1 = axis(dy, grid_y, h)
    col, wx0, wx1 = axis(dx, grid_x, w)
    wy0, wy1 = wy0 * mask, wy1 * mask

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.permute(0, 2, 3, 1).reshape(-1, 1)

    return row, col, [flat(a * b) for a in (wy0, wy1) for b in (wx0, wx1)]


def deform_conv2d_from_maps(
    x: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """Modulated deformable conv with the offsets as separate ``dy``, ``dx`` maps [N, K, Ho, Wo]."""
    if x.shape[2] < 2 or x.shape[3] < 2:  # the 2x2 blocks need two rows and columns: zeros are what lies outside
        x = F.pad(x, (0, max(0, 2 - x.shape[3]), 0, max(0, 2 - x.shape[2])))
    n, c, h, w = x.shape
    cout, _, kh, kw = weight.shape
    k = kh * kw
    ho, wo = dy.shape[-2:]
    row, col, weights = _block_taps(dy, dx, mask, (h, w), (kh, kw), _pair(stride), _pair(padding), _pair(dilation))
    # Table rows: one per pixel (Cout >= C: the input's C channels) or one per (pixel, kernel point) when the
    # layer narrows (Cout < C: the kernel is applied first, z_k = W_k x as one 1x1 conv to K*Cout channels,
    # since sampling is linear and channel-independent). Either way the gathered rows are min(C, Cout) wide.
    project_first = cout < c
    rows_per_pixel = k if project_first else 1
    base = row * (w * rows_per_pixel) + col * rows_per_pixel
    if project_first:
        base = base + torch.arange(k, dtype=torch.int32, device=x.device).view(1, k, 1, 1)
        z = F.conv2d(x, weight.permute(2, 3, 0, 1).reshape(k * cout, c, 1, 1))
        table = z.permute(0, 2, 3, 1).reshape(n * h * w * k, cout)
    else:
        table = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    if n > 1:
        base = base + (torch.arange(n, dtype=torch.int32, device=x.device) * (h * w * rows_per_pixel)).view(n, 1, 1, 1)
    base = base.permute(0, 2, 3, 1).reshape(-1)
    corners = (0, rows_per_pixel, w * rows_per_pixel, (w + 1) * rows_per_pixel)
    sampled = None
    for corner, wt in zip(corners, weights):
        term = torch.index_select(table, 0, base + corner if corner else base) * wt
        sampled = term if sampled is None else sampled + term
    if project_first:
        out = sampled.reshape(n * ho * wo, k, cout).sum(dim=1)
        out = out if bias is None else out + bias
    else:
        # [N*Ho*Wo*K, C] -> [N*Ho*Wo, K*C] @ [K*C, Cout], kernel reordered to the (k, c) column order.
        out = F.linear(sampled.reshape(n * ho * wo, k * c), weight.permute(0, 2, 3, 1).reshape(cout, -1), bias)
    return out.reshape(n, ho, wo, cout).permute(0, 3, 1, 2)


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
    """torchvision ``deform_conv2d`` interface: ``x`` [N, C, H, W], ``offset`` [N, 2K, Ho, Wo] (dy, dx
    interleaved), ``mask`` [N, K, Ho, Wo], ``weight`` [Cout, C, kh, kw] -> [N, Cout, Ho, Wo]."""
    return deform_conv2d_from_maps(x, offset[:, 0::2], offset[:, 1::2], mask, weight, bias, stride, padding, dilation)


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
        """MACs of the offset/mask conv and the deformable product (no submodule is called)."""
        kh, kw = self.regular_conv.kernel_size
        pixels = output.numel() // output.shape[1]
        maps = self.offset_conv.out_channels + self.modulator_conv.out_channels
        return pixels * self.regular_conv.in_channels * kh * kw * (self.regular_conv.out_channels + maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Offset and modulator convs run as ONE conv with rows reordered to [dy_k | dx_k | mask_k]
        # (weight slicing is constant-folded on export; no strided channel slices in the graph).
        k = self.modulator_conv.out_channels
        offset_w = self.offset_conv.weight.unflatten(0, (k, 2)).transpose(0, 1).flatten(0, 1)
        offset_b = self.offset_conv.bias.view(k, 2).t().reshape(-1)
        weight = torch.cat([offset_w, self.modulator_conv.weight])
        bias = torch.cat([offset_b, self.modulator_conv.bias])
        maps = F.conv2d(x, weight, bias, self.offset_conv.stride, self.offset_conv.padding, self.offset_conv.dilation)
        dy, dx, mask_logits = torch.split(maps, k, dim=1)
        return deform_conv2d_from_maps(
            x, dy, dx, 2.0 * torch.sigmoid(mask_logits), self.regular_conv.weight, self.regular_conv.bias,
            self.stride, self.padding, self.dilation,
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
