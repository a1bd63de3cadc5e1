"""RetinaFace with a MobileNetV1-0.25 backbone, layout-compatible with Pytorch_Retinaface.

426,608 parameters; ``state_dict`` keys equal that project's (``body.*``, ``fpn.*``, ``ssh{1,2,3}.*``,
``ClassHead/BboxHead/LandmarkHead.{0,1,2}.conv1x1.*``), so its checkpoints load strictly.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilekit.config import DeployConfig
from mobilekit.models.base import FaceDetector
from mobilekit.models.layers import SSH, conv_bn, conv_bn1x1
from mobilekit.models.mobilenet import MobileNetV1Backbone
from mobilekit.models.registry import register_model


class FPN(nn.Module):
    """Top-down feature pyramid with nearest upsampling (Pytorch_Retinaface)."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.output1 = conv_bn1x1(in_channels[0], out_channels, leaky=leaky)
        self.output2 = conv_bn1x1(in_channels[1], out_channels, leaky=leaky)
        self.output3 = conv_bn1x1(in_channels[2], out_channels, leaky=leaky)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, features: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        out1 = self.output1(features[0])
        out2 = self.output2(features[1])
        out3 = self.output3(features[2])
        out2 = self.merge2(out2 + F.interpolate(out3, size=out2.shape[-2:], mode="nearest"))
        out1 = self.merge1(out1 + F.interpolate(out2, size=out1.shape[-2:], mode="nearest"))
        return [out1, out2, out3]


class Head1x1(nn.Module):
    """1x1 conv head -> ``[N, H*W*anchors, values]`` (rows ordered row -> column -> anchor)."""

    def __init__(self, in_channels: int, num_anchors: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_channels, num_anchors * values, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


def multitask_heads(in_channels: int, num_anchors: int, num_levels: int = 3) -> dict[str, nn.ModuleList]:
    """RetinaFace's per-level class (2), box (4) and landmark (10) heads."""
    return {
        "ClassHead": nn.ModuleList(Head1x1(in_channels, num_anchors, 2) for _ in range(num_levels)),
        "BboxHead": nn.ModuleList(Head1x1(in_channels, num_anchors, 4) for _ in range(num_levels)),
        "LandmarkHead": nn.ModuleList(Head1x1(in_channels, num_anchors, 10) for _ in range(num_levels)),
    }


def apply_heads(model: nn.Module, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate per-level head outputs: (loc, class logits, landmarks)."""
    loc = torch.cat([head(f) for head, f in zip(model.BboxHead, features)], dim=1)
    conf = torch.cat([head(f) for head, f in zip(model.ClassHead, features)], dim=1)
    landmarks = torch.cat([head(f) for head, f in zip(model.LandmarkHead, features)], dim=1)
    return loc, conf, landmarks


class RetinaFaceMobileNet(FaceDetector):
    def __init__(self, out_channels: int = 64, deploy: DeployConfig | None = None) -> None:
        # int8: the stem (stride <= 4) stays float. Over the 20 ways to calibrate on 3 of the 6 shared photos
        # and judge the other 3 at 640: fully int8 98.1 % of faces (worst split 94.2 %), stem float 100 % on
        # every split, for 1.2 ms of 6.9 at 1 thread (studies/results/int8_calibration_retinaface_*).
        super().__init__(deploy or DeployConfig(name="retinaface_mnet025", int8_keep_float=("stem",)))
        self.body = MobileNetV1Backbone()
        self.fpn = FPN(self.body.out_channels, out_channels)
        self.ssh1 = SSH(out_channels, out_channels)
        self.ssh2 = SSH(out_channels, out_channels)
        self.ssh3 = SSH(out_channels, out_channels)
        num_anchors = self.deploy.anchors.anchors_per_location
        for name, heads in multitask_heads(out_channels, num_anchors).items():
            setattr(self, name, heads)

    def forward_normalized(self, x: torch.Tensor):
        pyramid = self.fpn(self.body(x))
        features = [self.ssh1(pyramid[0]), self.ssh2(pyramid[1]), self.ssh3(pyramid[2])]
        return apply_heads(self, features)

    def component_modules(self) -> dict[str, nn.Module]:
        return {
            "backbone (MobileNetV1-0.25)": self.body,
            "FPN": self.fpn,
            "SSH x3": nn.ModuleList([self.ssh1, self.ssh2, self.ssh3]),
            "heads (class/box/landmark)": nn.ModuleList([self.ClassHead, self.BboxHead, self.LandmarkHead]),
        }


@register_model("retinaface_mnet025")
def retinaface_mnet025() -> RetinaFaceMobileNet:
    """RetinaFace-MobileNet-0.25 (Pytorch_Retinaface ``cfg_mnet``), 426,608 parameters."""
    return RetinaFaceMobileNet(out_channels=64)
