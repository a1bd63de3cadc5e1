"""One runner API for every backend: PyTorch, ONNX Runtime and TFLite (LiteRT).

``runtime.run(images)`` takes raw RGB 0-255 images ``[N, H, W, 3]`` (uint8 or float, NHWC, already
resized to the model input) and returns the deployment outputs by name (``loc``, ``conf``,
``landmarks``) as float32 NumPy arrays. Each backend converts to its own layout and dtype; quantised
TFLite inputs/outputs go through the tensors' own scale/zero point. TFLite outputs are read through
the ``serving_default`` signature, i.e. by name, never by position.

The ONNX Runtime and TFLite runtimes split ``run`` into ``prepare(images)`` (layout, dtype,
quantisation) and ``infer(x)`` (inference and dequantisation only; what the benchmark times), and
report the ``provider`` they actually run on, so a silent fall-back shows. A runtime that cannot run
here or with this file raises :class:`BackendUnavailable`.
"""

from __future__ import annotations

import contextlib
import copy
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from mobilekit.converters.variants import SIGNATURE_KEY
from mobilekit.errors import MobilekitError

ORT_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class BackendUnavailable(MobilekitError):
    """This backend cannot run on this machine / with this file; ``str(exc)`` says why."""


def unreadable_model(path: str | Path, kind: str, exc: Exception) -> MobilekitError:
    """The one-line error for a model file a runtime cannot read (truncated, corrupt, not a model)."""
    reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return MobilekitError(f"{path} is not a readable {kind} model ({reason[:200]}): truncated or corrupt? export it again")


class Runtime(Protocol):
    name: str
    output_names: tuple[str, ...]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]: ...


def _check_images(images: np.ndarray, input_hw: tuple[int, int] | None) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise MobilekitError(f"runtime input must be RGB images [N, H, W, 3], got shape {images.shape}")
    if input_hw is not None and tuple(images.shape[1:3]) != tuple(input_hw):
        raise MobilekitError(f"runtime input is {images.shape[1]}x{images.shape[2]} but the model takes {input_hw[0]}x{input_hw[1]}")
    return images


def _input_layout(shape: list) -> tuple[str, tuple[int, int] | None]:
    """``NHWC`` (3 channels last) or ``NCHW``, and the input height/width (None when not fixed)."""
    layout = "NHWC" if shape[-1] == 3 else "NCHW"
    hw = tuple(shape[1:3] if layout == "NHWC" else shape[2:4])
    return layout, hw if all(isinstance(d, int) for d in hw) else None


def _to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    return images if layout == "NHWC" else images.transpose(0, 3, 1, 2)


def _quantize(x: np.ndarray, dtype: np.dtype, quantization: tuple[float, int]) -> np.ndarray:
    """``x`` as a contiguous ``dtype`` array; integer types through (scale, zero point)."""
    if dtype == np.float32:
        return np.ascontiguousarray(x, dtype=np.float32)
    scale, zero_point = quantization
    info = np.iinfo(dtype)
    return np.ascontiguousarray(np.clip(np.round(x.astype(np.float32) / scale + zero_point), info.min, info.max).astype(dtype))


def _dequantize(value: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    if value.dtype == np.float32:
        return value
    scale, zero_point = quantization
    return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)


class TorchRuntime:
    """The PyTorch model itself (the parity reference).

    ``float64=True`` evaluates a double-precision copy: the exact-arithmetic reference, so that
    PyTorch's own float32 rounding (up to ~1e-4 on FeatherFace's landmarks) is not charged to an
    exported file.
    """

    def __init__(self, model, name: str = "pytorch", float64: bool = False) -> None:
        self.model = (copy.deepcopy(model).double() if float64 else model).eval()
        self.name = name
        self.float64 = float64
        self.output_names = tuple(model.deploy.output_names)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        from mobilekit.converters.float64_reference import FastFloat64GroupedConvs
        from mobilekit.inference import run_model

        images = _check_images(images, None)
        nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float64)
        with FastFloat64GroupedConvs() if self.float64 else contextlib.nullcontext():
            outputs = run_model(self.model, nchw)
        return {k: v.cpu().numpy() for k, v in outputs.items()}


