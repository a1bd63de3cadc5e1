"""Small building blocks shared by the models (Pytorch_Retinaface naming, so checkpoints load)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

# (in_channels, out_channels, leaky) -> 3x3 conv + BN, + LeakyReLU(leaky) unless leaky is None
ConvBlock = Callable[[int, int, "float | None"], nn.Module]


def conv_bn(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    """3x3 conv (no bias) + BN + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_bn_no_relu(inp: int, oup: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) + BN."""
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup))


def conv_bn1x1(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    """1x1 conv (no bias) + BN + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, stride, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_dw(inp: int, oup: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3x3 + BN + LeakyReLU, then pointwise 1x1 + BN + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def plain_conv_block(inp: int, oup: int, leaky: float | None) -> nn.Sequential:
    """Pytorch_Retinaface's SSH convs: ``conv_bn`` with ``leaky``, or ``conv_bn_no_relu``."""
    return conv_bn_no_relu(inp, oup) if leaky is None else conv_bn(inp, oup, leaky=leaky)


class SSH(nn.Module):
    """Single Stage Headless context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) receptive branches,
    concatenated C/2 + C/4 + C/4, then ReLU. ``block`` builds each 3x3 conv + BN (plain, deformable or
    grouped); ``leaky`` is the slope after the shared first convs of the 5x5/7x7 branches (default
    Pytorch_Retinaface's: 0.1 up to 64 channels, else 0). Attribute names are Pytorch_Retinaface's, so
    every checkpoint loads strictly."""

    def __init__(self, in_channels: int, out_channels: int, block: ConvBlock = plain_conv_block, leaky: float | None = None) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"SSH out_channels must be a multiple of 4, got {out_channels}")
        leaky = (0.1 if out_channels <= 64 else 0.0) if leaky is None else leaky
        quarter = out_channels // 4
        self.conv3X3 = block(in_channels, out_channels // 2, None)
        self.conv5X5_1 = block(in_channels, quarter, leaky)
        self.conv5X5_2 = block(quarter, quarter, None)
        self.conv7X7_2 = block(quarter, quarter, leaky)
        self.conv7x7_3 = block(quarter, quarter, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5_1 = self.conv5X5_1(x)
        branches = [self.conv3X3(x), self.conv5X5_2(branch5_1), self.conv7x7_3(self.conv7X7_2(branch5_1))]
        # ReLU per branch, then concatenate: the same values as ReLU after the concatenation, but each
        # ReLU follows its convolution, so converters fuse it there (an int8 ReLU after the concatenation
        # ran outside XNNPACK: 3 ms of RetinaFace's 8.5 ms at 640, one thread).
        return torch.cat([F.relu(b) for b in branches], dim=1)
