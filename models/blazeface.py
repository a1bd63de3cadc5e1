"""BlazeFace, Google's MediaPipe face detectors, in PyTorch; weights read from Google's ``.tflite`` files.

Both architectures were read off the graphs of MediaPipe's shipped files
(``face_detection_short_range.tflite``, ``face_detection_full_range_sparse.tflite``); convolutions carry
biases (batch norm folded by Google's converter), every activation is a ReLU.

* ``blazeface_short`` (128x128, 896 anchors, 101,390 parameters): 5x5 stride-2 stem, 16 BlazeBlocks
  (depthwise 3x3 -> 1x1, plus the input -- 2x2 max-pooled when strided, zero channels appended), heads
  on the 16x16 (2 anchors per cell) and 8x8 (6 anchors per cell) maps. TensorFlow "SAME" padding,
  asymmetric on stride 2 (the extra row/column at the bottom/right).
* ``blazeface_full`` (192x192, 2304 anchors, 1 per cell of a 48x48 map; 508,308 parameters): 3x3 stride-2 stem, bottleneck
  blocks (depthwise -> 1x1 down, ReLU -> depthwise -> 1x1 up, + input, ReLU) in five stages down to
  6x6, a top-down path (1x1 + ReLU, bilinear x2, + lateral 1x1 + ReLU, bottleneck blocks) back to
  48x48, and heads of 1x1 -> depthwise 3x3 stride 2 -> depth-to-space x2. Symmetric padding 1.

Input: RGB 0-255, scaled to [-1, 1] inside the model (MediaPipe's ``output_tensor_float_range``).
Outputs ``regressors`` [B, N, 16] (box cx, cy, w, h and 6 keypoints x, y, in input pixels relative to
the anchor centre) and ``classificators`` [B, N, 1] (score logits): the raw outputs of Google's file.

``--weights face_detection_short_range.tflite`` loads Google's weights (:meth:`state_dict_from_file`);
a ``.pth`` saved from the model loads like any checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilekit.config import DeployConfig
from mobilekit.errors import MobilekitError
from mobilekit.families.blazeface.anchors import SsdAnchorConfig
from mobilekit.models.base import FaceDetector
from mobilekit.models.registry import register_model

VALUES_PER_ANCHOR = 16  # box cx, cy, w, h + 6 keypoints (x, y)
NUM_KEYPOINTS = 6


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's "SAME" padding: ``ceil(size / stride)`` outputs, the odd pixel of padding at the end."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """TensorFlow's ``DEPTH_TO_SPACE`` (DCR order: channel ``(i * block + j) * C + c`` goes to pixel offset
    ``(i, j)``), on NCHW tensors; ``pixel_shuffle`` is the CRD order and would scramble the channels."""
    n, channels, height, width = x.shape
    c = channels // (block * block)
    x = x.reshape(n, block, block, c, height, width).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, c, height * block, width * block)


def rows_per_anchor(x: torch.Tensor, values: int) -> torch.Tensor:
    """Head map [B, A*values, H, W] -> [B, H*W*A, values] (rows ordered row -> column -> anchor)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, values)


class BlazeBlock(nn.Module):
    """Short-range block: depthwise 3x3 (stride 1 or 2, SAME) -> 1x1, plus the input (2x2 max pool when
    strided, zero channels appended when widening), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pointwise(self.depthwise(same_pad(x, 3, self.stride)))
        skip = F.max_pool2d(x, 2) if self.stride == 2 else x
        if self.extra_channels:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(out + skip)


class BottleneckBlock(nn.Module):
    """Full-range block: depthwise 3x3 (stride) -> 1x1 to ``mid``, ReLU -> depthwise 3x3 -> 1x1 to ``out``;
    plus the input when the shape is kept; ReLU."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.residual = stride == 1 and in_channels == out_channels
        self.depthwise1 = nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels)
        self.pointwise1 = nn.Conv2d(in_channels, mid_channels, 1)
        self.depthwise2 = nn.Conv2d(mid_channels, mid_channels, 3, 1, 1, groups=mid_channels)
        self.pointwise2 = nn.Conv2d(mid_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pointwise2(self.depthwise2(F.relu(self.pointwise1(self.depthwise1(x)))))
        return F.relu(out + x if self.residual else out)


def conv1x1_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))


