"""Selective (mixed-precision) int8: layers left in float inside an otherwise integer TFLite model.

Runs inside the TFLite worker (TensorFlow imported), except :func:`parse_keep_float` (the option's text,
checked by ``mobilekit export`` before any work). A layer is named by its output tensor in the
calibrated model, the name TensorFlow's MLIR quantiser deny-lists. ``--keep-float`` takes:

- ``stem``: the ops from the input at full resolution down to stride :data:`STEM_MAX_STRIDE`, in
  execution order up to the first coarser one (the input's pixels and the first convolutions, where
  int8 steps are largest against the faint detail of small faces);
- ``heads``: the last computing op before each output (only reshapes / concatenations / softmax after it);
- ``outputs``: the heads and the shape-only ops after them, so that the outputs never pass through int8
  (a head kept in float alone is requantised for the reshapes and concatenations that follow it);
- an op type in capitals (``FULLY_CONNECTED``): every op of that type;
- a tensor name (as listed in the sidecar's ``int8.float_layers`` of an earlier export);
- ``auto``: layers ranked by TensorFlow's quantisation debugger (per-layer RMSE in quantisation steps on
  the calibration photos), the fewest top-ranked kept in float until the detections on those photos
  meet the target;
- ``speed``: one float prefix of the graph (the memory-bound stem, where int8 kernels are not faster
  on many CPUs): prefixes of :data:`SPEED_PREFIXES` ops are timed on this machine at one thread under
  XNNPACK, interleaved, and the fastest whose detections on the calibration photos meet the target wins.

``auto`` and ``speed`` add their layers to the model's declared ones (``DeployConfig.int8_keep_float``),
which stay float whatever they choose (e.g. FeatherFace V2's CBAM layers, without which XNNPACK crashes).
"""

from __future__ import annotations

import functools
import importlib
import re
import types
from typing import Callable

import numpy as np

from mobilekit.errors import MobilekitError

