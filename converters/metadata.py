"""Artefact names, atomic writes and the ``*.json`` sidecar written next to every exported file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Iterator

SIDECAR_SCHEMA = "mobilekit.export/1"

INPUT_LAYOUTS = {"onnx": "NCHW", "tflite": "NHWC"}

OUTPUT_MEANINGS = {
    "loc": "box offsets per prior (dx, dy, dw, dh), encoded against the priors with the variances",
    "conf": "class probabilities per prior (softmax over background, face)",
    "landmarks": "5 landmark offsets per prior (x, y interleaved), encoded against the priors",
}


def artefact_stem(model_name: str, input_hw: tuple[int, int]) -> str:
    """``retinaface_mnet025_640`` for a square input, ``retinaface_mnet025_480x640`` otherwise."""
    height, width = input_hw
    return f"{model_name}_{height}" if height == width else f"{model_name}_{height}x{width}"


def sidecar_path(artefact: str | Path) -> Path:
    """``model_640_fp32.tflite`` -> ``model_640_fp32.json``; ``model_640.onnx`` -> ``model_640.json``."""
    return Path(artefact).with_suffix(".json")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Every distribution that shapes an exported file or a measurement (whichever TensorFlow is installed).
TOOL_PACKAGES = (
    "mobilekit", "torch", "onnx", "onnxsim", "onnxruntime", "onnx2tf", "tensorflow", "tensorflow-cpu", "ai-edge-litert",
    "numpy", "opencv-python-headless",
)  # fmt: skip


def tool_versions() -> dict[str, str]:
    """Installed versions of :data:`TOOL_PACKAGES` (absent ones left out)."""
    versions: dict[str, str] = {}
    for name in TOOL_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def partial_path(path: Path) -> Path:
    """The temporary name a file is written under: it never ends in ``.onnx``/``.tflite``/``.json``."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only when the block succeeds."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        yield tmp
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RuntimeError(f"nothing was written for {path}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(data: dict, path: str | Path) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
    return path


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_sidecar(path: str | Path) -> dict:
    """Read the sidecar of an artefact (or the sidecar itself)."""
    path = Path(path)
    if path.suffix != ".json":
        path = sidecar_path(path)
    return json.loads(path.read_text())


def find_artefacts(export_dir: str | Path) -> list[tuple[Path, dict]]:
    """Every artefact in ``export_dir`` that has a valid sidecar, as (artefact path, metadata)."""
    found = []
    for json_path in sorted(Path(export_dir).glob("*.json")):
        try:
            meta = json.loads(json_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(meta, dict) or meta.get("schema") != SIDECAR_SCHEMA:
            continue
        artefact = json_path.with_name(meta["artefact"]["file"])
        if artefact.is_file():
            found.append((artefact, meta))
    return found
