"""A procedural face dataset in the RetinaFace layout: the embedded default for demos and tests.

Faces are skin-toned ellipses with eyes, nose and mouth (the 5 landmarks: left eye, right eye,
nose tip, left and right mouth corner, left/right as seen in the image), at widths from 10 px to
half the image, with roll, a yaw-like squeeze, hair, occluders and blur, on cluttered backgrounds
that also hold face-like distractors which are NOT faces (featureless heads with or without hair,
heads with only a mouth or only a nose, eye pairs on non-skin blobs). Every image comes from its
own ``(seed, index)`` random stream, so a dataset is reproducible and any image can be regenerated
alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from mobilekit.data.labels import Face, LabeledImage, write_labels
from mobilekit.errors import MobilekitError

MIN_FACE_PX = 10.0
MAX_FACE_FRACTION = 0.5  # of the image's short side
NO_LANDMARK_FRACTION = 0.1
SIZE_SKEW = 0.7  # < 1 leans the log-size distribution to larger faces
ASPECTS = (1.0, 0.75, 4 / 3)  # height / width
SHIFT = 4  # cv2 sub-pixel drawing bits
SCALE = 1 << SHIFT
AA = cv2.LINE_AA
SKIN_TONES = np.array(
    [(255, 224, 196), (241, 194, 160), (234, 192, 134), (224, 172, 105), (198, 134, 66),
     (170, 110, 70), (141, 85, 36), (110, 70, 40), (92, 56, 30), (255, 205, 148)],
    dtype=np.float32,
)
HAIR_COLOURS = np.array([(20, 15, 10), (60, 40, 25), (110, 75, 40), (200, 170, 110), (150, 60, 30), (90, 90, 90)])


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _skin(rng: np.random.Generator) -> tuple[int, int, int]:
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.8, 1.15) + rng.normal(0, 8, 3)
    return tuple(int(v) for v in np.clip(tone, 0, 255))


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]) * SCALE)), int(round(float(xy[1]) * SCALE))


def _ellipse(img, centre, axes, angle_deg, colour, thickness=-1) -> None:
    ax = (max(1, int(round(axes[0] * SCALE))), max(1, int(round(axes[1] * SCALE))))
    cv2.ellipse(img, _pt(centre), ax, float(angle_deg), 0, 360, colour, thickness, AA, SHIFT)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A colour gradient, low-frequency texture and random shapes."""
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    t = np.linspace(0.0, 1.0, width if rng.integers(2) else height, dtype=np.float32)[:, None]
    ramp = c0 + (c1 - c0) * t
    img = np.broadcast_to(ramp[None] if ramp.shape[0] == width else ramp[:, None], (height, width, 3))
    cells = rng.uniform(-1, 1, (rng.integers(3, 12), rng.integers(3, 12), 3)).astype(np.float32)
    texture = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC) * rng.uniform(10, 60)
    img = np.clip(img + texture, 0, 255).astype(np.uint8)
    short = min(height, width)
    for _ in range(rng.integers(5, 25)):
        kind = rng.integers(4)
        colour = _colour(rng)
        thickness = -1 if rng.random() < 0.5 else int(rng.integers(1, 5))
        p0 = rng.uniform((0, 0), (width, height))
        extent = short * rng.uniform(0.03, 0.4)
        if kind == 0:
            p1 = p0 + rng.uniform(-extent, extent, 2)
            cv2.rectangle(img, _pt(p0), _pt(p1), colour, thickness, AA, SHIFT)
        elif kind == 1:
            _ellipse(img, p0, rng.uniform(0.2, 1.0, 2) * extent / 2, rng.uniform(0, 180), colour, thickness)
        elif kind == 2:
            p1 = p0 + rng.uniform(-extent, extent, 2)
            cv2.line(img, _pt(p0), _pt(p1), colour, max(1, thickness), AA, SHIFT)
        else:
            pts = (p0 + rng.uniform(-extent, extent, (3, 2))) * SCALE
            cv2.fillPoly(img, [pts.astype(np.int32)], colour, AA, SHIFT)
    return img


def _face_size(rng: np.random.Generator, short: int) -> float:
    """Face width from ``MIN_FACE_PX`` to half the short side, log scale, leaning to the larger
    sizes (about 1 face in 10 under 16 px) so that the set is learnable yet has tiny faces."""
    high = max(MIN_FACE_PX * 1.5, short * MAX_FACE_FRACTION)
    return float(MIN_FACE_PX * (high / MIN_FACE_PX) ** (rng.random() ** SIZE_SKEW))


