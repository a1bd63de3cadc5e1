"""FeatherFace V2: the light student of FeatherFace V1, meant to be trained by distillation from it.

Same pipeline, priors, preprocessing and outputs as V1 / RetinaFace (``loc`` [B, N, 4], ``conf``
logits [B, N, 2] -> softmax on export, ``landmarks`` [B, N, 10]; 2 priors per location at strides
8/16/32), so one post-processing and one set of app assets serve both:

MobileNetV1-0.25 (``body``) -> BiFPN-light (depthwise-separable, 32 ch, 2 cells) -> one CBAM shared
by the three levels (reduction 32, residual) -> per level grouped SSH (groups 4, no deformable
convs) -> channel shuffle (4 groups) -> ONE class/box/landmark 1x1 head set shared by all levels.

259,480 parameters (body 213,072; +1.4% over the 256K plan); 0.42 GMACs at 640x640 (see ``mobilekit params``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from mobilekit.config import DeployConfig
from mobilekit.models.attention import CBAM
from mobilekit.models.base import FaceDetector
from mobilekit.models.bifpn import bifpn
from mobilekit.models.featherface import channel_shuffle
from mobilekit.models.layers import SSH
from mobilekit.models.mobilenet import MobileNetV1Backbone
from mobilekit.models.registry import register_model
from mobilekit.models.retinaface import Head1x1

NUM_LEVELS = 3


def grouped_conv_bn(in_channels: int, out_channels: int, groups: int, leaky: float | None = None) -> nn.Sequential:
    """Grouped 3x3 conv (no bias) + BN (+ LeakyReLU when ``leaky`` is given)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, 1, 1, groups=groups, bias=False), nn.BatchNorm2d(out_channels)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


def grouped_ssh(channels: int, groups: int = 4, leaky: float = 0.1) -> SSH:
    """SSH with every 3x3 conv grouped (``groups`` must divide a quarter of ``channels``)."""
    if channels % 4 or (channels // 4) % groups:
        raise ValueError(f"grouped SSH needs channels / 4 divisible by groups={groups}, got {channels}")
    return SSH(channels, channels, lambda inp, oup, slope: grouped_conv_bn(inp, oup, groups, slope), leaky)


class FeatherFaceV2(FaceDetector):
    def __init__(self, channels: int = 32, bifpn_cells: int = 2, groups: int = 4, deploy: DeployConfig | None = None) -> None:
        # int8: the shared CBAM's channel-attention MLP stays float. Its int8 FULLY_CONNECTED after the int8
        # REDUCE_MAX makes LiteRT's XNNPACK delegate crash while preparing the graph (double free).
        super().__init__(deploy or DeployConfig(name="featherface_v2", int8_keep_float=("FULLY_CONNECTED",)))
        self.groups = groups
        self.body = MobileNetV1Backbone()
        self.bifpn = bifpn(channels, self.body.out_channels, bifpn_cells)
        self.cbam = CBAM(channels, reduction=32)
        self.ssh = nn.ModuleList(grouped_ssh(channels, groups) for _ in range(NUM_LEVELS))
        num_anchors = self.deploy.anchors.anchors_per_location
        self.ClassHead = Head1x1(channels, num_anchors, 2)
        self.BboxHead = Head1x1(channels, num_anchors, 4)
        self.LandmarkHead = Head1x1(channels, num_anchors, 10)

    def forward_normalized(self, x: torch.Tensor):
        pyramid = self.bifpn(list(self.body(x)))
        features = [channel_shuffle(ssh(p + self.cbam(p)), self.groups) for ssh, p in zip(self.ssh, pyramid)]
        loc = torch.cat([self.BboxHead(f) for f in features], dim=1)
        conf = torch.cat([self.ClassHead(f) for f in features], dim=1)
        landmarks = torch.cat([self.LandmarkHead(f) for f in features], dim=1)
        return loc, conf, landmarks

    def component_modules(self) -> dict[str, nn.Module]:
        return {
            "backbone (MobileNetV1-0.25)": self.body,
            "BiFPN-light (32 ch x 2)": self.bifpn,
            "CBAM (shared)": self.cbam,
            "grouped SSH x3": self.ssh,
            "shared heads (class/box/landmark)": nn.ModuleList([self.ClassHead, self.BboxHead, self.LandmarkHead]),
        }


@register_model("featherface_v2")
def featherface_v2() -> FeatherFaceV2:
    """FeatherFace V2 (distillation student of V1), 259,480 parameters."""
    return FeatherFaceV2()
