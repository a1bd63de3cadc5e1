"""YuNet (libfacedetection) in PyTorch, loading its authors' weights unchanged.

The network of ``ShiqiYu/libfacedetection.train`` (commit 0047ac24a; ``configs/yunet_{n,s}.py``,
``mmdet/models/backbones/yunet_backbone.py``, ``necks/tfpn.py``, ``dense_heads/yunet_head.py``,
``utils/yunet_layer.py``), written again with the same module names, so that the ``state_dict`` of the
authors' MMDetection checkpoints (``ckpt["state_dict"]``) loads with ``strict=True`` and identical keys:

* backbone: ``model0`` = 3x3 stride-2 conv + BN + ReLU, then a "DP unit" (1x1 conv -> depthwise 3x3 ->
  BN -> ReLU); ``model1..5`` = two DP units each; 2x2 max pool after ``model0, 2, 3, 4``; ``model3, 4, 5``
  feed the neck at strides 8, 16, 32;
* neck (TFPN): top-down, ``p[i-1] += nearest_x2(dp_unit_i(p[i]))``, then a DP unit on the stride-8 map;
* head, one per level (no weight sharing across levels): optional shared DP units (yunet_n: 1, yunet_s: 0),
  then DP units without BN/ReLU to cls (1), bbox (4), obj (1), kps (10).

Parameters (``sum(p.numel() for p in model.parameters())``, BatchNorm weight and bias included, running
statistics not): yunet_n 75,856 (stages 16-64-64-64-64-64, one shared head unit), yunet_s 54,608 (stages
16-32-64-64-64-64, none). The authors' ONNX files hold fewer (73,848 and 53,112) because the export folds
the BatchNorms into the convolutions. ``yunet_s`` is the model OpenCV's ``cv2.FaceDetectorYN`` runs
(``face_detection_yunet_2023mar.onnx`` is the authors' ``yunet_s_640_640.onnx``).

Input: the network sees BGR 0-255 as it is (the authors' ``img_norm_cfg``: mean 0, std 1, ``to_rgb=False``;
OpenCV's ``blobFromImage`` with its defaults), so ``channel_order="BGR"``, ``mean=0``, ``std=1``. Sizes that
are not multiples of 32 are padded at the bottom/right with zeros (black) to the next multiple, as
``FaceDetectorYN`` pads them, and each level's map is cropped back to ``ceil(H / s) x ceil(W / s)`` cells
(the points of :mod:`mobilekit.families.yunet.points`).

Outputs: :class:`~mobilekit.families.yunet.decode.YuNetRawOutputs` (logits); :meth:`YuNet.deploy_outputs`
gives what the authors' ONNX gives (``cls``/``obj`` after the sigmoid), levels concatenated.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilekit.config import DeployConfig
from mobilekit.errors import MobilekitError
from mobilekit.families.yunet.decode import YuNetRawOutputs
from mobilekit.families.yunet.points import PointConfig
from mobilekit.models.base import FaceDetector
from mobilekit.models.registry import register_model
from mobilekit.package_data import YUNET_WEIGHTS

STRIDES = (8, 16, 32)
DIVISOR = 32  # FaceDetectorYN pads its input to a multiple of this
NUM_KEYPOINTS = 5

# Per variant: backbone stage channels (libfacedetection.train's ``stage_channels``) and shared head units.
YUNET_VARIANTS = {
    "n": dict(stages=((3, 16, 16), (16, 64), (64, 64), (64, 64), (64, 64), (64, 64)), shared_convs=1, params=75_856),
    "s": dict(stages=((3, 16, 16), (16, 32), (32, 64), (64, 64), (64, 64), (64, 64)), shared_convs=0, params=54_608),
}
DOWNSAMPLE_AFTER = (0, 2, 3, 4)  # backbone stages followed by a 2x2 max pool
OUTPUT_STAGES = (3, 4, 5)  # backbone stages feeding the neck (strides 8, 16, 32)

# Decode defaults, in one place: cv2.FaceDetectorYN's (score 0.9, NMS IoU 0.3, top 5000). The authors'
# MMDetection test config uses NMS 0.45 at score 0.02 for their WIDER FACE numbers.
YUNET_SCORE_THRESHOLD = 0.9
YUNET_NMS_IOU = 0.3


class ConvDPUnit(nn.Module):
    """1x1 conv -> depthwise 3x3 conv (both with bias), then BN + ReLU unless ``bn_relu`` is False."""

    def __init__(self, in_channels: int, out_channels: int, bn_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, groups=out_channels)
        self.bn_relu = bn_relu
        if bn_relu:
            self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        return F.relu(self.bn(x)) if self.bn_relu else x


class ConvHead(nn.Module):
    """The stem: 3x3 stride-2 conv + BN + ReLU, then a DP unit."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 3, 2, 1)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = ConvDPUnit(mid_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.bn1(self.conv1(x))))