def onnxruntime_options(num_threads: int, profile_prefix: Path | None = None):
    """The session options every ONNX Runtime measurement uses: ``num_threads`` intra-op threads, one
    sequential inter-op thread, every graph optimisation; with ``profile_prefix``, its per-node profiler on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return options


class OnnxRuntime:
    """ONNX Runtime with ``num_threads`` intra-op threads on ``provider`` (a key of ``ORT_PROVIDERS``);
    float32 input, NCHW or NHWC as the graph has it."""

    def __init__(self, path: str | Path, num_threads: int = 2, name: str | None = None, provider: str = "cpu") -> None:
        import onnxruntime as ort

        requested = ORT_PROVIDERS[provider]
        available = ort.get_available_providers()
        if requested[0] not in available:
            raise BackendUnavailable(f"{requested[0]} is not in onnxruntime.get_available_providers() = {available}")
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf

        try:
            self.session = ort.InferenceSession(str(path), onnxruntime_options(num_threads), providers=requested)
        except (InvalidProtobuf, InvalidGraph, Fail) as exc:  # a truncated or foreign file
            raise unreadable_model(path, "ONNX", exc) from None
        used = self.session.get_providers()[0]
        self.provider = used if used == requested[0] else f"{used} (FELL BACK from {requested[0]})"
        self.name = name or Path(path).name
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.layout, self.input_hw = _input_layout(model_input.shape)
        self.input_dtype = np.dtype(np.float32)
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """RGB images ``[N, H, W, 3]`` as the graph input."""
        return np.ascontiguousarray(_to_layout(_check_images(images, self.input_hw), self.layout), dtype=np.float32)

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: x})))

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return self.infer(self.prepare(images))


class TFLiteRuntime:
    """LiteRT interpreter with ``num_threads``, read through the ``serving_default`` signature; batch 1 per call.

    ``xnnpack=False`` runs LiteRT's built-in kernels without the default XNNPACK delegate: the
    arithmetic closest to the converted graph (XNNPACK reorders float sums; on RetinaFace fp32 it
    moves outputs by up to ~1e-4).
    """

    def __init__(self, path: str | Path, num_threads: int = 2, name: str | None = None, xnnpack: bool = True) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads, experimental_op_resolver_type=resolver)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:  # "not a valid Flatbuffer buffer", ops it cannot prepare
            raise unreadable_model(path, "TFLite", exc) from None
        self.xnnpack = xnnpack
        self.name = name or Path(path).name
        signature = self.interpreter._get_full_signature_list().get(SIGNATURE_KEY)
        if signature is None:
            raise BackendUnavailable(f"{path} has no '{SIGNATURE_KEY}' signature: outputs cannot be read by name (re-export it with mobilekit export)")
        if len(signature["inputs"]) != 1:
            raise MobilekitError(f"{path}: expected one input, found {list(signature['inputs'])}")
        details = {d["index"]: d for d in self.interpreter.get_input_details() + self.interpreter.get_output_details()}
        ((self.input_name, input_index),) = signature["inputs"].items()
        self.input_details = details[input_index]
        self.output_details = {name: details[index] for name, index in signature["outputs"].items()}
        self.output_names = tuple(self.output_details)
        self.layout, self.input_hw = _input_layout([int(d) for d in self.input_details["shape"]])
        self.input_dtype = np.dtype(self.input_details["dtype"])

    @cached_property
    def provider(self) -> str:
        """What runs the ops (worked out on first read: ~0.1 s on a large graph)."""
        return tflite_provider(self.interpreter) if self.xnnpack else "builtin kernels (XNNPACK off)"

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """RGB images ``[1, H, W, 3]`` as the input tensor (layout, dtype, quantisation)."""
        x = _to_layout(_check_images(images, self.input_hw), self.layout)
        return _quantize(x, self.input_dtype, self.input_details["quantization"])

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.interpreter.set_tensor(self.input_details["index"], x)
        self.interpreter.invoke()
        return self.dequantize({name: self.interpreter.get_tensor(d["index"]) for name, d in self.output_details.items()})

    def dequantize(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Output tensors by name, as read from the interpreter (here or on an emulated ARM CPU), as float32."""
        return {name: _dequantize(raw[name], d["quantization"]) for name, d in self.output_details.items()}

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        per_image = [self.infer(self.prepare(image[None])) for image in _check_images(images, self.input_hw)]
        return {name: np.concatenate([out[name] for out in per_image]) for name in self.output_names}


def outside_delegate(interpreter) -> tuple[set[int], int, int]:
    """Indices of the TFLite ops left outside the delegate, with the number of original ops and of
    delegate partitions.

    After delegation the op list holds every original op plus one ``DELEGATE`` node per partition.
    An original op runs outside the delegate when none of its outputs leaves a partition and its
    outputs feed a partition, a model output or another op outside (iterated to a fixed point).
    """
    ops = interpreter._get_ops_details()
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    if not partitions:
        return set(), len(originals), 0
    partition_out = {t for p in partitions for t in p["outputs"]}
    sinks = {t for p in partitions for t in p["inputs"]} | {d["index"] for d in interpreter.get_output_details()}
    outside: set[int] = set()
    changed = True
    while changed:
        changed = False
        for op in originals:
            outs = set(op["outputs"])
            if op["index"] not in outside and not outs & partition_out and outs & sinks:
                outside.add(op["index"])
                sinks |= set(op["inputs"])
                changed = True
    return outside, len(originals), len(partitions)


def undelegated_ops(interpreter) -> tuple[dict[str, int], int, int]:
    """TFLite ops left outside the delegate: ({op name: count}, ops in the model, delegate partitions)."""
    outside, total, partitions = outside_delegate(interpreter)
    counts: dict[str, int] = {}
    for op in interpreter._get_ops_details():
        if op["index"] in outside and op["op_name"] != "DELEGATE":
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items())), total, partitions


def tflite_provider(interpreter) -> str:
    """``XNNPACK (n partitions; outside: OP xk, ...)`` when the default delegate took ops, else ``builtin kernels``."""
    outside, total, partitions = undelegated_ops(interpreter)
    if not partitions:
        return "builtin kernels"
    left = ", ".join(f"{name} x{count}" for name, count in outside.items()) or "none"
    return f"XNNPACK ({partitions} partition(s); {sum(outside.values())}/{total} ops outside: {left})"


def check_readable(path: str | Path) -> None:
    """Raise naming ``path`` unless its runtime opens it (TFLite on the built-in kernels: no delegate runs
    in the caller's process)."""
    open_runtime(path, num_threads=1, xnnpack=False)


def open_runtime(path: str | Path, num_threads: int = 2, name: str | None = None, xnnpack: bool = True) -> Runtime:
    """A runtime for an exported file, chosen by suffix (``.onnx`` or ``.tflite``; ``xnnpack`` for TFLite only)."""
    path = Path(path)
    if not path.is_file():
        raise MobilekitError(f"model file not found: {path}")
    if path.suffix == ".onnx":
        return OnnxRuntime(path, num_threads, name)
    if path.suffix == ".tflite":
        return TFLiteRuntime(path, num_threads, name, xnnpack)
    raise MobilekitError(f"no runtime for {path.name}: expected .onnx or .tflite (PyTorch models: TorchRuntime)")
