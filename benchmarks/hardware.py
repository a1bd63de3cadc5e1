"""The machine a benchmark ran on, and its measured fp32 matmul peak (numpy and torch).

The peak probe runs in a fresh subprocess per thread count, because numpy's BLAS thread pool is
fixed by environment variables when numpy is first imported.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

from mobilekit.converters.sidecars import tool_versions
from mobilekit.errors import MobilekitError

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine_description() -> dict:
    """CPU model, core counts, memory, load, GPU (if any) and the versions of every runtime."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": _total_memory_gb(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": tool_versions(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _best_gflops(matmul, n: int, seconds: float) -> float:
    """Best single-call GFLOP/s of an ``n x n`` fp32 matmul over ``seconds`` (after 2 warm-ups)."""
    matmul()
    matmul()
    best = float("inf")
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        matmul()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def probe_in_process(threads: int, n: int = 1024, seconds: float = 0.5) -> dict[str, float]:
    """fp32 matmul peak at ``threads`` in this process (numpy uses whatever pool it started with)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    numpy_gflops = _best_gflops(lambda: a @ b, n, seconds)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        torch_gflops = _best_gflops(lambda: torch.mm(ta, tb), n, seconds)
    finally:
        torch.set_num_threads(previous)
    return {"threads": threads, "matrix_size": n, "numpy_gflops": round(numpy_gflops, 1), "torch_gflops": round(torch_gflops, 1)}


def matmul_peak(threads: int, n: int = 1024, seconds: float = 0.5) -> dict[str, float]:
    """fp32 matmul peak GFLOP/s for numpy and torch at ``threads``, each in a fresh subprocess."""
    env = dict(os.environ, **{k: str(threads) for k in THREAD_ENV})
    code = f"import json; from mobilekit.benchmarks.hardware import probe_in_process; print(json.dumps(probe_in_process({threads}, {n}, {seconds})))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MobilekitError(f"matmul peak probe at {threads} threads failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
