"""EfficientDet-style BiFPN over three levels (P3/P4/P5), key-compatible with zylo117's
Yet-Another-EfficientDet-Pytorch as used by FeatherFace.

TensorFlow "same" padding is computed statically from the input shape (zero padding, also for
the max-pool), so exported graphs have fixed pads.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
FUSION_EPS = 1e-4


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    extra = max((math.ceil(size / stride) - 1) * stride - size + kernel, 0)
    return extra // 2, extra - extra // 2


def _same_pads(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> list[int]:
    top, bottom = _same_pad(int(x.shape[-2]), kernel[0], stride[0])
    left, right = _same_pad(int(x.shape[-1]), kernel[1], stride[1])
    return [left, right, top, bottom]


class Conv2dSame(nn.Module):
    """``nn.Conv2d`` (as ``.conv``) with TensorFlow "same" zero padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, bias=bias, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_pads(x, self.conv.kernel_size, self.conv.stride)
        return self.conv(F.pad(x, pads) if any(pads) else x)


class MaxPool2dSame(nn.Module):
    """3x3 stride-2 max-pool with TensorFlow "same" padding (the pad is zeros, as in the reference)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_pads(x, (self.kernel_size, self.kernel_size), (self.stride, self.stride))
        return F.max_pool2d(F.pad(x, pads) if any(pads) else x, self.kernel_size, self.stride)


class SeparableConvBlock(nn.Module):
    """Depthwise 3x3 (no bias) -> pointwise 1x1 (bias) -> BN, no activation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise_conv = Conv2dSame(channels, channels, 3, bias=False, groups=channels)
        self.pointwise_conv = Conv2dSame(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise_conv(self.depthwise_conv(x)))


def squeeze_layer(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv (bias) + BN: brings a backbone level to the BiFPN width."""
    return nn.Sequential(Conv2dSame(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM, eps=BN_EPS))


def _fuse(weights: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
    """Fast normalised fusion ``sum relu(w_i) x_i / (sum relu(w) + eps)``, then swish.

    The normaliser sums every weight, also unused ones (P5's third weight in the reference)."""
    w = F.relu(weights)
    w = w / (w.sum() + FUSION_EPS)
    fused = inputs[0] * w[0]
    for i in range(1, len(inputs)):
        fused = fused + inputs[i] * w[i]
    return fused * torch.sigmoid(fused)


class BiFPNCell(nn.Module):
    """One BiFPN cell: top-down P5 -> P4 -> P3, bottom-up P3 -> P4 -> P5.

    The first cell squeezes the backbone levels itself; its bottom-up P4/P5 inputs use their own
    squeeze layers (``p{4,5}_down_channel_2``).
    """

    def __init__(self, channels: int, in_channels: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        self.first_cell = in_channels is not None
        self.conv4_up = SeparableConvBlock(channels)
        self.conv3_up = SeparableConvBlock(channels)
        self.conv4_down = SeparableConvBlock(channels)
        self.conv5_down = SeparableConvBlock(channels)
        self.p4_downsample = MaxPool2dSame(3, 2)
        self.p5_downsample = MaxPool2dSame(3, 2)
        if in_channels is not None:
            c3, c4, c5 = in_channels
            self.p5_down_channel = squeeze_layer(c5, channels)
            self.p4_down_channel = squeeze_layer(c4, channels)
            self.p3_down_channel = squeeze_layer(c3, channels)
            self.p4_down_channel_2 = squeeze_layer(c4, channels)
            self.p5_down_channel_2 = squeeze_layer(c5, channels)
        self.p4_w1 = nn.Parameter(torch.ones(2))
        self.p3_w1 = nn.Parameter(torch.ones(2))
        self.p4_w2 = nn.Parameter(torch.ones(3))
        self.p5_w2 = nn.Parameter(torch.ones(3))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = features
        if self.first_cell:
            p3_in, p4_in, p5_in = self.p3_down_channel(p3), self.p4_down_channel(p4), self.p5_down_channel(p5)
        else:
            p3_in, p4_in, p5_in = p3, p4, p5
        p4_up = self.conv4_up(_fuse(self.p4_w1, [p4_in, F.interpolate(p5_in, size=p4_in.shape[-2:], mode="nearest")]))
        p3_out = self.conv3_up(_fuse(self.p3_w1, [p3_in, F.interpolate(p4_up, size=p3_in.shape[-2:], mode="nearest")]))
        if self.first_cell:
            p4_in, p5_in = self.p4_down_channel_2(p4), self.p5_down_channel_2(p5)
        p4_out = self.conv4_down(_fuse(self.p4_w2, [p4_in, p4_up, self.p4_downsample(p3_out)]))
        p5_out = self.conv5_down(_fuse(self.p5_w2, [p5_in, self.p5_downsample(p4_out)]))
        return [p3_out, p4_out, p5_out]


def bifpn(channels: int, in_channels: tuple[int, int, int], cells: int) -> nn.Sequential:
    """``cells`` stacked BiFPN cells (the first one squeezes ``in_channels`` to ``channels``)."""
    return nn.Sequential(*[BiFPNCell(channels, in_channels if i == 0 else None) for i in range(cells)])
