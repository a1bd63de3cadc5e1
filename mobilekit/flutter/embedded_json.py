"""Metadata embedded in the ``.tflite`` file itself, so a model that lost its sidecar still describes itself.

The TFLite flatbuffer has a ``metadata`` list of ``(name, buffer index)`` entries that interpreters
ignore; mobilekit stores its JSON under the name :data:`METADATA_NAME` (and the standard TFLite
Metadata under its own name, see :mod:`mobilekit.flutter.standard_metadata`). Reading and writing go through
the flatbuffer schema shipped with ``ai_edge_litert`` (no TensorFlow import, no tflite_support).
"""

from __future__ import annotations

import json
from pathlib import Path

import flatbuffers
import numpy as np

from mobilekit.errors import MobilekitError

METADATA_NAME = "mobilekit_meta"
TFLITE_FILE_IDENTIFIER = b"TFL3"


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise MobilekitError(f"TFLite model not found: {path}")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != TFLITE_FILE_IDENTIFIER:
        raise MobilekitError(f"{path} is not a TFLite flatbuffer (no '{TFLITE_FILE_IDENTIFIER.decode()}' identifier)")
    return data


def embed_metadata(source: str | Path, target: str | Path, metadata: dict, buffers: dict[str, bytes] | None = None) -> Path:
    """Write ``source`` to ``target`` with ``metadata`` (JSON) stored under :data:`METADATA_NAME` and
    each of ``buffers`` under its name.

    Earlier entries of these names are replaced; every other part of the model (graph, weights,
    signatures, other metadata) is kept as it is. Bytes appended after the flatbuffer (an
    associated-files zip) are not: append them after this.
    """
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(_read_bytes(Path(source))), 0)
    model.buffers = list(model.buffers or [])
    model.metadata = list(model.metadata or [])
    entries = {METADATA_NAME: json.dumps(metadata, sort_keys=True).encode("utf-8"), **(buffers or {})}
    for name, payload in entries.items():
        _put_entry(schema, model, name, payload)
    builder = flatbuffers.Builder(sum(len(p) for p in entries.values()) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    target = Path(target)
    target.write_bytes(bytes(builder.Output()))
    return target


def _put_entry(schema, model, name: str, payload: bytes) -> None:
    """Store ``payload`` in a buffer of ``model`` named ``name`` in its metadata list."""
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    previous = [m for m in model.metadata if _name(m.name) == name]
    if previous:  # overwrite the buffer in place: nothing stale stays in the file
        model.buffers[previous[0].buffer] = buffer
        return
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers)
    model.buffers.append(buffer)
    model.metadata.append(entry)


def read_metadata_buffer(path: str | Path, name: str) -> bytes:
    """The bytes stored under metadata entry ``name`` of a ``.tflite`` file (MobilekitError when absent)."""
    path = Path(path)
    model = _schema().Model.GetRootAsModel(_read_bytes(path), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _name(entry.Name()) == name:
            return bytes(model.Buffers(entry.Buffer()).DataAsNumpy())
    raise MobilekitError(f"{path} has no embedded '{name}' metadata (package it with mobilekit package)")


def read_embedded_metadata(path: str | Path) -> dict:
    """The mobilekit metadata embedded in a ``.tflite`` file (MobilekitError when it has none)."""
    data = read_metadata_buffer(path, METADATA_NAME)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MobilekitError(f"{path}: embedded '{METADATA_NAME}' is not valid JSON ({exc})") from None


def _name(value) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value
