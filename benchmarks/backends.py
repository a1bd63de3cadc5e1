"""Benchmark runners: one loaded model behind ``make_input(image)`` and ``run(x) -> outputs by name``.

``make_input`` converts the image once, outside the timed region; ``run`` is inference only. Each
runner reports the provider it ACTUALLY runs on (``provider``), so a silent fall-back (e.g. ONNX
Runtime CUDA -> CPU) shows in the results. A backend that cannot run here raises
:class:`BackendUnavailable` with the reason; the benchmark records it as a row instead of failing.
Exported files run through :mod:`mobilekit.converters.runtimes` (:class:`RuntimeRunner`).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

from mobilekit.converters.runtimes import BackendUnavailable, OnnxRuntime, TFLiteRuntime
from mobilekit.image_io import to_nchw
from mobilekit.models import DeployModule, FaceDetector


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


class RuntimeRunner(Runner):
    """An exported file through its ONNX Runtime / TFLite runtime; ``run`` is the runtime's ``infer``."""

    def __init__(self, backend: str, runtime: OnnxRuntime | TFLiteRuntime) -> None:
        self.backend = backend
        self.runtime = runtime
        self.provider = runtime.provider
        self.layout = runtime.layout
        self.input_dtype = runtime.input_dtype.name

    def make_input(self, image: np.ndarray) -> np.ndarray:
        return self.runtime.prepare(image[None])

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.runtime.infer(x)
