"""ADYOLOv5-Face: a YOLOv5-Face-style detector with gather-distribute attention fusion, for phones.

* Backbone: MobileNetV1-0.25 (``body``, ImageNet-loadable) tapped at strides 4/8/16/32
  (32/64/128/256 ch; the stride-4 tap is ``body.stage1[3]``).
* Neck (gather-distribute): 1x1 laterals -> every level resized to stride 16 (average pool /
  nearest upsample), concatenated and fused -> 2 transformer-style fusion blocks (depthwise 7x7
  token mixer, pointwise MLP, 1x1 channel mixer) -> distributed back to each level, where an
  attention fusion (CBAM: channel attention from a global pool through layers without batch
  norm, spatial attention from the channel mean/max through a 7x7 conv) merges it with the
  local feature. Everything is convolutional or pooled: no (HW)x(HW) attention matrix, memory
  grows linearly with the pixel count (``benchmarks/results/adyolo_memory.md``).
* Heads: P2-P5 (strides 4/8/16/32), 3 anchors each, 16 values per anchor (box 4, objectness 1,
  landmarks 10, class 1), YOLOv5-Face anchors of its 4-level (P6) configuration.

Input: RGB / 255, letterboxed (pad 114). Export output ``predictions`` [B, N, 16], decoded in the
graph by :func:`mobilekit.families.yolo.decode.decode_levels` (coordinates normalised to the input size).

592,236 parameters (body 213,072); 0.99 GMACs at 640x640 (MACs of convolutions and linear layers).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilekit.config import DeployConfig
from mobilekit.families.yolo.anchors import YoloAnchorConfig
from mobilekit.families.yolo.decode import CLS_INDEX, OBJ_INDEX, VALUES_PER_ANCHOR, YoloRawOutputs, decode_levels
from mobilekit.models.attention import CBAM
from mobilekit.models.base import FaceDetector
from mobilekit.models.mobilenet import MobileNetV1Backbone
from mobilekit.models.registry import register_model

# YOLOv5-Face's 4-level anchors (yolov5s6 face config), one level per stride 4/8/16/32.
ADYOLO_ANCHORS = YoloAnchorConfig(
    anchors=(
        ((6, 7), (9, 11), (13, 16)),
        ((18, 23), (26, 33), (37, 47)),
        ((54, 67), (77, 104), (112, 154)),
        ((174, 241), (258, 360), (409, 498)),
    ),
    strides=(4, 8, 16, 32),
)
STRIDE4_TAP = 3  # body.stage1[3] outputs 32 ch at stride 4
GATHER_LEVEL = 2  # global features live at stride 16


def conv_bn_act(in_channels: int, out_channels: int, kernel: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Conv (no bias, "same" padding, stride 1) + BN (+ SiLU)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, 1, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(out_channels)]
    if act:
        layers.append(nn.SiLU(inplace=True))
    return nn.Sequential(*layers)


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bring a feature map to ``size``: average pooling down (exact windows when the ratio is an
    integer, as at every export size), nearest neighbour up."""
    height, width = x.shape[-2:]
    target_h, target_w = size
    if (height, width) == (target_h, target_w):
        return x
    if height >= target_h and width >= target_w:
        if height % target_h == 0 and width % target_w == 0:
            return F.avg_pool2d(x, (height // target_h, width // target_w))
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="nearest")


class TransformerStyleFusion(nn.Module):
    """Convolutional transformer block: ``x + BN(dw7x7(x))``, ``x + MLP(x)`` (pointwise, expansion 2),
    then a 1x1 channel mixer. Linear in the pixel count."""

    def __init__(self, channels: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = channels * expansion
        self.token_mixer = conv_bn_act(channels, channels, kernel=7, groups=channels, act=False)
        self.mlp = nn.Sequential(conv_bn_act(channels, hidden), conv_bn_act(hidden, channels, act=False))
        self.channel_mixer = conv_bn_act(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mixer(x)
        x = x + self.mlp(x)
        return self.channel_mixer(x)


class AttentionFusion(nn.Module):
    """Injects distributed global features into a level: ``f = local + global``, ``f + CBAM(f)``."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.attention = CBAM(channels, reduction=reduction)

    def forward(self, local: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
        fused = local + global_
        return fused + self.attention(fused)


class GatherDistributeNeck(nn.Module):
    """Gather every level at stride 16, fuse globally, distribute back with attention fusion."""

    def __init__(self, in_channels: tuple[int, ...], level_channels: tuple[int, ...], global_channels: int, blocks: int = 2) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn_act(c, l) for c, l in zip(in_channels, level_channels))
        self.gather = conv_bn_act(sum(level_channels), global_channels)
        self.fusion = nn.Sequential(*[TransformerStyleFusion(global_channels) for _ in range(blocks)])
        self.distribute = nn.ModuleList(conv_bn_act(global_channels, l, act=False) for l in level_channels)
        self.inject = nn.ModuleList(AttentionFusion(l) for l in level_channels)
        self.refine = nn.ModuleList(
            nn.Sequential(conv_bn_act(l, l, kernel=3, groups=l), conv_bn_act(l, l)) for l in level_channels
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        local = [lateral(f) for lateral, f in zip(self.lateral, features)]
        gather_size = tuple(local[GATHER_LEVEL].shape[-2:])
        global_ = self.fusion(self.gather(torch.cat([resize_to(f, gather_size) for f in local], dim=1)))
        outputs = []
        for f, distribute, inject, refine in zip(local, self.distribute, self.inject, self.refine):
            outputs.append(refine(inject(f, resize_to(distribute(global_), tuple(f.shape[-2:])))))
        return outputs


class ADYOLOv5Face(FaceDetector):
    def __init__(
        self,
        level_channels: tuple[int, ...] = (32, 64, 96, 128),
        global_channels: int = 128,
        fusion_blocks: int = 2,
        deploy: DeployConfig | None = None,
    ) -> None:
        super().__init__(deploy or adyolo_deploy_config())
        anchors = self.deploy.anchors
        if anchors is None or len(anchors.strides) != 4:
            raise ValueError("ADYOLOv5Face needs a deploy config with 4-level YOLO grid anchors")
        self.body = MobileNetV1Backbone()
        stride4_channels = self.body.stage1[STRIDE4_TAP][3].out_channels  # its pointwise conv
        in_channels = (stride4_channels, *self.body.out_channels)
        self.neck = GatherDistributeNeck(in_channels, level_channels, global_channels, fusion_blocks)
        outputs = anchors.anchors_per_location * VALUES_PER_ANCHOR
        self.heads = nn.ModuleList(nn.Conv2d(c, outputs, 1) for c in level_channels)
        self._init_head_biases()

    @torch.no_grad()
    def _init_head_biases(self) -> None:
        """YOLOv5 prior: ~8 objects per 640x640 image, class probability 0.6."""
        anchors = self.deploy.anchors
        for head, stride in zip(self.heads, anchors.strides):
            bias = head.bias.view(anchors.anchors_per_location, VALUES_PER_ANCHOR)
            bias[:, OBJ_INDEX] += math.log(8 / (640 / stride) ** 2)
            bias[:, CLS_INDEX] += math.log(0.6 / 0.01)

    def backbone_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """MobileNet features at strides 4, 8, 16, 32."""
        for index, layer in enumerate(self.body.stage1):
            x = layer(x)
            if index == STRIDE4_TAP:
                c2 = x
        c4 = self.body.stage2(x)
        return [c2, x, c4, self.body.stage3(c4)]

    def forward_normalized(self, x: torch.Tensor) -> YoloRawOutputs:
        features = self.neck(self.backbone_levels(x))
        return YoloRawOutputs(tuple(head(f) for head, f in zip(self.heads, features)), (int(x.shape[-2]), int(x.shape[-1])))

    def deploy_outputs(self, raw: YoloRawOutputs) -> tuple[torch.Tensor]:
        return (decode_levels(raw.levels, self.deploy.anchors, raw.input_hw),)

    def component_modules(self) -> dict[str, nn.Module]:
        neck = self.neck
        return {
            "backbone (MobileNetV1-0.25, strides 4-32)": self.body,
            "laterals + gather": nn.ModuleList([neck.lateral, neck.gather]),
            "transformer-style fusion": neck.fusion,
            "distribute + attention fusion": nn.ModuleList([neck.distribute, neck.inject]),
            "level refine": neck.refine,
            "heads P2-P5": self.heads,
        }


def adyolo_deploy_config() -> DeployConfig:
    return DeployConfig(
        name="adyolov5_face",
        channel_order="RGB",
        mean=(0.0, 0.0, 0.0),
        std=(255.0, 255.0, 255.0),
        resize="letterbox",
        pad_value=114.0,
        decoder="yolo",
        output_names=("predictions",),
        nms_iou=0.5,
        anchors=ADYOLO_ANCHORS,
    )


@register_model("adyolov5_face")
def adyolov5_face() -> ADYOLOv5Face:
    """ADYOLOv5-Face (MobileNetV1-0.25, gather-distribute neck, P2-P5 heads), 592,236 parameters."""
    return ADYOLOv5Face()
