"""RetinaFace's prior boxes: their description (:class:`PriorConfig`) and the single implementation used
by training, decoding, export metadata and Flutter."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


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


def feature_map_sizes(cfg: PriorConfig, image_size: tuple[int, int]) -> list[tuple[int, int]]:
    """``(rows, cols)`` per level: ``ceil(H / step) x ceil(W / step)``."""
    height, width = image_size
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {image_size}")
    return [(math.ceil(height / s), math.ceil(width / s)) for s in cfg.steps]


def num_priors(cfg: PriorConfig, image_size: tuple[int, int]) -> int:
    return sum(r * c * len(sizes) for (r, c), sizes in zip(feature_map_sizes(cfg, image_size), cfg.min_sizes))


def prior_boxes(cfg: PriorConfig, image_size: tuple[int, int]) -> np.ndarray:
    """Priors as float32 ``[N, 4]`` (cx, cy, w, h), normalised by the image width/height.

    Computed in float64 and rounded once, so every caller (and every platform) gets the same bits.
    """
    height, width = image_size
    levels = []
    for (rows, cols), step, sizes in zip(feature_map_sizes(cfg, image_size), cfg.steps, cfg.min_sizes):
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) * step / height, (np.arange(cols) + 0.5) * step / width, indexing="ij")
        n_sizes = len(sizes)
        level = np.empty((rows, cols, n_sizes, 4), dtype=np.float64)
        level[..., 0] = cx[:, :, None]
        level[..., 1] = cy[:, :, None]
        level[..., 2] = np.asarray(sizes, dtype=np.float64) / width
        level[..., 3] = np.asarray(sizes, dtype=np.float64) / height
        levels.append(level.reshape(-1, 4))
    priors = np.concatenate(levels, axis=0)
    if cfg.clip:
        priors = np.clip(priors, 0.0, 1.0)
    return priors.astype(np.float32)


def prior_boxes_torch(cfg: PriorConfig, image_size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """The same priors as :func:`prior_boxes`, as a torch tensor (bit-identical)."""
    return torch.from_numpy(prior_boxes(cfg, image_size)).to(device)
