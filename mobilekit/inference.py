"""Running a PyTorch detector on images: model loading and ``detect_image``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mobilekit.checkpoint import load_weights
from mobilekit.errors import MobilekitError
from mobilekit.image_io import resize_to_input, to_nchw
from mobilekit.models import FaceDetector, create_model, released_weights
from mobilekit.families import decode_outputs, family_of
from mobilekit.detections import Detections, PostprocessConfig


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without it is an error, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MobilekitError(f"--device {device} was requested but torch.cuda.is_available() is False (use --device cpu or auto)")
    return dev


def load_model(name: str, weights: str | Path | None = None, device: str | torch.device = "cpu") -> FaceDetector:
    """Build ``name``, load ``weights`` strictly (None: the model's released weights where mobilekit ships
    them, :func:`~mobilekit.models.registry.released_weights`; else it stays randomly initialised), eval mode,
    on ``device``."""
    model = create_model(name)
    if weights is None:
        weights = released_weights(name)
    if weights is not None:
        load_weights(model, weights)
    return model.eval().to(device)


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
    post: PostprocessConfig | None = None,
) -> Detections:
    """Faces in an RGB uint8 image, in that image's pixels (NumPy arrays, sorted by score); ``post``
    defaults to the model family's evaluation settings; ``imgsz`` None keeps the image's size, or takes the
    model's input size where its family decodes only at that size."""
    deploy = model.deploy
    if imgsz is None and family_of(deploy).native_input_only:
        imgsz = deploy.input_size
    resized, transform = resize_to_input(image, imgsz, deploy.resize, deploy.pad_value)
    outputs = run_model(model, to_nchw(resized))
    single = {k: v[0] for k, v in outputs.items()}
    dets = decode_outputs(deploy, single, resized.shape[:2], post).numpy()
    return Detections(transform.to_image(dets.boxes), dets.scores, transform.to_image(dets.landmarks))
