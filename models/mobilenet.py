"""MobileNetV1-0.25 backbone (Pytorch_Retinaface layout): three stages at strides 8/16/32."""

from __future__ import annotations

import torch
import torch.nn as nn

from mobilekit.models.layers import conv_bn, conv_dw


class MobileNetV1Backbone(nn.Module):
    """Returns the stage outputs (64 ch @ /8, 128 ch @ /16, 256 ch @ /32).

    Keys match Pytorch_Retinaface's ``body.stage{1,2,3}``; the ImageNet classifier (``fc``) is
    not part of the detector.
    """

    out_channels = (64, 128, 256)

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 2, leaky=0.1),
            conv_dw(8, 16, 1),
            conv_dw(16, 32, 2),
            conv_dw(32, 32, 1),
            conv_dw(32, 64, 2),
            conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(
            conv_dw(64, 128, 2),
            *[conv_dw(128, 128, 1) for _ in range(5)],
        )
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return c3, c4, c5

    def first_conv(self) -> nn.Conv2d:
        return self.stage1[0][0]
