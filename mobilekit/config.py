"""Deployment configuration: everything downstream of a model reads it from here.

A model's ``DeployConfig`` says what its input is (size, channel order, normalisation),
how its outputs are laid out and how they decode into faces. Export, parity, prediction,
training targets and the Flutter metadata all read the same object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class PriorConfig:
    """RetinaFace-style prior (anchor) boxes.

    Per level ``i`` the feature map is ``ceil(H / steps[i]) x ceil(W / steps[i])``; each cell
    carries one square prior per entry of ``min_sizes[i]``. Order: level -> row -> column -> size.
    """

    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)
    variances: tuple[float, float] = (0.1, 0.2)
    clip: bool = False

    def __post_init__(self) -> None:
        if len(self.min_sizes) != len(self.steps):
            raise ValueError(f"min_sizes has {len(self.min_sizes)} levels but steps has {len(self.steps)}")

    @property
    def anchors_per_location(self) -> int:
        counts = {len(sizes) for sizes in self.min_sizes}
        if len(counts) != 1:
            raise ValueError(f"levels have different prior counts: {self.min_sizes}")
        return counts.pop()

    def to_dict(self) -> dict:
        return {
            "type": "retinaface_priors",
            "min_sizes": [list(s) for s in self.min_sizes],
            "steps": list(self.steps),
            "variances": list(self.variances),
            "clip": self.clip,
            "order": "level -> row -> column -> min_size",
            "layout": "cx,cy,w,h",
            "normalized": True,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        """Inverse of :meth:`to_dict` (extra descriptive keys are ignored)."""
        return cls(tuple(tuple(s) for s in d["min_sizes"]), tuple(d["steps"]), tuple(d["variances"]), bool(d.get("clip", False)))


@dataclass(frozen=True)
class YoloAnchorConfig:
    """YOLO grid anchors: per level a stride (pixels) and anchor sizes ``(w, h)`` in input pixels.

    Rows of a decoded output are ordered level -> row -> column -> anchor.
    """

    anchors: tuple[tuple[tuple[float, float], ...], ...]
    strides: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.anchors) != len(self.strides):
            raise ValueError(f"anchors has {len(self.anchors)} levels but strides has {len(self.strides)}")
        if len({len(level) for level in self.anchors}) != 1:
            raise ValueError(f"levels have different anchor counts: {self.anchors}")

    @property
    def anchors_per_location(self) -> int:
        return len(self.anchors[0])

    def to_dict(self) -> dict:
        return {
            "type": "yolo_grid_anchors",
            "anchors_wh": [[list(a) for a in level] for level in self.anchors],
            "strides": list(self.strides),
            "order": "level -> row -> column -> anchor",
        }

    @classmethod
    def from_dict(cls, d: dict) -> "YoloAnchorConfig":
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(tuple(tuple(a) for a in level) for level in d["anchors_wh"]), tuple(d["strides"]))


@dataclass(frozen=True)
class SsdAnchorConfig:
    """MediaPipe's SSD anchors (``SsdAnchorsCalculator`` with ``fixed_anchor_size: true``).

    One layer per entry of ``strides``; consecutive layers with the same stride share one feature map
    of ``ceil(H / stride) x ceil(W / stride)`` cells. Each layer puts ``len(aspect_ratios)`` anchors in
    a cell, plus one when ``interpolated_scale_aspect_ratio > 0``. An anchor is the cell centre
    ``((col + offset) / cols, (row + offset) / rows)`` with width = height = 1 (fixed size: the network
    regresses sizes in input pixels). Rows are ordered stride group -> row -> column -> anchor.
    ``min_scale``/``max_scale`` are the calculator's anchor scales, unused by its fixed-size anchors; training
    matches faces to the anchor slots by them (:func:`mobilekit.blazeface_decode.ssd_anchor_scales`).
    """

    strides: tuple[int, ...]
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    anchor_offset: float = 0.5
    min_scale: float = 0.1484375  # face_detection_{short,full}_range.pbtxt
    max_scale: float = 0.75

    def __post_init__(self) -> None:
        if not self.strides or min(self.strides) < 1:
            raise ValueError(f"SSD anchor strides must be positive, got {self.strides}")

    @property
    def anchors_per_layer(self) -> int:
        return len(self.aspect_ratios) + (1 if self.interpolated_scale_aspect_ratio > 0 else 0)

    def to_dict(self) -> dict:
        return {
            "type": "mediapipe_ssd_anchors",
            "strides": list(self.strides),
            "aspect_ratios": list(self.aspect_ratios),
            "interpolated_scale_aspect_ratio": self.interpolated_scale_aspect_ratio,
            "anchor_offset": self.anchor_offset,
            "min_scale": self.min_scale,
            "max_scale": self.max_scale,
            "fixed_anchor_size": True,
            "order": "stride group -> row -> column -> anchor",
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SsdAnchorConfig":
        """Inverse of :meth:`to_dict`."""
        scales = {k: float(d[k]) for k in ("min_scale", "max_scale") if k in d}  # absent in sidecars written before training
        return cls(tuple(d["strides"]), tuple(d["aspect_ratios"]), float(d["interpolated_scale_aspect_ratio"]), float(d["anchor_offset"]), **scales)


@dataclass(frozen=True)
class DeployConfig:
    """What a model expects as input and how its outputs become detections.

    Every mobilekit model takes raw RGB pixels 0-255 (float, NCHW in PyTorch); ``channel_order``,
    ``mean`` and ``std`` describe the normalisation the network applies internally
    (``(pixel[channel_order] - mean) / std``).
    """

    name: str
    input_size: tuple[int, int] = (640, 640)  # (H, W) default export size
    channel_order: str = "BGR"
    mean: tuple[float, float, float] = (104.0, 117.0, 123.0)  # in channel_order
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    priors: PriorConfig = field(default_factory=PriorConfig)
    output_names: tuple[str, ...] = ("loc", "conf", "landmarks")
    decoder: str = "retinaface"
    resize: str = "stretch"  # how an image is brought to a fixed input size: stretch | letterbox
    pad_value: float = 0.0
    num_landmarks: int = 5
    score_threshold: float = 0.5  # default for apps and drawings
    nms_iou: float = 0.4
    max_stride: int = 32
    yolo_anchors: YoloAnchorConfig | None = None  # grid anchors of decoder "yolo"
    ssd_anchors: SsdAnchorConfig | None = None  # MediaPipe anchors of decoder "blazeface"
    int8_keep_float: tuple[str, ...] = ()  # layers int8 exports keep in float by default (see converters.selective_int8)

    @property
    def anchor_field(self) -> str:
        """The one anchor field this model's head uses: ``yolo_anchors``, ``ssd_anchors``, or ``priors``
        (RetinaFace-style, the default every config carries) when neither is set."""
        own = [name for name in ("yolo_anchors", "ssd_anchors") if getattr(self, name) is not None]
        if len(own) > 1:
            raise ValueError(f"{self.name} sets both yolo_anchors and ssd_anchors")
        return own[0] if own else "priors"

    def to_dict(self) -> dict:
        """JSON-ready; of ``priors``, ``yolo_anchors`` and ``ssd_anchors`` only :attr:`anchor_field` is written."""
        d = asdict(self)
        for name in ("priors", "yolo_anchors", "ssd_anchors"):
            del d[name]
        d[self.anchor_field] = getattr(self, self.anchor_field).to_dict()
        d["input_size"] = list(self.input_size)
        d["output_names"] = list(self.output_names)
        d["int8_keep_float"] = list(self.int8_keep_float)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DeployConfig":
        """Inverse of :meth:`to_dict`, e.g. for the ``deploy`` block of an export sidecar (older sidecars,
        which wrote every anchor field, load too)."""
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("input_size", "mean", "std", "output_names", "int8_keep_float"):
            if key in fields:
                fields[key] = tuple(fields[key])
        fields["priors"] = PriorConfig.from_dict(d["priors"]) if d.get("priors") else PriorConfig()
        fields["yolo_anchors"] = YoloAnchorConfig.from_dict(d["yolo_anchors"]) if d.get("yolo_anchors") else None
        fields["ssd_anchors"] = SsdAnchorConfig.from_dict(d["ssd_anchors"]) if d.get("ssd_anchors") else None
        return cls(**fields)


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