class SpaceHead(nn.Module):
    """Full-range head: 1x1 -> depthwise 3x3 stride 2 -> depth-to-space x2, ``values`` per cell."""

    def __init__(self, in_channels: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.pointwise = nn.Conv2d(in_channels, 4 * values, 1)
        self.depthwise = nn.Conv2d(4 * values, 4 * values, 3, 2, 1, groups=4 * values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rows_per_anchor(depth_to_space(self.depthwise(self.pointwise(x)), 2), self.values)


class BlazeFace(FaceDetector):
    """Shared behaviour: MediaPipe's input scaling and Google's weights. Every convolution is registered in
    the order the ``.tflite`` graph runs it, which is how :meth:`state_dict_from_file` pairs them."""

    foreign_weight_suffixes = (".tflite",)

    def stem_conv(self) -> nn.Conv2d:
        raise NotImplementedError

    def first_conv(self) -> nn.Conv2d:
        return self.stem_conv()

    def deploy_outputs(self, raw):
        return raw  # (regressors, classificators), raw as MediaPipe's file returns them

    def state_dict_from_file(self, path: str | Path) -> dict[str, torch.Tensor]:
        """This model's state dict from Google's ``.tflite`` (convolutions paired in execution order,
        every shape checked)."""
        from mobilekit.models.tflite_weights import TfliteGraph

        convs = TfliteGraph(path).convolutions()
        names = [name for name, module in self.named_modules() if isinstance(module, nn.Conv2d)]
        if len(convs) != len(names):
            raise MobilekitError(f"{Path(path).name} has {len(convs)} convolutions, {self.deploy.name} has {len(names)}: not a {self.deploy.name} file")
        state = {}
        for name, conv in zip(names, convs):
            module = self.get_submodule(name)
            if tuple(module.weight.shape) != conv.weight.shape or (module.groups > 1) != (conv.op == "DEPTHWISE_CONV_2D") or module.stride[0] != conv.stride:
                raise MobilekitError(
                    f"{Path(path).name} does not fit {self.deploy.name}: {conv.op} {conv.weight.shape} stride {conv.stride} "
                    f"where {name} is {tuple(module.weight.shape)} stride {module.stride[0]}"
                )
            state[f"{name}.weight"] = torch.from_numpy(conv.weight)
            state[f"{name}.bias"] = torch.from_numpy(conv.bias)
        return state


class BlazeFaceShort(BlazeFace):
    """MediaPipe's short-range (front camera) BlazeFace, 128x128."""

    def __init__(self, deploy: DeployConfig | None = None) -> None:
        super().__init__(deploy or blazeface_deploy_config("short"))
        self.stem = nn.Conv2d(3, 24, 5, 2)
        widths = [24, 24, 28, 32, 36, 42, 48, 56, 64, 72, 80, 88, 96, 96, 96, 96, 96]
        strides = {2: 2, 5: 2, 11: 2}  # block index -> stride
        self.blocks = nn.ModuleList(BlazeBlock(widths[i], widths[i + 1], strides.get(i, 1)) for i in range(16))
        self.tap16 = 10  # blocks[10] ends the 16x16 map (88 channels)
        self.classifier_16x16 = nn.Conv2d(88, 2, 1)
        self.classifier_8x8 = nn.Conv2d(96, 6, 1)
        self.regressor_16x16 = nn.Conv2d(88, 2 * VALUES_PER_ANCHOR, 1)
        self.regressor_8x8 = nn.Conv2d(96, 6 * VALUES_PER_ANCHOR, 1)

    def stem_conv(self) -> nn.Conv2d:
        return self.stem

    def forward_normalized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.stem(same_pad(x, 5, 2)))
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index == self.tap16:
                map16 = x
        regressors = torch.cat([rows_per_anchor(self.regressor_16x16(map16), VALUES_PER_ANCHOR), rows_per_anchor(self.regressor_8x8(x), VALUES_PER_ANCHOR)], 1)
        classificators = torch.cat([rows_per_anchor(self.classifier_16x16(map16), 1), rows_per_anchor(self.classifier_8x8(x), 1)], 1)
        return regressors, classificators


class BlazeFaceFull(BlazeFace):
    """MediaPipe's full-range (rear camera) BlazeFace, 192x192."""

    def __init__(self, deploy: DeployConfig | None = None) -> None:
        super().__init__(deploy or blazeface_deploy_config("full"))
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(inplace=True))
        # Stage (in, mid, out, residual blocks after the strided one); stage 0 keeps the stem's resolution.
        self.stage96 = nn.Sequential(*[BottleneckBlock(32, 8, 32) for _ in range(2)])
        self.stage48, self.lateral48 = self._stage(32, 16, 64, 2), conv1x1_relu(64, 48)
        self.stage24, self.lateral24 = self._stage(64, 32, 128, 2), conv1x1_relu(128, 64)
        self.stage12, self.lateral12 = self._stage(128, 48, 192, 2), conv1x1_relu(192, 96)
        self.stage6 = self._stage(192, 96, 384, 3)
        self.top6 = conv1x1_relu(384, 96)
        self.up12 = nn.Sequential(*[BottleneckBlock(96, 48, 96) for _ in range(2)])
        self.top12 = conv1x1_relu(96, 64)
        self.up24 = nn.Sequential(*[BottleneckBlock(64, 32, 64) for _ in range(2)])
        self.top24 = conv1x1_relu(64, 48)
        self.up48 = BottleneckBlock(48, 24, 48)
        self.classifier = SpaceHead(48, 1)
        self.regressor = SpaceHead(48, VALUES_PER_ANCHOR)

    @staticmethod
    def _stage(in_channels: int, mid: int, out_channels: int, blocks: int) -> nn.Sequential:
        return nn.Sequential(BottleneckBlock(in_channels, mid, out_channels, 2), *[BottleneckBlock(out_channels, mid, out_channels) for _ in range(blocks)])

    def stem_conv(self) -> nn.Conv2d:
        return self.stem[0]

    def forward_normalized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c48 = self.stage48(self.stage96(self.stem(x)))
        c24 = self.stage24(c48)
        c12 = self.stage12(c24)
        c6 = self.stage6(c12)
        p12 = self.up12(self.lateral12(c12) + upsample2(self.top6(c6)))
        p24 = self.up24(self.lateral24(c24) + upsample2(self.top12(p12)))
        p48 = self.up48(self.lateral48(c48) + upsample2(self.top24(p24)))
        return self.regressor(p48), self.classifier(p48)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 with half-pixel centres (TensorFlow's ``RESIZE_BILINEAR``, ``half_pixel_centers``)."""
    return F.interpolate(x, size=(x.shape[-2] * 2, x.shape[-1] * 2), mode="bilinear", align_corners=False)


BLAZEFACE_VARIANTS = {
    # MediaPipe's face_detection_{short,full}_range.pbtxt: tensor size, anchor strides, interpolated
    # anchor, min_score_thresh; face_detection.pbtxt: weighted NMS at IoU 0.3.
    "short": dict(size=128, anchors=SsdAnchorConfig(strides=(8, 16, 16, 16), interpolated_scale_aspect_ratio=1.0), min_score=0.5, max_stride=16,
                  weights="face_detection_short_range.tflite"),
    "full": dict(size=192, anchors=SsdAnchorConfig(strides=(4,), interpolated_scale_aspect_ratio=0.0), min_score=0.6, max_stride=32,
                 weights="face_detection_full_range_sparse.tflite",
                 # int8 with the top-down path's bilinear upsampling float too: recall 6/7 (5/7 without), score drift <= 0.13
                 keep_float=("RESIZE_BILINEAR",)),
}
# Google's file of each model, as the mediapipe wheel ships it (mediapipe/modules/face_detection/, Apache-2.0).
GOOGLE_WEIGHTS = {f"blazeface_{variant}": spec["weights"] for variant, spec in BLAZEFACE_VARIANTS.items()}


def blazeface_deploy_config(variant: str) -> DeployConfig:
    spec = BLAZEFACE_VARIANTS[variant]
    return DeployConfig(
        name=f"blazeface_{variant}",
        input_size=(spec["size"], spec["size"]),
        channel_order="RGB",
        mean=(127.5, 127.5, 127.5),
        std=(127.5, 127.5, 127.5),
        output_names=("regressors", "classificators"),
        decoder="blazeface",
        resize="letterbox_mediapipe",
        pad_value=0.0,  # MediaPipe's BORDER_ZERO: black pixels, -1 after scaling
        num_landmarks=NUM_KEYPOINTS,
        score_threshold=spec["min_score"],
        nms_iou=0.3,
        max_stride=spec["max_stride"],
        anchors=spec["anchors"],
        # int8: the heads and the reshapes/concatenations after them stay float. One int8 scale per output
        # spans the hopeless anchors' values (logits to -600): 2.2 logits per step, 6 false faces on 3 photos.
        int8_keep_float=("outputs", *spec.get("keep_float", ())),
    )


@register_model("blazeface_short")
def blazeface_short() -> BlazeFaceShort:
    """MediaPipe BlazeFace short range (128x128, 896 anchors, 6 keypoints); ``--weights face_detection_short_range.tflite``."""
    return BlazeFaceShort()


@register_model("blazeface_full")
def blazeface_full() -> BlazeFaceFull:
    """MediaPipe BlazeFace full range (192x192, 2304 anchors, 6 keypoints); ``--weights face_detection_full_range_sparse.tflite``."""
    return BlazeFaceFull()
