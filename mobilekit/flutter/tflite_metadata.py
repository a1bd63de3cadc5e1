"""Metadata embedded in the ``.tflite`` file itself, so a model that lost its sidecar still describes itself.

The TFLite flatbuffer has a ``metadata`` list of ``(name, buffer index)`` entries that interpreters
ignore; mobilekit stores its JSON under the name :data:`METADATA_NAME`. Reading and writing go through
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


def embed_metadata(source: str | Path, target: str | Path, metadata: dict) -> Path:
    """Write ``source`` to ``target`` with ``metadata`` (JSON) stored under :data:`METADATA_NAME`.

    An earlier mobilekit entry is replaced; every other part of the model (graph, weights,
    signatures, other metadata) is kept as it is.
    """
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(_read_bytes(Path(source))), 0)
    payload = np.frombuffer(json.dumps(metadata, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    buffer = schema.BufferT()
    buffer.data = payload
    model.buffers = list(model.buffers or [])
    model.metadata = list(model.metadata or [])
    previous = [m for m in model.metadata if _name(m.name) == METADATA_NAME]
    if previous:  # overwrite our own buffer in place: nothing stale stays in the file
        model.buffers[previous[0].buffer] = buffer
    else:
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers)
        model.buffers.append(buffer)
        model.metadata.append(entry)
    builder = flatbuffers.Builder(len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    target = Path(target)
    target.write_bytes(bytes(builder.Output()))
    return target


def read_embedded_metadata(path: str | Path) -> dict:
    """The mobilekit metadata embedded in a ``.tflite`` file (MobilekitError when it has none)."""
    path = Path(path)
    schema = _schema()
    model = schema.Model.GetRootAsModel(_read_bytes(path), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _name(entry.Name()) == METADATA_NAME:
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            try:
                return json.loads(bytes(data).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise MobilekitError(f"{path}: embedded '{METADATA_NAME}' is not valid JSON ({exc})") from None
    raise MobilekitError(f"{path} has no embedded '{METADATA_NAME}' metadata (package it with mobilekit package)")


def _name(value) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value
