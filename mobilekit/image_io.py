"""Reading images and bringing them to a model's input: one place for resize/letterbox and its undo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

try:
    import simplejpeg
except ImportError:  # a `pip install --no-deps` environment (the GPU device check): OpenCV decodes everything
    simplejpeg = None

from mobilekit.errors import MobilekitError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
JPEG_MAGIC = b"\xff\xd8\xff"


class ImageError(MobilekitError):
    """An image file that cannot be used, with the file named."""


def read_image(path: str | Path) -> np.ndarray:
    """Read ``path`` as RGB uint8 ``[H, W, 3]``; grayscale, RGBA and 16-bit images are converted.

    JPEGs are decoded by libjpeg-turbo through simplejpeg straight to RGB: the same pixels as OpenCV's
    decoder (the same library and IDCT), about 20 % faster and without the BGR->RGB pass, which matters
    where decoding is most of a training sample's CPU time. Other formats, and JPEGs simplejpeg
    declines (CMYK), go through OpenCV.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    if simplejpeg is not None and data[:3].tobytes() == JPEG_MAGIC:
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            pass
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageError(f"not a readable image: {path}")
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {image.dtype} in {path}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageError(f"unsupported channel count {channels} in {path}")


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"image folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass(frozen=True)
class InputTransform:
    """How image pixels map to model-input pixels: ``input = image * scale + pad``."""

    scale_x: float = 1.0
    scale_y: float = 1.0
    pad_x: float = 0.0
    pad_y: float = 0.0

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Undo the transform on ``[..., 2k]`` interleaved x, y coordinates."""
        xy = xy.astype(np.float32, copy=True)
        if (self.scale_x, self.scale_y, self.pad_x, self.pad_y) == (1.0, 1.0, 0.0, 0.0):
            return xy
        xy[..., 0::2] = (xy[..., 0::2] - self.pad_x) / self.scale_x
        xy[..., 1::2] = (xy[..., 1::2] - self.pad_y) / self.scale_y
        return xy


def resize_to_input(
    image: np.ndarray, size: tuple[int, int] | None, mode: str = "stretch", pad_value: float = 0.0
) -> tuple[np.ndarray, InputTransform]:
    """Bring an RGB uint8 image to ``size`` (H, W) by stretching, letterboxing (centred) or MediaPipe's
    letterbox (``letterbox_mediapipe``: :func:`mediapipe_letterbox`).

    ``size=None`` keeps the image as it is. Returns the resized uint8 image and its transform.
    """
    h, w = image.shape[:2]
    if size is None or tuple(size) == (h, w):
        return image, InputTransform()
    out_h, out_w = size
    if mode == "stretch":
        resized = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        return resized, InputTransform(out_w / w, out_h / h)
    if mode == "letterbox":
        scale = min(out_h / h, out_w / w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        pad_x, pad_y = (out_w - new_w) // 2, (out_h - new_h) // 2
        canvas = np.full((out_h, out_w, 3), pad_value, dtype=np.uint8)
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
        return canvas, InputTransform(new_w / w, new_h / h, pad_x, pad_y)
    if mode == "letterbox_mediapipe":
        return mediapipe_letterbox(image, (out_h, out_w), pad_value)
    raise ValueError(f"unknown resize mode {mode!r} (stretch, letterbox or letterbox_mediapipe)")


def mediapipe_letterbox(image: np.ndarray, size: tuple[int, int], pad_value: float = 0.0) -> tuple[np.ndarray, InputTransform]:
    """MediaPipe's ``ImageToTensorCalculator`` with ``keep_aspect_ratio`` on the whole image: the centred
    region of the input's aspect ratio that holds the image, sampled by ``cv2.warpPerspective``
    (bilinear, constant border) from its corners to the tensor's corners. Tensor pixel ``x`` samples the
    image at ``(x - pad) / scale`` (no half-pixel shift, unlike ``cv2.resize``) and the pads are fractional."""
    h, w = image.shape[:2]
    out_h, out_w = size
    scale = min(out_h / h, out_w / w)
    roi_w, roi_h = out_w / scale, out_h / scale  # the region of the input's aspect ratio around the image
    corners = cv2.boxPoints(((w / 2, h / 2), (roi_w, roi_h), 0.0))  # bottom-left, top-left, top-right, bottom-right
    target = np.array([[0, out_h], [0, 0], [out_w, 0], [out_w, out_h]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    warped = cv2.warpPerspective(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(pad_value,) * 3)
    return warped, InputTransform(scale, scale, (out_w - w * scale) / 2, (out_h - h * scale) / 2)


def to_nchw(image: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> float32 ``[1, 3, H, W]`` in 0-255: the model input contract."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None].astype(np.float32))
