"""Prior boxes: the single implementation used by training, decoding, export metadata and Flutter."""

from __future__ import annotations

import math

import numpy as np
import torch

from mobilekit.config import PriorConfig


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