def _draw_face(
    img: np.ndarray, rng: np.random.Generator, centre: np.ndarray, width: float, parts: str
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a face (``parts``: a subset of "hair eyes nose mouth" letters h e n m) and return its
    axis-aligned box (x0, y0, x1, y1) and landmarks [5, 2]."""
    a = width / 2  # half-width of the head ellipse
    b = a * rng.uniform(1.15, 1.4)  # half-height
    roll = rng.uniform(-35, 35) if rng.random() < 0.7 else 0.0
    yaw = rng.uniform(-0.6, 0.6) if rng.random() < 0.6 else 0.0
    a_yawed = a * (1 - 0.15 * abs(yaw))
    skin = _skin(rng)
    theta = math.radians(roll)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], np.float32)

    def to_image(local: np.ndarray) -> np.ndarray:
        return local @ rot.T + centre

    if "h" in parts:
        hair = tuple(int(v) for v in HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))])
        _ellipse(img, to_image(np.array([0.0, -0.12 * b])), (a_yawed * 1.08, b * 0.98), roll, hair)
    _ellipse(img, centre, (a_yawed, b), roll, skin)

    squeeze = 1 - 0.35 * abs(yaw)
    shift = yaw * 0.35 * a
    eye_dx, eye_y = 0.4 * a * squeeze, -0.12 * b * rng.uniform(0.8, 1.2)
    mouth_dx, mouth_y = 0.3 * a * squeeze * rng.uniform(0.8, 1.15), 0.45 * b * rng.uniform(0.9, 1.1)
    nose_local = np.array([shift * 1.5, 0.16 * b])
    local = np.array(
        [[shift - eye_dx, eye_y], [shift + eye_dx, eye_y], nose_local,
         [shift - mouth_dx, mouth_y], [shift + mouth_dx, mouth_y]],
        np.float32,
    )
    landmarks = to_image(local)
    dark = tuple(int(v) for v in rng.integers(0, 60, 3))
    if "e" in parts:
        eye_r = max(0.9, 0.11 * a)
        for k in (0, 1):
            if a > 12:
                _ellipse(img, landmarks[k], (eye_r * 1.7 * squeeze, eye_r), roll, (240, 240, 235))
            _ellipse(img, landmarks[k], (eye_r, eye_r), 0, dark)
            if a > 10 and rng.random() < 0.7:
                brow = to_image(local[k] + np.array([0.0, -0.22 * b]))
                _ellipse(img, brow, (eye_r * 2.0 * squeeze, max(0.6, eye_r * 0.35)), roll, dark)
    if "n" in parts:
        shade = tuple(int(v * 0.75) for v in skin)
        _ellipse(img, landmarks[2], (max(0.8, 0.1 * a * squeeze), max(0.8, 0.14 * b)), roll, shade)
    if "m" in parts:
        lip = tuple(int(v) for v in np.clip(np.array([150, 40, 50]) + rng.normal(0, 25, 3), 0, 255))
        mouth_centre = (landmarks[3] + landmarks[4]) / 2
        _ellipse(img, mouth_centre, (mouth_dx, max(0.8, 0.08 * b * rng.uniform(0.5, 1.8))), roll, lip)

    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    half = np.array([math.hypot(a_yawed * c, b * s), math.hypot(a_yawed * s, b * c)], np.float32)
    return np.concatenate([centre - half, centre + half]), landmarks


def _occlude(img: np.ndarray, rng: np.random.Generator, box: np.ndarray) -> None:
    """Cover a band (up to ~40 %) of the face with a bar or a blob."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    side = rng.integers(4)
    depth = rng.uniform(0.2, 0.45)
    if side == 0:
        p0, p1 = (x0 - 0.1 * w, y1 - depth * h), (x1 + 0.1 * w, y1 + 0.1 * h)
    elif side == 1:
        p0, p1 = (x0 - 0.1 * w, y0 - 0.1 * h), (x1 + 0.1 * w, y0 + depth * h)
    elif side == 2:
        p0, p1 = (x0 - 0.1 * w, y0 - 0.1 * h), (x0 + depth * w, y1 + 0.1 * h)
    else:
        p0, p1 = (x1 - depth * w, y0 - 0.1 * h), (x1 + 0.1 * w, y1 + 0.1 * h)
    colour = _colour(rng)
    if rng.random() < 0.5:
        cv2.rectangle(img, _pt(np.array(p0)), _pt(np.array(p1)), colour, -1, AA, SHIFT)
    else:
        centre = (np.array(p0) + np.array(p1)) / 2
        _ellipse(img, centre, (np.array(p1) - np.array(p0)) / 2, 0, colour)


def _blur_region(img: np.ndarray, box: np.ndarray, sigma: float) -> None:
    height, width = img.shape[:2]
    pad = int(3 * sigma) + 2
    x0, y0 = max(0, int(box[0]) - pad), max(0, int(box[1]) - pad)
    x1, y1 = min(width, int(math.ceil(box[2])) + pad), min(height, int(math.ceil(box[3])) + pad)
    if x1 > x0 and y1 > y0:
        img[y0:y1, x0:x1] = cv2.GaussianBlur(img[y0:y1, x0:x1], (0, 0), sigma)


def _overlaps(box: np.ndarray, boxes: list[np.ndarray], limit: float = 0.15) -> bool:
    """Whether ``box`` covers more than ``limit`` of itself or of any of ``boxes``."""
    for other in boxes:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw > 0 and ih > 0:
            inter = iw * ih
            smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
            if inter > limit * smaller:
                return True
    return False


def _place(rng: np.random.Generator, width_px: float, height: int, width: int, taken: list[np.ndarray]):
    """A centre for a face of ``width_px`` fully inside the image, away from ``taken``; None if none found."""
    half = np.array([width_px * 0.75, width_px * 0.75])  # bound for any roll / aspect
    if np.any(2 * half >= (width, height)):
        return None
    for _ in range(30):
        centre = rng.uniform(half, np.array([width, height]) - half).astype(np.float32)
        if not _overlaps(np.concatenate([centre - half, centre + half]), taken):
            return centre
    return None


def _plan(rng: np.random.Generator, sizes: list[float], height: int, width: int, taken: list[np.ndarray]) -> list:
    """Non-overlapping ``(centre, size)`` spots; a size that does not fit is retried smaller (x0.7)."""
    spots = []
    for size in sizes:
        while size >= MIN_FACE_PX:
            centre = _place(rng, size, height, width, taken)
            if centre is not None:
                taken.append(np.concatenate([centre - size * 0.75, centre + size * 0.75]))
                spots.append((centre, size))
                break
            size *= 0.7
    return spots


DISTRACTOR_PARTS = ("", "h", "m", "hn", "e")  # heads missing features; "e": an eye pair on a non-skin blob


def render_synthetic_image(rng: np.random.Generator, imgsz: int = 640) -> tuple[np.ndarray, list[Face]]:
    """One RGB uint8 image (long side ``imgsz``) and its labelled faces."""
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    width, height = (imgsz, round(imgsz * aspect)) if aspect <= 1 else (round(imgsz / aspect), imgsz)
    short = min(width, height)
    img = _background(rng, height, width)
    taken: list[np.ndarray] = []
    face_spots = _plan(rng, sorted((_face_size(rng, short) for _ in range(rng.integers(1, 7))), reverse=True),
                       height, width, taken)
    distractor_spots = _plan(rng, [_face_size(rng, short) for _ in range(rng.integers(0, 4))], height, width, taken)
    for centre, size in distractor_spots:
        parts = DISTRACTOR_PARTS[rng.integers(len(DISTRACTOR_PARTS))]
        if parts == "e":  # an eye pair on a non-skin blob or ball
            _ellipse(img, centre, (size * 0.5, size * rng.uniform(0.5, 0.8)), rng.uniform(0, 180), _colour(rng))
            for dx in (-0.2, 0.2):
                _ellipse(img, centre + np.array([dx * size, -0.05 * size]), (0.06 * size + 0.5,) * 2, 0, (20, 20, 20))
        else:
            _draw_face(img, rng, centre, size, parts)

    faces: list[Face] = []
    for centre, size in face_spots:
        parts = "henm" if rng.random() < 0.6 else "enm"
        box, landmarks = _draw_face(img, rng, centre, size, parts)
        if rng.random() < 0.15:
            _occlude(img, rng, box)
        blur = 0.0
        if rng.random() < 0.25:
            blur = float(rng.uniform(0.2, 1.0))
            _blur_region(img, box, max(0.5, blur * 0.05 * (box[2] - box[0])))
        has_landmarks = rng.random() >= NO_LANDMARK_FRACTION
        x0, y0, x1, y1 = (float(v) for v in box)
        faces.append(Face((x0, y0, x1 - x0, y1 - y0), landmarks.astype(np.float32) if has_landmarks else None, blur))

    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.0))
    if rng.random() < 0.5:
        noise = rng.normal(0.0, rng.uniform(2, 8), img.shape).astype(np.float32)
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, faces


