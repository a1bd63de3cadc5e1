"""MediaPipe's SSD anchors: their description (the anchors themselves: :func:`mobilekit.families.blazeface.decode.ssd_anchors`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SsdAnchorConfig:
    """MediaPipe's SSD anchors (``SsdAnchorsCalculator`` with ``fixed_anchor_size: true``).

    One layer per entry of ``strides``; consecutive layers with the same stride share one feature map
    of ``ceil(H / stride) x ceil(W / stride)`` cells. Each layer puts ``len(aspect_ratios)`` anchors in
    a cell, plus one when ``interpolated_scale_aspect_ratio > 0``. An anchor is the cell centre
    ``((col + offset) / cols, (row + offset) / rows)`` with width = height = 1 (fixed size: the network
    regresses sizes in input pixels). Rows are ordered stride group -> row -> column -> anchor.
    ``min_scale``/``max_scale`` are the calculator's anchor scales, unused by its fixed-size anchors; training
    matches faces to the anchor slots by them (:func:`mobilekit.families.blazeface.decode.ssd_anchor_scales`).
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
