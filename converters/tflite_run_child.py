"""Run a TFLite file in a child process, so that a crash inside LiteRT or its XNNPACK delegate (e.g.
``double free`` while a quantised graph is prepared) becomes a reported failure of that file instead
of killing the caller.

Run as ``python -m mobilekit.converters.tflite_run_child MODEL INPUTS.npy OUTPUTS.npz THREADS xnnpack|builtin``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class IsolatedRun:
    """Outputs ``{name: [N, ...]}`` of every input image, or the ``error`` that stopped the child."""

    outputs: dict[str, np.ndarray] | None
    provider: str
    error: str | None = None


def run_isolated(path: str | Path, images: np.ndarray, num_threads: int = 2, xnnpack: bool = True, timeout_s: float = 600) -> IsolatedRun:
    """``images`` (``[N, H, W, 3]`` RGB 0-255) through ``path`` in a child process; never raises for
    what happens inside the interpreter."""
    kernels = "xnnpack" if xnnpack else "builtin"
    with tempfile.TemporaryDirectory(prefix="mobilekit_tflite_run_") as work:
        inputs, outputs = Path(work) / "inputs.npy", Path(work) / "outputs.npz"
        np.save(inputs, np.ascontiguousarray(images))
        command = [sys.executable, "-m", "mobilekit.converters.tflite_run_child", str(path), str(inputs), str(outputs), str(num_threads), kernels]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        try:
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return IsolatedRun(None, kernels, f"{kernels}: no answer within {timeout_s:.0f} s")
        if proc.returncode != 0 or not outputs.is_file():
            lines = [line.strip() for line in proc.stderr.splitlines() if line.strip() and not line.startswith(("INFO:", "W0000", "I0000"))]
            return IsolatedRun(None, kernels, f"{kernels}: exit status {proc.returncode}: {(lines or ['no output'])[-1][:300]}")
        with np.load(outputs) as data:
            provider = str(data["__provider__"])
            return IsolatedRun({k: data[k] for k in data.files if k != "__provider__"}, provider)


def main(model: str, inputs: str, outputs: str, threads: str, kernels: str) -> int:
    from mobilekit.converters.runtimes import TFLiteRuntime

    runtime = TFLiteRuntime(model, int(threads), xnnpack=kernels == "xnnpack")
    result = runtime.run(np.load(inputs))
    np.savez(outputs, __provider__=np.array(runtime.provider), **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