class Conv4LayerBlock(nn.Module):
    """Two DP units: ``in -> in -> out``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvDPUnit(in_channels, in_channels)
        self.conv2 = ConvDPUnit(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class YuNetBackbone(nn.Module):
    def __init__(self, stages: tuple[tuple[int, ...], ...]) -> None:
        super().__init__()
        self.num_stages = len(stages)
        self.model0 = ConvHead(*stages[0])
        for index in range(1, self.num_stages):
            self.add_module(f"model{index}", Conv4LayerBlock(*stages[index]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index in range(self.num_stages):
            x = getattr(self, f"model{index}")(x)
            if index in OUTPUT_STAGES:
                features.append(x)
            if index in DOWNSAMPLE_AFTER:
                x = F.max_pool2d(x, 2)
        return features


class TFPN(nn.Module):
    """Top-down neck: each coarser map, after its DP unit, is upsampled x2 (nearest) and added to the finer."""

    def __init__(self, channels: int = 64, levels: int = len(STRIDES)) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvDPUnit(channels, channels) for _ in range(levels))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        features = list(features)
        for index in range(len(features) - 1, 0, -1):
            features[index] = self.lateral_convs[index](features[index])
            features[index - 1] = features[index - 1] + F.interpolate(features[index], scale_factor=2.0, mode="nearest")
        features[0] = self.lateral_convs[0](features[0])
        return features


class YuNetHead(nn.Module):
    """Per level: ``shared_convs`` DP units, then DP units (no BN/ReLU) to cls, bbox, obj and kps maps."""

    def __init__(self, channels: int = 64, shared_convs: int = 1, levels: int = len(STRIDES), num_keypoints: int = NUM_KEYPOINTS) -> None:
        super().__init__()
        if shared_convs > 0:
            self.multi_level_share_convs = nn.ModuleList(nn.Sequential(*[ConvDPUnit(channels, channels) for _ in range(shared_convs)]) for _ in range(levels))
        else:
            self.multi_level_share_convs = None
        self.multi_level_cls = nn.ModuleList(ConvDPUnit(channels, 1, False) for _ in range(levels))
        self.multi_level_bbox = nn.ModuleList(ConvDPUnit(channels, 4, False) for _ in range(levels))
        self.multi_level_obj = nn.ModuleList(ConvDPUnit(channels, 1, False) for _ in range(levels))
        self.multi_level_kps = nn.ModuleList(ConvDPUnit(channels, 2 * num_keypoints, False) for _ in range(levels))

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], ...]:
        if self.multi_level_share_convs is not None:
            features = [convs(f) for f, convs in zip(features, self.multi_level_share_convs)]
        return tuple([conv(f) for f, conv in zip(features, convs)] for convs in (self.multi_level_cls, self.multi_level_obj, self.multi_level_bbox, self.multi_level_kps))


def _rows(level: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Head map [B, C, H', W'] -> its first ``rows x cols`` cells as [B, rows*cols, C] (row -> column)."""
    if level.shape[-2] != rows or level.shape[-1] != cols:
        level = level[:, :, :rows, :cols]
    return level.permute(0, 2, 3, 1).reshape(level.shape[0], rows * cols, level.shape[1])


