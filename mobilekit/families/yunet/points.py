"""YuNet's anchor-free points (MMDetection's ``MlvlPointGenerator`` with offset 0).

Per level ``i`` the feature map is ``ceil(H / s) x ceil(W / s)`` for stride ``s = strides[i]``; each cell
carries one point at ``(col * s, row * s)`` in input pixels. Order: level -> row -> column (output-row order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class PointConfig:
    """The points of a YuNet head: one per cell of each level, ``offset`` cells from the cell's corner."""

    strides: tuple[int, ...] = (8, 16, 32)
    offset: float = 0.0

    def __post_init__(self) -> None:
        if not self.strides or min(self.strides) < 1:
            raise ValueError(f"point strides must be positive, got {self.strides}")

    def to_dict(self) -> dict:
        return {
            "type": "yunet_points",
            "strides": list(self.strides),
            "offset": self.offset,
            "order": "level -> row -> column",
            "layout": "x,y,stride_x,stride_y",
            "normalized": False,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PointConfig":
        """Inverse of :meth:`to_dict` (descriptive keys ignored)."""
        return cls(tuple(int(s) for s in d["strides"]), float(d.get("offset", 0.0)))


def level_sizes(cfg: PointConfig, input_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """``(rows, cols)`` per level: ``ceil(H / stride) x ceil(W / stride)``."""
    height, width = input_hw
    if height < 1 or width < 1:
        raise ValueError(f"input size must be positive, got {input_hw}")
    return [(math.ceil(height / s), math.ceil(width / s)) for s in cfg.strides]


def grid_points(cfg: PointConfig, input_hw: tuple[int, int]) -> np.ndarray:
    """Points ``[N, 4]`` float32 ``(x, y, stride, stride)`` in input pixels, in output-row order."""
    levels = []
    for (rows, cols), stride in zip(level_sizes(cfg, input_hw), cfg.strides):
        y, x = np.meshgrid((np.arange(rows) + cfg.offset) * stride, (np.arange(cols) + cfg.offset) * stride, indexing="ij")
        level = np.empty((rows, cols, 4), dtype=np.float64)
        level[..., 0], level[..., 1], level[..., 2:] = x, y, stride
        levels.append(level.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def grid_points_torch(cfg: PointConfig, input_hw: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`grid_points` as a torch tensor (bit-identical)."""
    return torch.from_numpy(grid_points(cfg, input_hw)).to(device)
