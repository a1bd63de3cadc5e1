"""The export variants, in one table: what export writes, parity judges, benchmarks time and packaging
ships. Every other module reads this table instead of restating names, suffixes or precisions."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
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
    twin_of: str | None = None  # the onnx2tf variant with the same precision and contract (other converter)

    @property
    def kind(self) -> str:
        """The variant regardless of converter: ``fp32_litert`` -> ``fp32`` (what packaging asks for)."""
        return self.twin_of or self.name


_ONNX2TF_VARIANTS: tuple[ExportVariant, ...] = (
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

# The converter dimension: ``onnx2tf`` converts the simplified ONNX (names above, unchanged); ``litert``
# converts the PyTorch model directly with litert-torch (same contract, ``_litert`` suffix). litert-torch's
# post-training int8 (ai-edge-quantizer) gives int8 inputs, not the float32/uint8 contract: int8 stays onnx2tf's.
TFLITE_CONVERTERS = ("onnx2tf", "litert")
SIGNATURE_KEY = "serving_default"  # the signature every TFLite file is read through: inputs and outputs by name
CONVERTER_SUFFIX = {"onnx2tf": "", "litert": "_litert"}
LITERT_KINDS = ("fp32", "fp16")


def _twin(variant: ExportVariant, converter: str) -> ExportVariant:
    tag = CONVERTER_SUFFIX[converter]
    return replace(variant, name=f"{variant.name}{tag}", suffix=variant.suffix.replace(".tflite", f"{tag}.tflite"),
                   converter=converter, twin_of=variant.name, label=f"{variant.label} ({converter})",
                   description=f"{variant.description}; converted by {converter}")  # fmt: skip


VARIANTS: tuple[ExportVariant, ...] = _ONNX2TF_VARIANTS + tuple(
    _twin(v, "litert") for v in _ONNX2TF_VARIANTS if v.name in LITERT_KINDS
)
VARIANT = {v.name: v for v in VARIANTS}
FORMATS = tuple(VARIANT)
TFLITE_VARIANTS = tuple(v.name for v in VARIANTS if v.format == "tflite")
TFLITE_KINDS = tuple(v.name for v in _ONNX2TF_VARIANTS if v.format == "tflite")
INT8_VARIANTS = tuple(v.name for v in VARIANTS if v.precision == "int8")


def converter_variant(kind: str, converter: str) -> str | None:
    """The variant of ``kind`` (``fp32``, ``int8``, ...) that ``converter`` writes; None when it writes none."""
    name = f"{kind}{CONVERTER_SUFFIX[converter]}"
    return name if name in VARIANT and VARIANT[name].converter == converter else None

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
