"""RetinaFace / WIDER FACE ``label.txt``: read and write face annotations.

Layout: a ``# relative/path.jpg`` line per image (relative to the ``images/`` folder beside the
label file), then one line per face, either 20 numbers
``x y w h  l0x l0y f0 ... l4x l4y f4  blur`` (landmarks ``-1 -1 -1`` = no landmarks) or 4 numbers
``x y w h`` (WIDER FACE val style, no landmarks). Landmark order: left eye, right eye, nose,
left mouth corner, right mouth corner (left/right as seen in the image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobilekit.atomic import write_text_atomic
from mobilekit.errors import MobilekitError

NUM_LANDMARKS = 5
FULL_LINE_VALUES = 4 + 3 * NUM_LANDMARKS + 1
BOX_ONLY_VALUES = 4


class LabelError(MobilekitError):
    """A label file that cannot be parsed; the message names the file and line."""


@dataclass
class Face:
    """One face in image pixels: ``box_xywh`` (top-left x, y, width, height), ``landmarks`` [5, 2] or None."""

    box_xywh: tuple[float, float, float, float]
    landmarks: np.ndarray | None = None
    blur: float = 0.0


@dataclass
class LabeledImage:
    """An image path relative to the split's ``images/`` folder and its faces."""

    path: str
    faces: list[Face] = field(default_factory=list)


def _parse_face(values: list[float], where: str) -> Face:
    if any(not math.isfinite(v) for v in values):
        raise LabelError(f"{where}: non-finite number in face line")
    x, y, w, h = values[:4]
    if w < 0 or h < 0:
        raise LabelError(f"{where}: negative box size w={w:g} h={h:g}")
    if len(values) == BOX_ONLY_VALUES:
        return Face((x, y, w, h))
    points = np.asarray(values[4:19], dtype=np.float32).reshape(NUM_LANDMARKS, 3)
    # Pytorch_Retinaface's rule: a negative first landmark x means "no landmarks" (written -1 -1 -1).
    landmarks = None if points[0, 0] < 0 else np.ascontiguousarray(points[:, :2])
    return Face((x, y, w, h), landmarks, values[19])


def _image_path(header: str) -> str:
    """The path of a ``# path`` line; trailing numbers (``# path width height`` variants) are ignored."""
    tokens = header.split()
    if len(tokens) > 1 and all(_is_number(t) for t in tokens[1:]):
        return tokens[0]
    return header.strip()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_labels(label_file: str | Path) -> list[LabeledImage]:
    """Parse ``label_file``; any malformed line raises :class:`LabelError` naming file and line."""
    label_file = Path(label_file)
    if not label_file.is_file():
        raise LabelError(f"label file not found: {label_file}")
    items: list[LabeledImage] = []
    with open(label_file, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            where = f"{label_file}:{number}"
            if not line:
                continue
            if line.startswith("#"):
                path = _image_path(line[1:])
                if not path:
                    raise LabelError(f"{where}: image line '#' without a path")
                items.append(LabeledImage(path))
                continue
            if not items:
                raise LabelError(f"{where}: face line before the first '# image/path' line")
            try:
                values = [float(v) for v in line.split()]
            except ValueError:
                raise LabelError(f"{where}: expected numbers, got {line[:60]!r}") from None
            if len(values) not in (FULL_LINE_VALUES, BOX_ONLY_VALUES):
                raise LabelError(
                    f"{where}: expected {FULL_LINE_VALUES} numbers (box, 5 landmarks with flags, blur) "
                    f"or {BOX_ONLY_VALUES} (box only), got {len(values)}"
                )
            items[-1].faces.append(_parse_face(values, where))
    return items


def _format_face(face: Face) -> str:
    numbers = [float(v) for v in face.box_xywh]
    if face.landmarks is None:
        numbers += [-1.0] * (3 * NUM_LANDMARKS)
    else:
        points = np.asarray(face.landmarks, dtype=np.float64).reshape(NUM_LANDMARKS, 2)
        for px, py in points:
            numbers += [float(px), float(py), 0.0]
    numbers.append(float(face.blur))
    return " ".join(f"{v:.6g}" for v in numbers)


def write_labels(label_file: str | Path, items: list[LabeledImage]) -> None:
    """Write ``items`` to ``label_file`` atomically (temporary file in the same folder, then rename).

    Landmarks are written with the visible flag ``0.0``; faces without landmarks get ``-1 -1 -1``.
    """
    label_file = Path(label_file)
    label_file.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for item in items:
        if not item.path or "\n" in item.path:
            raise LabelError(f"{label_file}: invalid image path {item.path!r}")
        lines.append(f"# {item.path}")
        lines.extend(_format_face(face) for face in item.faces)
    write_text_atomic(label_file, "\n".join(lines) + ("\n" if lines else ""))
