"""The standard TFLite Metadata (TFLite Support's ``metadata_schema.fbs``) of a packaged model.

Android Studio's ML model binding, TFLite Support's ``MetadataDisplayer``, Netron and MediaPipe read
this flatbuffer (file identifier ``M001``) from the model's ``metadata`` entry named
:data:`METADATA_NAME`, and the associated files it names from an uncompressed zip archive appended to
the ``.tflite`` file (both as TFLite Support's ``MetadataPopulator`` writes them).

A document is a dict shaped like the JSON ``MetadataDisplayer.get_metadata_json`` prints (field
names of the schema, enum and union member names as strings, a union as ``<field>_type`` plus
``<field>``, fields at their default left out). :func:`to_buffer` and :func:`from_buffer` encode and
decode the part of the schema listed in :data:`TABLES` (schema 1.0.0 fields only); field order
follows the schema exactly, since it fixes the flatbuffer slots.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import flatbuffers
from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table

from mobilekit.errors import MobilekitError
from mobilekit.flutter.embedded_json import read_metadata_buffer

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # no field added after schema 1.0.0 is written (metadata_version.cc)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so the same files give the same bytes

ENUMS: dict[str, tuple[str, ...]] = {  # member names by value
    "AssociatedFileType": ("UNKNOWN", "DESCRIPTIONS", "TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS",
                           "TENSOR_AXIS_SCORE_CALIBRATION", "VOCABULARY", "SCANN_INDEX_FILE"),
    "ColorSpaceType": ("UNKNOWN", "RGB", "GRAYSCALE"),
}  # fmt: skip
UNIONS: dict[str, tuple[str, ...]] = {  # member tables by type value; 0 is NONE
    "ContentProperties": ("NONE", "FeatureProperties", "ImageProperties", "BoundingBoxProperties", "AudioProperties"),
    "ProcessUnitOptions": ("NONE", "NormalizationOptions", "ScoreCalibrationOptions", "ScoreThresholdingOptions",
                           "BertTokenizerOptions", "SentencePieceTokenizerOptions", "RegexTokenizerOptions"),
}  # fmt: skip
# Fields in schema order. Kinds: string, [string], [float], uint, int, enum:E, union:U (two slots), T, [T].
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "ModelMetadata": (("name", "string"), ("description", "string"), ("version", "string"),
                      ("subgraph_metadata", "[SubGraphMetadata]"), ("author", "string"), ("license", "string"),
                      ("associated_files", "[AssociatedFile]"), ("min_parser_version", "string")),
    "SubGraphMetadata": (("name", "string"), ("description", "string"), ("input_tensor_metadata", "[TensorMetadata]"),
                         ("output_tensor_metadata", "[TensorMetadata]"), ("associated_files", "[AssociatedFile]")),
    "TensorMetadata": (("name", "string"), ("description", "string"), ("dimension_names", "[string]"),
                       ("content", "Content"), ("process_units", "[ProcessUnit]"), ("stats", "Stats"),
                       ("associated_files", "[AssociatedFile]")),
    "AssociatedFile": (("name", "string"), ("description", "string"), ("type", "enum:AssociatedFileType"),
                       ("locale", "string")),
    "Content": (("content_properties", "union:ContentProperties"), ("range", "ValueRange")),
    "FeatureProperties": (),
    "ImageProperties": (("color_space", "enum:ColorSpaceType"), ("default_size", "ImageSize")),
    "ImageSize": (("width", "uint"), ("height", "uint")),
    "ValueRange": (("min", "int"), ("max", "int")),
    "ProcessUnit": (("options", "union:ProcessUnitOptions"),),
    "NormalizationOptions": (("mean", "[float]"), ("std", "[float]")),
    "Stats": (("max", "[float]"), ("min", "[float]")),
}  # fmt: skip
SCALARS = {"uint": number_types.Uint32Flags, "int": number_types.Int32Flags}


def _slots(table: str) -> list[tuple[int, str, str]]:
    """``(slot, name, kind)`` of ``table``'s fields; a union's type sits in the slot before its value."""
    if table not in TABLES:
        raise MobilekitError(f"metadata table {table!r} is not supported by mobilekit's metadata codec")
    slots, slot = [], 0
    for name, kind in TABLES[table]:
        if kind.startswith("union:"):
            slots.append((slot, f"{name}_type", "type:" + kind[6:]))
            slot += 1
        slots.append((slot, name, kind))
        slot += 1
    return slots


# -- a packaged model's document ---------------------------------------------------------------------
def describe(meta: dict, score_output: str) -> dict:
    """The standard metadata of a package from its ``model_meta.json`` (``meta``): one image input
    (raw RGB 0-255, so NormalizationOptions mean 0 / std 1), the outputs in interpreter order with the
    family's names and meanings, ``labels.txt`` on ``score_output`` and ``anchors.json`` on the model."""
    model, decoder = meta["model"], meta["decoder"]
    outputs = sorted(meta["outputs"], key=lambda o: o["interpreter_output_index"])
    if score_output not in [o["name"] for o in outputs]:
        raise MobilekitError(f"score output {score_output!r} is not among the model's outputs ({', '.join(o['name'] for o in outputs)})")
    weights = f"weights sha256 {model['weights_sha256'][:16]}" if model.get("weights_sha256") else "random weights"
    in_graph = ", end-to-end (decoding and NMS in the graph)" if model.get("end_to_end") else ""
    return {
        "name": model["name"],
        "description": (
            f"Face detector ({model['variant']}{in_graph}): face boxes, scores and landmarks "
            f"({', '.join(meta['landmark_order'])}). Decoder '{decoder['kind']}' settings, output columns and priors "
            "are in model_meta.json, also embedded in this file as 'mobilekit_meta'."
        ),
        "version": f"{model['variant']}, {weights}",
        "subgraph_metadata": [
            {
                "input_tensor_metadata": [_input_tensor(meta["input"])],
                "output_tensor_metadata": [_output_tensor(o, o["name"] == score_output) for o in outputs],
            }
        ],
        "author": "mobilekit",
        "license": "mobilekit: MIT; the weights keep the license of their source",
        "associated_files": [
            {"name": decoder["anchors_file"], "description": "Anchors of the output rows, in output-row order (model_meta.json 'decoder' says how they decode)."}
        ],
        "min_parser_version": MIN_PARSER_VERSION,
    }


