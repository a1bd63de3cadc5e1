"""Calibration and sample inputs, preprocessed exactly as at inference (``resize_to_input``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilekit.config import DeployConfig
from mobilekit.errors import MobilekitError
from mobilekit.image_io import list_images, read_image, resize_to_input


class CalibrationError(MobilekitError):
    """A calibration folder that cannot be used."""


def calibration_paths(folder: str | Path, count: int = 200) -> list[Path]:
    """The first ``count`` images of ``folder`` (sorted): the photos an int8 file is calibrated on."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"calibration folder not found: {folder}")
    if count < 1:
        raise CalibrationError(f"--calib-count must be >= 1, got {count}")
    paths = list_images(folder)[:count]
    if not paths:
        raise CalibrationError(f"calibration folder {folder} contains no images")
    return paths


def load_calibration_images(paths: list[Path], deploy: DeployConfig, input_hw: tuple[int, int]) -> np.ndarray:
    """``paths`` as raw RGB 0-255 float32 ``[N, H, W, 3]`` (the TFLite input contract)."""
    images = [resize_to_input(read_image(p), input_hw, deploy.resize, deploy.pad_value)[0] for p in paths]
    return np.stack(images).astype(np.float32)


def synthetic_sample(input_hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A deterministic smooth RGB 0-255 image ``[1, H, W, 3]`` for checks when no real image is given."""
    height, width = input_hw
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(max(1, height // 16), max(1, width // 16), 3)).astype(np.float32)
    import cv2

    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)[None]
