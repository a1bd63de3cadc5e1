"""The export variants, in one table: what export writes, parity judges, benchmarks time and packaging
ships. Every other module reads this table instead of restating names, suffixes or precisions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportVariant:
    name: str
    format: str  # onnx | tflite
    suffix: str  # what follows the artefact stem in the file name
    precision: str  # parity class: fp32 (tensors must match) | fp16 | int8 (detections must match)
    input_dtype: str  # float32 | uint8
    layout: str  # NCHW | NHWC
    runtime: str  # onnxruntime | litert
    converter: str  # what wrote the file
    label: str  # precision as benchmark tables show it
    description: str


VARIANTS: tuple[ExportVariant, ...] = (
    ExportVariant("onnx", "onnx", ".onnx", "fp32", "float32", "NCHW", "onnxruntime", "torch.onnx", "fp32",
                  "float32 ONNX as torch.onnx exports it (batch norm folded)"),
    ExportVariant("onnx_sim", "onnx", "_sim.onnx", "fp32", "float32", "NCHW", "onnxruntime", "onnxsim", "fp32",
                  "the ONNX graph simplified by onnxsim (the TFLite conversions start from it)"),
    ExportVariant("fp32", "tflite", "_fp32.tflite", "fp32", "float32", "NHWC", "litert", "onnx2tf", "fp32",
                  "float32 weights and activations"),
    ExportVariant("fp16", "tflite", "_fp16.tflite", "fp16", "float32", "NHWC", "litert", "onnx2tf", "fp16 weights",
                  "float16 weights (dequantised to float32 at load), float32 input/output"),
    ExportVariant("int8", "tflite", "_int8.tflite", "int8", "float32", "NHWC", "litert", "onnx2tf", "int8",
                  "int8 weights and activations calibrated on real images, float32 input/output"),
    ExportVariant("int8_full", "tflite", "_int8_full.tflite", "int8", "uint8", "NHWC", "litert", "onnx2tf", "int8 (uint8 I/O)",
                  "fully integer: uint8 input (raw RGB 0-255 through the input quantisation), uint8 outputs "
                  "(dequantise with each output's scale/zero point)"),
)  # fmt: skip
VARIANT = {v.name: v for v in VARIANTS}
FORMATS = tuple(VARIANT)
TFLITE_VARIANTS = tuple(v.name for v in VARIANTS if v.format == "tflite")
INT8_VARIANTS = tuple(v.name for v in VARIANTS if v.precision == "int8")

# ``{stem}_{H}[x{W}]{suffix}``, longest suffix first so ``_int8_full`` wins over ``_int8``.
_FILE_NAME = re.compile(
    r"^(?P<stem>.+?)_(?P<h>\d+)(?:x(?P<w>\d+))?(?P<suffix>"
    + "|".join(re.escape(v.suffix) for v in sorted(VARIANTS, key=lambda v: -len(v.suffix)))
    + r")$"
)


def artefact_path(out_dir: Path, stem: str, variant: str) -> Path:
    return out_dir / f"{stem}{VARIANT[variant].suffix}"


def parse_artefact_name(name: str) -> tuple[str, tuple[int, int], str] | None:
    """``retinaface_mnet025_480x640_int8.tflite`` -> ``("retinaface_mnet025", (480, 640), "int8")``."""
    match = _FILE_NAME.match(name)
    if match is None:
        return None
    variant = next(v.name for v in VARIANTS if v.suffix == match["suffix"])
    height = int(match["h"])
    return match["stem"], (height, int(match["w"] or height)), variant
