"""Training augmentation for face detection, vectorised NumPy + OpenCV.

``retinaface_augment`` follows Pytorch_Retinaface's ``data_augment.preproc``: random square crop,
pad to square when no crop fits, mirror with left/right landmark swap, resize to S x S with a
random interpolation, photometric distortion. ``letterbox_augment`` is the YOLO-style variant:
random scale jitter, random placement on an S x S letterbox canvas, mirror, photometric distortion.
Photometric distortion runs after the resize (it is per pixel, so the order does not change what
it does, only its cost).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CROP_SCALES = (0.3, 0.45, 0.6, 0.8, 1.0)
CROP_TRIES = 250
INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)
WARP_INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_NEAREST)  # Lanczos warps cost ~20 ms
MIRROR_ORDER = np.array([1, 0, 2, 4, 3])  # left eye <-> right eye, left mouth <-> right mouth
RETINAFACE_PAD_RGB = (123, 117, 104)  # the reference pads with its BGR mean (104, 117, 123)


@dataclass
class FaceArrays:
    """Faces of one image in pixels: ``boxes`` [K, 4] xyxy, ``landmarks`` [K, 5, 2], ``has_landmarks`` [K] (1 / -1)."""

    boxes: np.ndarray
    landmarks: np.ndarray
    has_landmarks: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, mask: np.ndarray) -> "FaceArrays":
        return FaceArrays(self.boxes[mask], self.landmarks[mask], self.has_landmarks[mask])

    def scaled(self, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> "FaceArrays":
        """Coordinates mapped by ``x * sx + dx``, ``y * sy + dy``."""
        scale, shift = np.array([sx, sy], np.float32), np.array([dx, dy], np.float32)
        boxes = (self.boxes.reshape(-1, 2, 2) * scale + shift).reshape(-1, 4)
        return FaceArrays(boxes, self.landmarks * scale + shift, self.has_landmarks)

    def keep_in_window(self, x0: float, y0: float, x1: float, y1: float, min_side: float = 0.0) -> "FaceArrays":
        """Faces whose box centre lies inside the window, boxes and landmarks clipped to it and
        shifted to its origin; faces whose clipped box side is not above ``min_side`` are dropped."""
        centres = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2
        inside = np.all((centres > (x0, y0)) & (centres < (x1, y1)), axis=1)
        kept = self.select(inside)
        low, high = np.array([x0, y0], np.float32), np.array([x1, y1], np.float32)
        boxes = np.clip(kept.boxes.reshape(-1, 2, 2), low, high) - low
        landmarks = np.clip(kept.landmarks, low, high) - low
        out = FaceArrays(boxes.reshape(-1, 4), landmarks, kept.has_landmarks)
        sides = np.minimum(out.boxes[:, 2] - out.boxes[:, 0], out.boxes[:, 3] - out.boxes[:, 1])
        return out.select(sides > min_side)


def choose_crop(
    faces: FaceArrays, width: int, height: int, out_size: int, rng: np.random.Generator, min_face_px: float = 0.0
) -> tuple[tuple[int, int, int], FaceArrays] | None:
    """A random square window ``(left, top, side)``, a ``CROP_SCALES`` fraction of the short side,
    that fully contains at least one face, and the faces whose centre is inside it (clipped, in
    window pixels). ``min_face_px`` is measured after the window is resized to ``out_size``.
    None when no window fits within ``CROP_TRIES``."""
    if len(faces) == 0:
        return None
    # all candidate windows at once, tried in order like the reference's loop
    sides = (np.asarray(CROP_SCALES)[rng.integers(len(CROP_SCALES), size=CROP_TRIES)] * min(width, height)).astype(int)
    lefts = (rng.random(CROP_TRIES) * (width - sides)).astype(int)
    tops = (rng.random(CROP_TRIES) * (height - sides)).astype(int)
    b = faces.boxes[None]
    fully_inside = (
        (b[..., 0] >= lefts[:, None]) & (b[..., 1] >= tops[:, None])
        & (b[..., 2] <= (lefts + sides)[:, None]) & (b[..., 3] <= (tops + sides)[:, None])
    )
    for t in np.flatnonzero(fully_inside.any(axis=1) & (sides > 0)):
        left, top, side = int(lefts[t]), int(tops[t]), int(sides[t])
        kept = faces.keep_in_window(left, top, left + side, top + side, min_side=min_face_px * side / out_size)
        if len(kept):
            return (left, top, side), kept
    return None


def pad_to_square(image: np.ndarray, fill: tuple[int, int, int]) -> np.ndarray:
    """The image at the top-left of a square canvas of its long side (coordinates unchanged)."""
    height, width = image.shape[:2]
    if height == width:
        return image
    side = max(height, width)
    canvas = np.empty((side, side, 3), dtype=image.dtype)
    canvas[:] = fill
    canvas[:height, :width] = image
    return canvas


def mirror(image: np.ndarray, faces: FaceArrays) -> tuple[np.ndarray, FaceArrays]:
    """Horizontal flip: ``x -> width - x``; the left/right landmark pairs swap so that landmark 0
    stays the eye on the image's left."""
    width = image.shape[1]
    boxes = faces.boxes.copy()
    boxes[:, 0], boxes[:, 2] = width - faces.boxes[:, 2], width - faces.boxes[:, 0]
    landmarks = faces.landmarks[:, MIRROR_ORDER].copy()
    landmarks[..., 0] = width - landmarks[..., 0]
    return cv2.flip(image, 1), FaceArrays(boxes, landmarks, faces.has_landmarks)  # 40x NumPy's reversed-stride copy


