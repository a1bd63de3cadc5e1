"""One runner API for every backend: PyTorch, ONNX Runtime and TFLite (LiteRT).

``runtime.run(images)`` takes raw RGB 0-255 images ``[N, H, W, 3]`` (uint8 or float, NHWC, already
resized to the model input) and returns the deployment outputs by name (``loc``, ``conf``,
``landmarks``) as float32 NumPy arrays. Each backend converts to its own layout and dtype; quantised
TFLite inputs/outputs go through the tensors' own scale/zero point. TFLite outputs are read through
the ``serving_default`` signature, i.e. by name, never by position.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Protocol

import numpy as np

from mobilekit.errors import MobilekitError


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


class TorchRuntime:
    """The PyTorch model itself (the parity reference).

    ``float64=True`` evaluates a double-precision copy: the exact-arithmetic reference, so that
    PyTorch's own float32 rounding (up to ~1e-4 on FeatherFace's landmarks) is not charged to an
    exported file.
    """

    def __init__(self, model, name: str = "pytorch", float64: bool = False) -> None:
        self.model = (copy.deepcopy(model).double() if float64 else model).eval()
        self.name = name
        self.output_names = tuple(model.deploy.output_names)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        from mobilekit.inference import run_model

        images = _check_images(images, None)
        nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float64)
        return {k: v.cpu().numpy() for k, v in run_model(self.model, nchw).items()}


class OnnxRuntime:
    """ONNX Runtime on CPU; the graph input is NCHW float32."""

    def __init__(self, path: str | Path, num_threads: int = 2, name: str | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.name = name or Path(path).name
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        self.input_hw = tuple(shape[2:4]) if all(isinstance(d, int) for d in shape[2:4]) else None
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = _check_images(images, self.input_hw)
        nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: nchw})))


class TFLiteRuntime:
    """LiteRT interpreter through the ``serving_default`` signature; NHWC input, batch 1 per call.

    ``xnnpack=False`` runs LiteRT's built-in kernels without the default XNNPACK delegate: the
    arithmetic closest to the converted graph (XNNPACK reorders float sums; on RetinaFace fp32 it
    moves outputs by up to ~1e-4).
    """

    SIGNATURE_KEY = "serving_default"

    def __init__(self, path: str | Path, num_threads: int = 2, name: str | None = None, xnnpack: bool = True) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads, experimental_op_resolver_type=resolver)
        self.xnnpack = xnnpack
        signatures = self.interpreter.get_signature_list()
        if self.SIGNATURE_KEY not in signatures:
            raise MobilekitError(f"{path} has no '{self.SIGNATURE_KEY}' signature: outputs cannot be read by name (re-export it with mobilekit export)")
        self.runner = self.interpreter.get_signature_runner(self.SIGNATURE_KEY)
        self.name = name or Path(path).name
        inputs = self.runner.get_input_details()
        if len(inputs) != 1:
            raise MobilekitError(f"{path}: expected one input, found {list(inputs)}")
        self.input_name, self.input_details = next(iter(inputs.items()))
        self.input_hw = tuple(int(d) for d in self.input_details["shape"][1:3])
        self.output_details = self.runner.get_output_details()
        self.output_names = tuple(signatures[self.SIGNATURE_KEY]["outputs"])

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = _check_images(images, self.input_hw)
        per_image = [self.runner(**{self.input_name: self._quantize_input(image[None])}) for image in images]
        return {name: np.concatenate([self._dequantize(name, out[name]) for out in per_image]) for name in self.output_names}

    def _quantize_input(self, image: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self.input_details["dtype"])
        if dtype == np.float32:
            return image.astype(np.float32)
        scale, zero_point = self.input_details["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(image.astype(np.float32) / scale + zero_point), info.min, info.max).astype(dtype)

    def _dequantize(self, name: str, value: np.ndarray) -> np.ndarray:
        if value.dtype == np.float32:
            return value
        scale, zero_point = self.output_details[name]["quantization"]
        return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)


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
