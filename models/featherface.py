"""FeatherFace V1 (MobileNetV1-0.25, BiFPN, SSH with deformable convs, channel shuffle) and its
CBAM variant, key-compatible with the FeatherFace checkpoints.

Pipeline: backbone levels (strides 8/16/32) -> [CBAM residual] -> BiFPN 56 ch x 2 cells ->
[CBAM residual] -> per level SSH (every 3x3 a modulated deformable conv) -> channel shuffle
(2 groups) -> RetinaFace 1x1 class/box/landmark heads, 2 anchors per location.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilekit.config import DeployConfig
from mobilekit.models.attention import CBAM
from mobilekit.models.base import FaceDetector
from mobilekit.models.bifpn import bifpn
from mobilekit.models.deform_conv import DeformConv
from mobilekit.models.layers import SSH
from mobilekit.models.mobilenet import MobileNetV1Backbone
from mobilekit.models.registry import register_model
from mobilekit.models.retinaface import apply_heads, multitask_heads


def deform_conv_bn(in_channels: int, out_channels: int, leaky: float | None = None) -> nn.Sequential:
    """Deformable 3x3 conv + BN (+ LeakyReLU when ``leaky`` is given)."""
    layers: list[nn.Module] = [DeformConv(in_channels, out_channels), nn.BatchNorm2d(out_channels)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """FeatherFace's channel shuffle: view as [N, C/groups, groups, H, W] and swap those axes."""
    n, c, h, w = x.shape
    return x.reshape(n, c // groups, groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class FeatherFace(FaceDetector):
    """FeatherFace V1; with ``cbam=True`` CBAM refines the backbone levels and the BiFPN outputs
    residually (``relu(CBAM(x) + x)``)."""

    def __init__(self, channels: int = 56, bifpn_cells: int = 2, cbam: bool = False, deploy: DeployConfig | None = None) -> None:
        # int8 (V1, the users' checkpoint): the stem (stride <= 4) stays float. Over the 20 ways to calibrate on 3
        # of the 6 shared photos and judge the other 3 at 640: fully int8 97.5 % of faces (worst split 95.9 %),
        # stem float 98.9 % (97.5 %), for 1.3 ms of 38 at 1 thread (studies/results/int8_calibration_featherface_v1_*).
        keep_float = () if cbam else ("stem",)
        super().__init__(deploy or DeployConfig(name="featherface_v1_cbam" if cbam else "featherface_v1", int8_keep_float=keep_float))
        self.body = MobileNetV1Backbone()
        levels = self.body.out_channels
        self.backbone_cbam = nn.ModuleList(CBAM(c, 16) for c in levels) if cbam else None
        self.bifpn = bifpn(channels, levels, bifpn_cells)
        self.bifpn_cbam = nn.ModuleList(CBAM(channels, 16) for _ in levels) if cbam else None
        self.ssh1 = SSH(channels, channels, deform_conv_bn)
        self.ssh2 = SSH(channels, channels, deform_conv_bn)
        self.ssh3 = SSH(channels, channels, deform_conv_bn)
        for name, heads in multitask_heads(channels, self.deploy.anchors.anchors_per_location).items():
            setattr(self, name, heads)

    @staticmethod
    def _refine(attention: nn.ModuleList | None, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if attention is None:
            return features
        return [F.relu(cbam(f) + f) for cbam, f in zip(attention, features)]

    def forward_normalized(self, x: torch.Tensor):
        features = self._refine(self.backbone_cbam, list(self.body(x)))
        features = self._refine(self.bifpn_cbam, self.bifpn(features))
        features = [self.ssh1(features[0]), self.ssh2(features[1]), self.ssh3(features[2])]
        return apply_heads(self, [channel_shuffle(f, 2) for f in features])

    def component_modules(self) -> dict[str, nn.Module]:
        parts: dict[str, nn.Module] = {"backbone (MobileNetV1-0.25)": self.body}
        if self.backbone_cbam is not None:
            parts["CBAM (backbone + BiFPN)"] = nn.ModuleList([self.backbone_cbam, self.bifpn_cbam])
        parts["BiFPN"] = self.bifpn
        parts["SSH x3 (deformable convs)"] = nn.ModuleList([self.ssh1, self.ssh2, self.ssh3])
        parts["heads (class/box/landmark)"] = nn.ModuleList([self.ClassHead, self.BboxHead, self.LandmarkHead])
        return parts


@register_model("featherface_v1")
def featherface_v1() -> FeatherFace:
    """FeatherFace V1 (the users' checkpoint layout), 489,015 parameters."""
    return FeatherFace(cbam=False)


@register_model("featherface_v1_cbam")
def featherface_v1_cbam() -> FeatherFace:
    """FeatherFace V1 with residual CBAM after the backbone levels and after the BiFPN,
    502,022 parameters (FeatherFace V1's 489,015 plus 13,007 in six CBAM blocks)."""
    return FeatherFace(cbam=True)
