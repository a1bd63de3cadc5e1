"""The half that runs on the emulated ARM64 CPU: Debian's arm64 python3.11 with LiteRT's aarch64 wheel.

Imports numpy and ai_edge_litert only (mobilekit is not installed in the guest). Run as
``python3.11 arm_guest.py JOB.json``; the job (written by :mod:`mobilekit.converters.arm_emulation`) lists
models, each with its input tensors already in the model's dtype (``[N, *input shape]`` in an ``.npy``),
the input tensor index, the output tensor indices by name, and where to write the raw outputs (``.npz``).
Every model runs through LiteRT's default XNNPACK delegate on ``threads`` threads.

With ``count`` > 0, after the inputs (the warm-up), ``count`` more invokes are each wrapped in the marker
system calls that ``mobilekit/native/arm_count_plugin.c`` counts between: ``getpid`` (aarch64 number 172) with x0 =
:data:`MARKER_MAGIC` and x1 = 1 (start) or 2 (stop). One empty start/stop pair comes first: the markers'
own instructions, which the host subtracts.
"""

import ctypes
import gc
import json
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter

AARCH64_GETPID = 172
MARKER_MAGIC = 0x6D6B6974636F756E  # "mkitcoun", as in arm_count_plugin.c
MARKER_START, MARKER_STOP = 1, 2
_libc = ctypes.CDLL(None)


def mark(kind: int) -> None:
    _libc.syscall(AARCH64_GETPID, ctypes.c_uint64(MARKER_MAGIC), ctypes.c_uint64(kind))


def run_model(model: dict, threads: int, count: int) -> None:
    interpreter = Interpreter(model_path=model["path"], num_threads=threads)
    interpreter.allocate_tensors()
    partitions = sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
    outputs = {name: [] for name in model["outputs"]}
    for x in np.load(model["input"]):
        interpreter.set_tensor(model["input_index"], x)
        interpreter.invoke()
        for name, index in model["outputs"].items():
            outputs[name].append(interpreter.get_tensor(index))
    for _ in range(count):
        mark(MARKER_START)
        interpreter.invoke()
        mark(MARKER_STOP)
    np.savez(model["out"], __partitions__=np.array(partitions), **{name: np.concatenate(values) for name, values in outputs.items()})


def main(job_path: str) -> int:
    with open(job_path) as handle:
        job = json.load(handle)
    if job["count"]:
        gc.disable()  # a collection between two markers would be counted too
        mark(MARKER_START)
        mark(MARKER_STOP)
    for model in job["models"]:
        run_model(model, job["threads"], job["count"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