def _input_tensor(spec: dict) -> dict:
    """The image input: RGB at its size, raw pixel values 0-255 (quantised as they are for uint8)."""
    _, height, width, _ = spec["shape"]
    resize = spec["resize"]
    how = "stretched" if resize["mode"] == "stretch" else f"letterboxed (centred, pad value {resize['pad_value']:g})"
    if spec["dtype"] == "uint8":
        q = spec["quantization"]
        values = f"uint8 raw pixel values 0-255 as they are (input quantisation scale {q['scale']:g}, zero point {q['zero_point']})"
    else:
        values = f"{spec['dtype']} raw pixel values 0-255"
    return {
        "name": spec["name"],
        "description": f"RGB image [1, {height}, {width}, 3] NHWC, {values}, {how} to {height}x{width}. No normalisation (the graph normalises): mean 0, std 1.",
        "content": {
            "content_properties_type": "ImageProperties",
            "content_properties": {"color_space": "RGB", "default_size": {"width": width, "height": height}},
        },
        "process_units": [{"options_type": "NormalizationOptions", "options": {"mean": [0.0], "std": [1.0]}}],
        "stats": {"max": [255.0], "min": [0.0]},
    }


def _output_tensor(spec: dict, labelled: bool) -> dict:
    """An output by its name, with its meaning, the columns of its last axis and its dequantisation."""
    description = spec["meaning"] + (f". Last axis: {', '.join(spec['columns'])}." if spec["columns"] else ".")
    if "quantization" in spec:
        q = spec["quantization"]
        description += f" {spec['dtype']}: value = (q - {q['zero_point']}) * {q['scale']:g}."
    tensor = {
        "name": spec["name"],
        "description": description,
        "content": {"content_properties_type": "FeatureProperties", "content_properties": {}},
    }
    if labelled:
        labels = {"name": "labels.txt", "description": "Class names, one a line: the class this output scores (face; no label for a background column).", "type": "TENSOR_AXIS_LABELS"}
        tensor["associated_files"] = [labels]
    return tensor


