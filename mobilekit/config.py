"""Deployment configuration: everything downstream of a model reads it from here.

A model's ``DeployConfig`` says what its input is (size, channel order, normalisation),
how its outputs are laid out and how they decode into faces. Export, parity, prediction,
training targets and the Flutter metadata all read the same object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol


class AnchorSpec(Protocol):
    """A family's anchor description (priors, grid anchors, points): frozen, JSON-ready through ``to_dict``."""

    def to_dict(self) -> dict: ...


@dataclass(frozen=True)
class DeployConfig:
    """What a model expects as input and how its outputs become detections.

    Every mobilekit model takes raw RGB pixels 0-255 (float, NCHW in PyTorch); ``channel_order``,
    ``mean`` and ``std`` describe the normalisation the network applies internally
    (``(pixel[channel_order] - mean) / std``). ``anchors`` is the family's anchor description (its type is
    the family's, e.g. :class:`mobilekit.families.retinaface.priors.PriorConfig`); None stands for the
    family's default until a model is built (``FaceDetector`` fills it in). Reading a ``to_dict`` back is
    :func:`mobilekit.families.deploy_from_dict` (the family parses its anchors).
    """

    name: str
    input_size: tuple[int, int] = (640, 640)  # (H, W) default export size
    channel_order: str = "BGR"
    mean: tuple[float, float, float] = (104.0, 117.0, 123.0)  # in channel_order
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    anchors: AnchorSpec | None = None
    output_names: tuple[str, ...] = ("loc", "conf", "landmarks")
    decoder: str = "retinaface"
    resize: str = "stretch"  # how an image is brought to a fixed input size: stretch | letterbox
    pad_value: float = 0.0
    num_landmarks: int = 5
    score_threshold: float = 0.5  # default for apps and drawings
    nms_iou: float = 0.4
    max_stride: int = 32
    int8_keep_float: tuple[str, ...] = ()  # layers int8 exports keep in float by default (see converters.selective_int8)

    def to_dict(self) -> dict:
        """JSON-ready (``anchors`` through its own ``to_dict``)."""
        d = asdict(self)
        d["anchors"] = self.anchors.to_dict() if self.anchors is not None else None
        d["input_size"] = list(self.input_size)
        d["output_names"] = list(self.output_names)
        d["int8_keep_float"] = list(self.int8_keep_float)
        return d


# The 5 landmarks of a RetinaFace-layout label.txt, in file order ("left" is the image's left on an
# unmirrored photo): the keypoints of the RetinaFace and YOLO families; other families map them to
# their own keypoints (``DetectorFamily.keypoint_sources``).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth_corner", "right_mouth_corner")


def parse_size(imgsz: int | str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``640`` -> (640, 640); ``"480,640"`` -> (480, 640) as (H, W); None stays None."""
    if imgsz is None:
        return None
    if isinstance(imgsz, tuple):
        return imgsz
    if isinstance(imgsz, int):
        return (imgsz, imgsz)
    parts = [p for p in str(imgsz).replace("x", ",").split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"image size must be N or H,W, got {imgsz!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"image size must be N or H,W with positive values, got {imgsz!r}")
    return values[0], values[1]
