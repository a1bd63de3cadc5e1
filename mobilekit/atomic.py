"""Atomic file writes: write next to the target, then rename: a reader never sees a half-written file
and an interrupted run leaves the previous file (or none) in place."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator


def partial_path(path: Path) -> Path:
    """The temporary name a file is written under: it never ends in ``.onnx``/``.tflite``/``.json``."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (its folder created); rename it to ``path`` when the
    block succeeds and wrote something, remove it otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RuntimeError(f"nothing was written for {path}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: object) -> Path:
    """``data`` as indented JSON (NumPy scalars and arrays become numbers and lists)."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