# -- encoding ---------------------------------------------------------------------------------------
def to_buffer(document: dict) -> bytes:
    """``document`` (a ModelMetadata) as a flatbuffer with the ``M001`` identifier."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(_encode(builder, "ModelMetadata", document), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _encode(builder: flatbuffers.Builder, table: str, value: dict) -> int:
    """Build ``value`` as a ``table`` (its strings, vectors and subtables first); returns its offset."""
    slots = _slots(table)
    unknown = set(value) - {name for _, name, _ in slots}
    if unknown:
        raise MobilekitError(f"metadata table {table} has no field(s) {', '.join(sorted(unknown))}")
    children = {name: _encode_child(builder, kind, value, name) for _, name, kind in slots if name in value and _is_offset(kind)}
    builder.StartObject(len(slots))
    for slot, name, kind in slots:
        if name not in value:
            continue
        if name in children:
            builder.PrependUOffsetTRelativeSlot(slot, children[name], 0)
        elif kind.startswith("type:"):
            builder.PrependUint8Slot(slot, _index(UNIONS[kind[5:]], value[name], kind), 0)
        elif kind.startswith("enum:"):
            builder.PrependInt8Slot(slot, _index(ENUMS[kind[5:]], value[name], kind), 0)
        elif kind == "uint":
            builder.PrependUint32Slot(slot, value[name], 0)
        else:
            builder.PrependInt32Slot(slot, value[name], 0)
    return builder.EndObject()


def _is_offset(kind: str) -> bool:
    return kind not in SCALARS and not kind.startswith(("type:", "enum:"))


def _encode_child(builder: flatbuffers.Builder, kind: str, value: dict, name: str) -> int:
    """A string, vector or subtable field of ``value``; returns its offset."""
    child = value[name]
    if kind == "string":
        return builder.CreateString(child)
    if kind == "[float]":
        builder.StartVector(4, len(child), 4)
        for x in reversed(child):
            builder.PrependFloat32(x)
        return builder.EndVector()
    if kind.startswith("union:"):
        return _encode(builder, value[f"{name}_type"], child)
    if kind == "[string]":
        return _offset_vector(builder, [builder.CreateString(s) for s in child])
    if kind.startswith("["):
        return _offset_vector(builder, [_encode(builder, kind[1:-1], item) for item in child])
    return _encode(builder, kind, child)


def _offset_vector(builder: flatbuffers.Builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _index(members: tuple[str, ...], member: str, kind: str) -> int:
    if member not in members:
        raise MobilekitError(f"{member!r} is not a member of {kind[5:]} ({', '.join(members)})")
    return members.index(member)


# -- decoding ---------------------------------------------------------------------------------------
def from_buffer(buffer: bytes) -> dict:
    """A ``M001`` metadata flatbuffer as a document (the fields :data:`TABLES` lists)."""
    data = bytearray(buffer)
    if len(data) < 8 or not encode.Get(packer.uoffset, data, 0) < len(data) or data[4:8] != FILE_IDENTIFIER:
        raise MobilekitError(f"not a TFLite Metadata flatbuffer (no '{FILE_IDENTIFIER.decode()}' identifier)")
    return _decode(Table(data, encode.Get(packer.uoffset, data, 0)), "ModelMetadata")


def _decode(tab: Table, table: str) -> dict:
    value: dict = {}
    for slot, name, kind in _slots(table):
        offset = tab.Offset(4 + 2 * slot)
        if offset:
            value[name] = _decode_field(tab, offset, kind, value.get(f"{name}_type"))
    return value


def _decode_field(tab: Table, offset: int, kind: str, union_member: str | None):
    position = tab.Pos + offset
    if kind == "string":
        return tab.String(position).decode("utf-8")
    if kind in SCALARS:
        return tab.Get(SCALARS[kind], position)
    if kind.startswith("type:"):
        return UNIONS[kind[5:]][tab.Get(number_types.Uint8Flags, position)]
    if kind.startswith("enum:"):
        return ENUMS[kind[5:]][tab.Get(number_types.Int8Flags, position)]
    if kind.startswith("union:"):
        member = Table(bytearray(), 0)
        tab.Union(member, offset)
        return _decode(member, union_member)
    if kind.startswith("["):
        start, count = tab.Vector(offset), tab.VectorLen(offset)
        if kind == "[float]":
            return [tab.Get(number_types.Float32Flags, start + 4 * i) for i in range(count)]
        if kind == "[string]":
            return [tab.String(start + 4 * i).decode("utf-8") for i in range(count)]
        return [_decode(Table(tab.Bytes, tab.Indirect(start + 4 * i)), kind[1:-1]) for i in range(count)]
    return _decode(Table(tab.Bytes, tab.Indirect(position)), kind)


# -- the model file ----------------------------------------------------------------------------------
def read_standard_metadata(path: str | Path) -> dict:
    """The standard metadata document of a ``.tflite`` file (MobilekitError naming it when absent or bad)."""
    buffer = read_metadata_buffer(path, METADATA_NAME)
    try:
        return from_buffer(buffer)
    except (IndexError, KeyError, TypeError, UnicodeDecodeError, struct.error) as exc:
        raise MobilekitError(f"{path}: '{METADATA_NAME}' is not a readable TFLite Metadata flatbuffer ({exc!r})") from None
    except MobilekitError as exc:
        raise MobilekitError(f"{path}: '{METADATA_NAME}': {exc}") from None


def append_associated_files(path: str | Path, files: dict[str, bytes]) -> None:
    """Append ``files`` to the ``.tflite`` at ``path`` as an uncompressed zip archive (the last write:
    rewriting the flatbuffer afterwards would drop it)."""
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)


def read_associated_files(path: str | Path) -> dict[str, bytes]:
    """The files packed in the zip archive at the end of a ``.tflite`` file (empty when there is none)."""
    data = Path(path).read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}