SHAPE_ONLY_OPS = frozenset({"RESHAPE", "CONCATENATION", "DEQUANTIZE", "QUANTIZE", "SOFTMAX", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS"})
AUTO_STEPS = (0, 1, 2, 4, 8, 16, 32, 64)
SPEED_PREFIXES = (0, 4, 8, 11, 16, 24, 32)  # float ops from the input, in execution order
STEM_MAX_STRIDE = 4


class KeepFloatError(ValueError):
    """A ``--keep-float`` entry that names nothing in the model."""


def parse_keep_float(value: str) -> tuple[str, ...]:
    """``--keep-float`` text -> layer specs; ``none`` -> () (fully int8); ``auto`` and ``speed`` only on their own."""
    specs = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not specs:
        raise MobilekitError("--keep-float needs a value: auto, speed, stem, heads, outputs, none, op types or tensor names")
    if specs == ("none",):
        return ()
    if any(s in ("auto", "speed", "none") for s in specs) and len(specs) > 1:
        raise MobilekitError(f"--keep-float {value!r}: 'auto', 'speed' and 'none' cannot be combined with other entries")
    return specs


def _interpreter(model: bytes):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=model)


def _op_outputs(model: bytes) -> list[tuple[str, str]]:
    """``(op type, output tensor name)`` of every op of the calibrated model."""
    interpreter = _interpreter(model)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    return [(op["op_name"], names[op["outputs"][0]]) for op in interpreter._get_ops_details() if op["outputs"].size]


def input_names(model: bytes) -> list[str]:
    """The model's input tensors."""
    return [d["name"] for d in _interpreter(model).get_input_details()]


def stem_layers(model: bytes) -> list[str]:
    """Output tensors of the ops from the input, in execution order, until the first op whose output
    is an image coarser than stride :data:`STEM_MAX_STRIDE` (non-image outputs, e.g. the row-wise mean
    subtraction's ``[1, H, W*C]``, stay in the stem)."""
    interpreter = _interpreter(model)
    input_height = int(interpreter.get_input_details()[0]["shape"][1])
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    stem: list[str] = []
    for op in interpreter._get_ops_details():
        if not op["outputs"].size:
            continue
        output = tensors[int(op["outputs"][0])]
        if len(output["shape"]) == 4 and output["shape"][1] * STEM_MAX_STRIDE < input_height:
            break
        stem.append(output["name"])
    return stem


def head_layers(model: bytes, with_shape_ops: bool = False) -> list[str]:
    """The last computing op before each output, following shape-only ops backwards; with
    ``with_shape_ops``, those shape-only ops too (not the (de)quantisations)."""
    interpreter = _interpreter(model)
    ops = interpreter._get_ops_details()
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    producer = {int(t): op for op in ops for t in op["outputs"]}
    pending = [int(d["index"]) for d in interpreter.get_output_details()]
    seen: set[int] = set()
    heads: list[str] = []
    while pending:
        tensor = pending.pop()
        if tensor in seen or tensor not in producer:
            continue
        seen.add(tensor)
        op = producer[tensor]
        if op["op_name"] in SHAPE_ONLY_OPS:
            pending.extend(int(i) for i in op["inputs"] if i >= 0)
            if with_shape_ops and op["op_name"] not in ("QUANTIZE", "DEQUANTIZE"):
                heads.append(names[tensor])
        else:
            heads.append(names[tensor])
    return sorted(heads)


def resolve_layers(model: bytes, specs: list[str]) -> list[str]:
    """Tensor names for ``specs`` (``stem``, ``heads``, ``outputs``, op types, tensor names); raises naming an unknown entry."""
    ops = _op_outputs(model)
    names = {name for _, name in ops}
    chosen: list[str] = []
    for spec in specs:
        if spec == "stem":
            found = stem_layers(model)
        elif spec in ("heads", "outputs"):
            found = head_layers(model, with_shape_ops=spec == "outputs")
        elif re.fullmatch(r"[A-Z][A-Z0-9_]*", spec):
            found = [name for op_type, name in ops if op_type == spec]
        else:
            found = [spec] if spec in names else []
        if not found:
            raise KeepFloatError(f"--keep-float entry '{spec}' matches no layer of the model (op types present: {sorted({t for t, _ in ops})})")
        chosen += [name for name in found if name not in chosen]
    return chosen


def rank_layers(calibrated: bytes, calib: np.ndarray) -> list[str]:
    """Layers by TensorFlow's quantisation debugger, worst first: RMSE of each layer's int8 output against
    its float computation from the same (quantised) inputs, in units of its quantisation step, with the
    ``calibrated`` model's activation ranges (those the int8 files get)."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    def dataset():
        for image in calib:
            yield [image[None].astype(np.float32)]

    options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics={"scale": lambda f, q, scale, zero: scale})
    # The debugger's interpreters would load LiteRT's XNNPACK delegate, which some int8 graphs crash.
    module = importlib.import_module("tensorflow.lite.tools.optimize.debugging.python.debugger")
    builtin = functools.partial(tf.lite.Interpreter, experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    original, module._interpreter = module._interpreter, types.SimpleNamespace(Interpreter=builtin)
    try:
        debug_model = mlir_quantize(calibrated, enable_numeric_verify=True)
        debugger = tf.lite.experimental.QuantizationDebugger(quant_debug_model_content=debug_model, debug_dataset=dataset, debug_options=options)
        debugger.run()
    finally:
        module._interpreter = original
    scored = []
    for key, stats in debugger.layer_statistics.items():
        name = key.rsplit(":", 1)[0].removeprefix("NumericVerify/")
        name = name[:-1] if name[-1:].isdigit() else name  # the debugger's suffix on the verified tensor
        if stats.get("scale"):
            scored.append((float(np.sqrt(stats["mean_squared_error"]) / stats["scale"]), name))
    return [name for _, name in sorted(scored, reverse=True)]


def speed_candidates(model: bytes) -> dict[int, list[str]]:
    """Prefix length -> output tensors of the model's first ops in execution order, for every
    :data:`SPEED_PREFIXES` length shorter than the graph."""
    names = [name for _, name in _op_outputs(model)]
    return {count: names[:count] for count in SPEED_PREFIXES if count < len(names)}


def speed_layers(candidates: dict[int, list[str]], latency_ms: dict[int, float], meets_target: Callable[[list[str]], bool]) -> int:
    """The prefix length (a key of ``candidates``) of the fastest candidate whose detections meet the
    target, trying them fastest first; the fully int8 graph (0) when none does."""
    for count in sorted(candidates, key=lambda c: (latency_ms[c], c)):
        if meets_target(candidates[count]):
            return count
    return 0


def auto_layers(ranked: list[str], meets_target: Callable[[list[str]], bool]) -> list[str]:
    """The fewest top-ranked layers (0, 1, 2, 4, ... 64) whose float copy makes ``meets_target`` true;
    all 64 when none does (the caller reports the shortfall)."""
    for count in AUTO_STEPS:
        layers = ranked[:count]
        if meets_target(layers):
            return layers
        if count >= len(ranked):
            break
    return ranked[: AUTO_STEPS[-1]]