class YuNet(FaceDetector):
    """YuNet: backbone -> TFPN -> per-level heads at strides 8/16/32, anchor-free (one point per cell)."""

    def __init__(self, variant: str = "n", deploy: DeployConfig | None = None) -> None:
        spec = YUNET_VARIANTS[variant]
        super().__init__(deploy or yunet_deploy(f"yunet_{variant}"))
        self.variant = variant
        self.backbone = YuNetBackbone(spec["stages"])
        self.neck = TFPN(spec["stages"][-1][-1])
        self.bbox_head = YuNetHead(spec["stages"][-1][-1], spec["shared_convs"])

    def first_conv(self) -> nn.Conv2d:
        return self.backbone.model0.conv1

    def backbone_module(self) -> nn.Module | None:
        return None  # not the MobileNet backbone ImageNet pretraining expects

    def forward_normalized(self, x: torch.Tensor) -> YuNetRawOutputs:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % DIVISOR, -width % DIVISOR
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # bottom/right, zeros: FaceDetectorYN's padWithDivisor
        maps = self.bbox_head(self.neck(self.backbone(x)))
        sizes = [(math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]
        cls, obj, bbox, kps = (torch.cat([_rows(level, *size) for level, size in zip(levels, sizes)], 1) for levels in maps)
        return YuNetRawOutputs(cls, obj, bbox, kps)

    def deploy_outputs(self, raw: YuNetRawOutputs):
        """``cls``, ``obj`` (sigmoid), ``bbox``, ``kps``, each [B, N, C]: the authors' ONNX outputs, levels concatenated."""
        return torch.sigmoid(raw.cls), torch.sigmoid(raw.obj), raw.bbox, raw.kps


def yunet_deploy(name: str, input_size: tuple[int, int] = (640, 640)) -> DeployConfig:
    """The deployment description of a YuNet model.

    Images of another size are letterboxed (aspect kept, black padding: the authors' test pipeline resizes
    with ``keep_ratio`` and pads with 0) to a fixed export size; prediction at an image's own size (what
    ``FaceDetectorYN`` does with ``setInputSize(image size)``) pads to a multiple of 32 inside the model.
    """
    return DeployConfig(
        name=name,
        input_size=input_size,
        channel_order="BGR",
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        anchors=PointConfig(STRIDES),
        output_names=("cls", "obj", "bbox", "kps"),
        decoder="yunet",
        resize="letterbox",
        pad_value=0.0,
        num_landmarks=NUM_KEYPOINTS,
        score_threshold=YUNET_SCORE_THRESHOLD,
        nms_iou=YUNET_NMS_IOU,
        max_stride=DIVISOR,
    )


def load_authors_weights(model: YuNet, path: str | Path) -> YuNet:
    """Load the authors' MMDetection checkpoint (``yunet_n.pth``/``yunet_s.pth``; its ``state_dict`` as it is)
    strictly; a file that does not fit raises a one-line :class:`MobilekitError` naming it."""
    from mobilekit.checkpoint import compare_state_dict, read_state_dict

    state = read_state_dict(path)
    report = compare_state_dict(model, state, str(path))
    if not report.ok:
        raise MobilekitError(f"{Path(path).name} is not a {model.deploy.name} checkpoint of libfacedetection.train: {report.describe(limit=3)}")
    model.load_state_dict(state, strict=True)
    return model


@register_model("yunet_n", released=YUNET_WEIGHTS["n"])
def yunet_n() -> YuNet:
    """YuNet-n of libfacedetection.train (75,856 parameters), randomly initialised; its authors' weights ship
    with mobilekit (``released_weights("yunet_n")``) and are what commands given no weights use."""
    return YuNet("n")


@register_model("yunet_s", released=YUNET_WEIGHTS["s"])
def yunet_s() -> YuNet:
    """YuNet-s of libfacedetection.train (54,608 parameters), the model of OpenCV's FaceDetectorYN, randomly
    initialised; its authors' weights ship with mobilekit (``released_weights("yunet_s")``)."""
    return YuNet("s")
