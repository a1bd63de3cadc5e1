"""PyTorch -> TFLite with litert-torch, in a child process (jax, TensorFlow and the converter's state stay
out of the caller; a converter crash becomes a reported failure).

Run as ``python -m mobilekit.converters.litert_child JOB.json RESULT.json``. The job names a
``torch.export`` program (``images`` NHWC float32 RGB 0-255 in, a dict of the family's outputs out), so
the child needs no model code. litert-torch names the signature's inputs and outputs after those keys;
they are checked by name and by value against the program's own outputs on a real image. fp16 stores
the convolution weights as float16 (ai-edge-quantizer's float casting, dequantised at load), float32
activations and I/O: the same contract as onnx2tf's fp16 file.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np

from mobilekit.converters.child_process import serve_job
from mobilekit.converters.variants import SIGNATURE_KEY

FP16_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_2D_TRANSPOSE")


class LitertWorkerError(Exception):
    def __init__(self, message: str, op: str | None = None) -> None:
        super().__init__(message)
        self.op = op


def failing_op(message: str) -> str | None:
    """The aten operator a lowering error names (``aten.grid_sampler_2d.default`` -> ``aten::grid_sampler_2d``)."""
    found = re.search(r"\baten[.:]+(\w+)", message)
    return f"aten::{found.group(1)}" if found else None


def convert_fp32(program_path: str, sample: np.ndarray) -> tuple[bytes, dict[str, np.ndarray]]:
    """The float32 TFLite flatbuffer and the program's own outputs on ``sample``."""
    import litert_torch
    import torch

    module = torch.export.load(program_path).module()
    images = torch.from_numpy(sample)
    with torch.no_grad():
        reference = {k: v.numpy() for k, v in module(images=images).items()}
    try:
        converted = litert_torch.convert(module, sample_kwargs={"images": images})
    except Exception as exc:
        text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        raise LitertWorkerError(text[:400], failing_op(str(exc))) from None
    return converted.model_content(), reference


def convert_fp16(fp32: bytes) -> bytes:
    """float16 weights for the weight-carrying ops (float casting), float32 activations."""
    from ai_edge_quantizer import algorithm_manager, quantizer

    quant = quantizer.Quantizer(fp32)
    for op in FP16_WEIGHT_OPS:
        quant.add_weight_only_config(".*", op, 16, algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    return quant.quantize(enable_progress_report=False).quantized_model


def check_outputs(path: str, sample: np.ndarray, reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Run the file (built-in kernels) through its signature and compare each output *by name*."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=path, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    signature = interpreter.get_signature_list().get(SIGNATURE_KEY)
    if signature is None or signature["inputs"] != ["images"] or sorted(signature["outputs"]) != sorted(reference):
        raise LitertWorkerError(f"signature {signature} does not have input 'images' and outputs {sorted(reference)}")
    outputs = interpreter.get_signature_runner(SIGNATURE_KEY)(images=sample)
    return {name: float(np.max(np.abs(outputs[name].astype(np.float64) - ref))) for name, ref in reference.items()}


def run_job(job: dict) -> dict:
    from mobilekit.converters.onnx2tf_child import analyze_tflite, signature_io

    sample = np.load(job["sample_npy"])
    start = time.perf_counter()
    fp32, reference = convert_fp32(job["program"], sample)
    fp32_seconds = time.perf_counter() - start
    result: dict = {"fp32_seconds": fp32_seconds, "variants": {}}
    for variant, target in job["targets"].items():
        start = time.perf_counter()
        kind = job["kinds"][variant]
        Path(target).write_bytes(fp32 if kind == "fp32" else convert_fp16(fp32))
        result["variants"][variant] = {
            "convert_seconds": time.perf_counter() - start,
            "io": signature_io(target),
            "max_abs_error_vs_pytorch": check_outputs(target, sample, reference),
            "analysis": analyze_tflite(target),
        }
    return result


def failure_details(exc: Exception) -> dict:
    """The operator litert-torch stopped at, for the parent's one-line error."""
    if isinstance(exc, LitertWorkerError):
        return {"error": str(exc), "op": exc.op}
    return {"error": f"{type(exc).__name__}: {str(exc)[:400]}", "op": failing_op(str(exc))}


if __name__ == "__main__":
    sys.exit(serve_job(run_job, failure_details))
