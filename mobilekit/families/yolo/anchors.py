"""YOLOv5-Face grid anchors: their description (grid sizes and decode: :mod:`mobilekit.families.yolo.decode`)."""

from __future__ import annotations

from dataclasses import dataclass


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
