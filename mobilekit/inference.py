"""Running a PyTorch detector on images: model loading and ``detect_image``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mobilekit.checkpoint import load_weights
from mobilekit.image_io import resize_to_input, to_nchw
from mobilekit.models import FaceDetector, create_model
from mobilekit.postprocess import Detections, PostprocessConfig, decode_outputs


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without it is an error, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but torch.cuda.is_available() is False")
    return dev


def load_model(name: str, weights: str | Path | None = None, device: str | torch.device = "cpu") -> FaceDetector:
    """Build ``name``, load ``weights`` strictly (if given), eval mode, on ``device``."""
    model = create_model(name)
    if weights is not None:
        load_weights(model, weights)
    return model.eval().to(device)


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


@torch.no_grad()
def run_model(model: FaceDetector, batch: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """Deployment outputs by name for an RGB 0-255 NCHW batch (computed in the model's own dtype)."""
    param = next(model.parameters())
    x = torch.as_tensor(batch, dtype=param.dtype, device=param.device)
    outputs = model.deploy_outputs(model(x))
    return dict(zip(model.deploy.output_names, outputs))


def detect_image(
    model: FaceDetector,
    image: np.ndarray,
    imgsz: tuple[int, int] | None = None,
    post: PostprocessConfig = PostprocessConfig(),
) -> Detections:
    """Faces in an RGB uint8 image, in that image's pixels (NumPy arrays, sorted by score)."""
    deploy = model.deploy
    resized, transform = resize_to_input(image, imgsz, deploy.resize, deploy.pad_value)
    outputs = run_model(model, to_nchw(resized))
    single = {k: v[0] for k, v in outputs.items()}
    dets = decode_outputs(deploy, single, resized.shape[:2], post).numpy()
    return Detections(transform.to_image(dets.boxes), dets.scores, transform.to_image(dets.landmarks))