def make_synthetic_dataset(
    out_dir: str | Path, n_images: int, seed: int = 0, imgsz: int = 640, val_fraction: float = 0.2
) -> Path:
    """Write ``n_images`` synthetic images as ``out_dir/{train,val}/label.txt`` + ``images/``; returns ``out_dir``."""
    if n_images < 1:
        raise MobilekitError(f"--images must be at least 1, got {n_images}")
    if imgsz < 64:
        raise MobilekitError(f"--imgsz must be at least 64, got {imgsz}")
    if not 0.0 <= val_fraction < 1.0:
        raise MobilekitError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out_dir = Path(out_dir)
    n_val = min(n_images - 1, round(n_images * val_fraction)) if val_fraction > 0 else 0
    n_val = max(n_val, 1) if val_fraction > 0 and n_images > 1 else n_val
    splits = {"train": range(n_images - n_val), "val": range(n_images - n_val, n_images)}
    for split, indices in splits.items():
        image_dir = out_dir / split / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        items = []
        for index in indices:
            image, faces = render_synthetic_image(np.random.default_rng([seed, index]), imgsz)
            name = f"{index:06d}.jpg"
            if not cv2.imwrite(str(image_dir / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]):
                raise MobilekitError(f"could not write {image_dir / name}")
            items.append(LabeledImage(name, faces))
        write_labels(out_dir / split / "label.txt", items)
    return out_dir
