"""Artefact names, atomic writes and the ``*.json`` sidecar written next to every exported file."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata as importlib_metadata
from pathlib import Path

from mobilekit.errors import MobilekitError

SIDECAR_SCHEMA = "mobilekit.export/1"


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
    "litert-torch", "ai-edge-quantizer", "numpy", "opencv-python-headless",
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


def read_sidecar(path: str | Path) -> dict:
    """Read the sidecar of an artefact (or the sidecar itself)."""
    path = Path(path)
    if path.suffix != ".json":
        path = sidecar_path(path)
    return json.loads(path.read_text())


MODEL_SUFFIXES = (".onnx", ".tflite")


def find_artefacts(export_dir: str | Path) -> list[tuple[Path, dict]]:
    """Every artefact in ``export_dir`` that has a sidecar, as (artefact path, metadata).

    Raises :class:`MobilekitError` naming a damaged sidecar (unreadable JSON beside a model file of its
    name) or an artefact that is not the file its sidecar describes (sha256: truncated or replaced)."""
    found = []
    for json_path in sorted(Path(export_dir).glob("*.json")):
        try:
            meta = json.loads(json_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            models = [json_path.with_suffix(s) for s in MODEL_SUFFIXES if json_path.with_suffix(s).is_file()]
            if models:
                raise MobilekitError(f"{models[0]} has an unreadable metadata sidecar {json_path.name} ({exc}): export it again") from None
            continue
        if not isinstance(meta, dict) or meta.get("schema") != SIDECAR_SCHEMA:
            continue
        artefact = json_path.with_name(meta["artefact"]["file"])
        if artefact.is_file():
            check_intact(artefact, meta)
            found.append((artefact, meta))
    return found


def check_intact(artefact: Path, meta: dict) -> None:
    """Raise naming ``artefact`` when its bytes are not those its sidecar recorded (a truncated copy, a
    file replaced since the export)."""
    recorded = meta["artefact"].get("sha256")
    if recorded is not None and sha256_file(artefact) != recorded:
        raise MobilekitError(
            f"{artefact} is not the file its sidecar {sidecar_path(artefact).name} describes ({artefact.stat().st_size} bytes, "
            f"{meta['artefact'].get('bytes')} exported; sha256 differs): truncated or replaced, export it again"
        )
