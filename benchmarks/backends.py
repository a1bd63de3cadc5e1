"""Backend adapters: one loaded model behind ``make_input(image)`` and ``run(x) -> outputs by name``.

Each runner reports the provider it ACTUALLY runs on (``provider``), so a silent fall-back (e.g. ONNX
Runtime CUDA -> CPU) shows in the results. A backend that cannot run here raises
:class:`BackendUnavailable` with the reason; the benchmark records it as a row instead of failing.

These are thin adapters: when ``mobilekit.converters.runtimes`` lands, the ONNX Runtime and TFLite
loading should move there and these classes should wrap it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mobilekit.image_io import to_nchw
from mobilekit.models import DeployModule, FaceDetector

ORT_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
TFLITE_SIGNATURE = "serving_default"


class BackendUnavailable(Exception):
    """This backend cannot run on this machine / with this file; ``str(exc)`` says why."""


class Runner:
    """Interface: ``make_input`` turns a resized RGB uint8 ``[H, W, 3]`` image into the backend's input
    (layout, dtype, device); ``run`` returns outputs by name with the batch dimension."""

    backend: str
    provider: str
    layout: str
    input_dtype: str
    sync: Callable[[], None] | None = None

    def make_input(self, image: np.ndarray):
        raise NotImplementedError

    def run(self, x) -> dict:
        raise NotImplementedError


class TorchRunner(Runner):
    """PyTorch eager, channels_last or ``torch.compile``; on CUDA optionally fp16 autocast."""

    def __init__(self, model: FaceDetector, device: str = "cpu", mode: str = "eager", fp16: bool = False) -> None:
        if mode not in ("eager", "channels_last", "compile"):
            raise ValueError(f"unknown torch mode {mode!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("torch.cuda.is_available() is False")
        if fp16 and self.device.type != "cuda":
            raise BackendUnavailable("fp16 autocast is benchmarked on CUDA only")
        self.backend = f"torch_{mode}" if mode != "eager" else "torch"
        self.fp16 = fp16
        self.memory_format = torch.channels_last if mode == "channels_last" else torch.contiguous_format
        self.output_names = tuple(model.deploy.output_names)
        module = DeployModule(model).eval().to(self.device, memory_format=self.memory_format)
        self.module = torch.compile(module, dynamic=False) if mode == "compile" else module
        self.provider = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.layout = "NCHW (channels_last memory)" if mode == "channels_last" else "NCHW"
        self.input_dtype = "float32"
        self.sync = torch.cuda.synchronize if self.device.type == "cuda" else None
        self.compiled = mode == "compile"

    def make_input(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(to_nchw(image)).to(self.device)
        return x.contiguous(memory_format=self.memory_format)

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            outputs = self.module(x)
        return {name: out.float() for name, out in zip(self.output_names, outputs)}

    def check_compiles(self, image: np.ndarray) -> None:
        """Compile now (first call), turning any failure into :class:`BackendUnavailable`."""
        if not self.compiled:
            return
        try:
            self.run(self.make_input(image))
        except Exception as exc:  # inductor raises many types (missing compiler, unsupported op, ...)
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise BackendUnavailable(f"torch.compile failed: {type(exc).__name__}: {first}") from None


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime with ``threads`` intra-op threads on the requested execution provider."""

    def __init__(self, path: str | Path, threads: int, provider: str = "cpu") -> None:
        import onnxruntime as ort

        requested = ORT_PROVIDERS[provider]
        available = ort.get_available_providers()
        if requested[0] not in available:
            raise BackendUnavailable(f"{requested[0]} is not in onnxruntime.get_available_providers() = {available}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=requested)
        used = self.session.get_providers()[0]
        self.backend = "onnxruntime"
        self.provider = used if used == requested[0] else f"{used} (FELL BACK from {requested[0]})"
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = model_input.shape
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.layout = "NHWC" if model_input.shape[-1] == 3 else "NCHW"
        self.input_dtype = "float32"

    def make_input(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image[None].astype(np.float32)) if self.layout == "NHWC" else to_nchw(image)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: x})))


class TfliteRunner(Runner):
    """LiteRT interpreter with ``threads``; XNNPACK (the default delegate) on or off."""

    def __init__(self, path: str | Path, threads: int, xnnpack: bool = True) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
        self.interpreter.allocate_tensors()
        self.backend = "tflite"
        self.provider = tflite_provider(self.interpreter) if xnnpack else "builtin kernels (XNNPACK off)"
        detail = self.interpreter.get_input_details()[0]
        self.input_index = detail["index"]
        self.input_shape = [int(v) for v in detail["shape"]]
        self.input_type = np.dtype(detail["dtype"])
        self.input_quant = detail["quantization"]
        self.layout = "NHWC" if self.input_shape[-1] == 3 else "NCHW"
        self.input_dtype = self.input_type.name
        self.outputs = self._outputs_by_name()

    def _outputs_by_name(self) -> dict[str, tuple[int, tuple[float, int]]]:
        """Output tensor index and (scale, zero point) per name, from the signature when it has one."""
        details = {d["index"]: d for d in self.interpreter.get_output_details()}
        signatures = self.interpreter._get_full_signature_list()
        if TFLITE_SIGNATURE in signatures:
            named = signatures[TFLITE_SIGNATURE]["outputs"]
        else:
            named = {d["name"]: index for index, d in details.items()}
        return {name: (index, details[index]["quantization"]) for name, index in named.items()}

    def make_input(self, image: np.ndarray) -> np.ndarray:
        x = image[None].astype(np.float32) if self.layout == "NHWC" else to_nchw(image)
        if self.input_type != np.float32:
            scale, zero_point = self.input_quant
            info = np.iinfo(self.input_type)
            x = np.clip(np.round(x / scale + zero_point), info.min, info.max)
        return np.ascontiguousarray(x.astype(self.input_type))

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        outputs = {}
        for name, (index, (scale, zero_point)) in self.outputs.items():
            value = self.interpreter.get_tensor(index)
            outputs[name] = (value.astype(np.float32) - zero_point) * scale if value.dtype != np.float32 else value
        return outputs


def undelegated_ops(interpreter) -> tuple[dict[str, int], int, int]:
    """TFLite ops left outside the delegate: ({op name: count}, ops in the model, delegate partitions).

    After delegation the op list holds every original op plus one ``DELEGATE`` node per partition.
    An original op runs outside the delegate when none of its outputs leaves a partition and its
    outputs feed a partition, a model output or another op outside (iterated to a fixed point).
    """
    ops = interpreter._get_ops_details()
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    if not partitions:
        return {}, len(originals), 0
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
    counts: dict[str, int] = {}
    for op in originals:
        if op["index"] in outside:
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items())), len(originals), len(partitions)


def tflite_provider(interpreter) -> str:
    """``XNNPACK (n partitions; outside: OP xk, ...)`` when the default delegate took ops, else ``builtin kernels``."""
    outside, total, partitions = undelegated_ops(interpreter)
    if not partitions:
        return "builtin kernels"
    left = ", ".join(f"{name} x{count}" for name, count in outside.items()) or "none"
    return f"XNNPACK ({partitions} partition(s); {sum(outside.values())}/{total} ops outside: {left})"