def photometric_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The reference's random brightness (+-32), contrast (x0.5-1.5, before or after the colour
    step), saturation (x0.5-1.5) and hue (+-18 of 180), each with probability 1/2. Lookup tables
    keep it cheap."""
    levels = np.arange(256, dtype=np.float32)
    contrast_first = bool(rng.integers(2))
    brightness = rng.uniform(-32, 32) if rng.integers(2) else None
    contrast_a = rng.uniform(0.5, 1.5) if contrast_first and rng.integers(2) else None
    saturation = rng.uniform(0.5, 1.5) if rng.integers(2) else None
    hue = int(rng.integers(-18, 19)) if rng.integers(2) else None
    contrast_b = rng.uniform(0.5, 1.5) if not contrast_first and rng.integers(2) else None

    lut = levels
    if brightness is not None:
        lut = np.clip(lut + brightness, 0, 255)
    if contrast_a is not None:
        lut = np.clip(lut * contrast_a, 0, 255)
    if lut is not levels:
        image = cv2.LUT(image, lut.astype(np.uint8))
    if saturation is not None or hue is not None:
        hue_lut = (levels + (hue or 0)) % 180 if hue is not None else levels
        sat_lut = np.clip(levels * saturation, 0, 255) if saturation is not None else levels
        hsv_lut = np.stack([hue_lut, sat_lut, levels], axis=-1).astype(np.uint8)[:, None, :]
        hsv = cv2.LUT(cv2.cvtColor(image, cv2.COLOR_RGB2HSV), hsv_lut)
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if contrast_b is not None:
        image = cv2.LUT(image, np.clip(levels * contrast_b, 0, 255).astype(np.uint8))
    return image


def _random_interpolation(rng: np.random.Generator, choices: tuple[int, ...] = INTERPOLATIONS) -> int:
    return choices[rng.integers(len(choices))]


def retinaface_augment(
    image: np.ndarray, faces: FaceArrays, size: int, rng: np.random.Generator, min_face_px: float = 0.0
) -> tuple[np.ndarray, FaceArrays]:
    """RGB uint8 image of any size -> ``size`` x ``size`` augmented image and its faces in its pixels."""
    crop = choose_crop(faces, image.shape[1], image.shape[0], size, rng, min_face_px)
    if crop is None:
        image = pad_to_square(image, RETINAFACE_PAD_RGB)
    else:
        (left, top, side), faces = crop
        image = image[top : top + side, left : left + side]
    if rng.integers(2):
        image, faces = mirror(image, faces)
    side = image.shape[0]
    image = cv2.resize(image, (size, size), interpolation=_random_interpolation(rng))
    return photometric_distort(image, rng), faces.scaled(size / side, size / side)


def letterbox_augment(
    image: np.ndarray,
    faces: FaceArrays,
    size: int,
    rng: np.random.Generator,
    scale_jitter: float = 0.5,
    pad_value: float = 0.0,
    min_face_px: float = 0.0,
) -> tuple[np.ndarray, FaceArrays]:
    """Letterbox scale times ``uniform(1 - scale_jitter, 1 + scale_jitter)``, placed at a random
    offset on a ``size`` x ``size`` canvas (cropping when larger), then mirror and photometric."""
    height, width = image.shape[:2]
    scale = size / max(height, width) * rng.uniform(1 - scale_jitter, 1 + scale_jitter)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    ox = int(rng.integers(min(0, size - new_w), max(0, size - new_w) + 1))
    oy = int(rng.integers(min(0, size - new_h), max(0, size - new_h) + 1))
    if scale < 1:  # shrink: resize (anti-aliased by INTER_AREA) and paste, cropping what overhangs
        resized = cv2.resize(image, (new_w, new_h), interpolation=_random_interpolation(rng))
        canvas = np.full((size, size, 3), pad_value, dtype=np.uint8)
        src_x, src_y, dst_x, dst_y = max(0, -ox), max(0, -oy), max(0, ox), max(0, oy)
        w, h = min(new_w - src_x, size - dst_x), min(new_h - src_y, size - dst_y)
        canvas[dst_y : dst_y + h, dst_x : dst_x + w] = resized[src_y : src_y + h, src_x : src_x + w]
        sx, sy = new_w / width, new_h / height
    else:  # enlarge: one warp computes only the visible part; pixel edges map by x * scale + offset
        shift = 0.5 * scale - 0.5
        matrix = np.array([[scale, 0, ox + shift], [0, scale, oy + shift]], np.float32)
        interpolation = _random_interpolation(rng, WARP_INTERPOLATIONS)
        canvas = cv2.warpAffine(image, matrix, (size, size), flags=interpolation, borderValue=(pad_value,) * 3)
        sx = sy = scale
    placed = faces.scaled(sx, sy, ox, oy).keep_in_window(0, 0, size, size, min_face_px)
    if rng.integers(2):
        canvas, placed = mirror(canvas, placed)
    return photometric_distort(canvas, rng), placed
