"""Measure one case: model-only and end-to-end latency, in this process or in a fresh subprocess.

End-to-end = ``resize_to_input`` + layout/dtype conversion + inference + ``decode_outputs`` (decode,
threshold, NMS) on a real photo. Peak memory is measured only in a fresh subprocess per case
(the peak RSS of that process, and its growth over the RSS after imports: the runtime, model load
and runs), because RSS of a long-lived process says nothing about one backend.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mobilekit.benchmarks.backends import Runner, RuntimeRunner, TorchRunner
from mobilekit.benchmarks.cases import Case
from mobilekit.benchmarks.hardware import THREAD_ENV
from mobilekit.timing import TimingConfig, measure
from mobilekit.converters.runtimes import BackendUnavailable, OnnxRuntime, TFLiteRuntime
from mobilekit.errors import MobilekitError
from mobilekit.image_io import read_image, resize_to_input
from mobilekit.families import decode_outputs, family_of

MEMORY_METHOD = (
    "fresh subprocess per case: peak = VmHWM of /proc/self/status (peak RSS since exec; ru_maxrss would include "
    "the parent's RSS at fork); delta = peak - RSS after importing torch and the runtime"
)


def load_runner(case: Case) -> tuple[Runner, object]:
    """The runner of ``case`` and the model's ``DeployConfig`` (for decoding)."""
    from mobilekit.models import create_model

    if case.backend.startswith("torch"):
        from mobilekit.converters.model_source import build_source_model

        model = build_source_model(case.model, case.path, case.random_seed if case.path is None else None)
        mode = {"torch": "eager", "torch_channels_last": "channels_last", "torch_compile": "compile", "torch_fp16": "eager"}[case.backend]
        return TorchRunner(model, case.device, mode, fp16=case.backend == "torch_fp16"), model.deploy
    deploy = create_model(case.model).deploy
    if case.backend == "onnxruntime":
        return RuntimeRunner(case.backend, OnnxRuntime(case.path, case.threads, provider=case.provider)), deploy
    if case.backend == "tflite":
        return RuntimeRunner(case.backend, TFLiteRuntime(case.path, case.threads, xnnpack=case.provider != "builtin")), deploy
    raise ValueError(f"unknown backend {case.backend!r}")


def _file_bytes(case: Case) -> int | None:
    return Path(case.path).stat().st_size if case.path else None


def measure_case(case: Case, timing: TimingConfig, image: np.ndarray, score_threshold: float | None = None) -> dict:
    """Row for ``case`` measured in this process (memory not measured); unavailable backends give a row too.
    The end-to-end decode keeps faces at ``score_threshold`` (default: the model's app threshold)."""
    import cv2
    import torch

    row = {**case.to_dict(), "status": "ok", "reason": None, "file_bytes": _file_bytes(case)}
    if case.unavailable is not None:
        return {**row, "status": "unavailable", "reason": case.unavailable}
    previous_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(case.threads)
    cv2.setNumThreads(case.threads)
    try:
        runner, deploy = load_runner(case)
        post = family_of(deploy).postprocess(deploy, conf_threshold=score_threshold if score_threshold is not None else deploy.score_threshold)
        resized, _ = resize_to_input(image, case.imgsz, deploy.resize, deploy.pad_value)
        if isinstance(runner, TorchRunner):
            runner.check_compiles(resized)
        x = runner.make_input(resized)

        def end_to_end():
            frame, _ = resize_to_input(image, case.imgsz, deploy.resize, deploy.pad_value)
            outputs = runner.run(runner.make_input(frame))
            return decode_outputs(deploy, {k: v[0] for k, v in outputs.items()}, frame.shape[:2], post)

        model_only = measure(lambda: runner.run(x), timing, runner.sync)
        e2e = measure(end_to_end, timing, runner.sync)
        row.update(
            provider_used=runner.provider,
            layout=runner.layout,
            input_dtype=runner.input_dtype,
            model_only=model_only.to_dict(),
            end_to_end=e2e.to_dict(),
            detections=len(end_to_end()),
        )
    except BackendUnavailable as exc:
        row.update(status="unavailable", reason=str(exc))
    finally:
        torch.set_num_threads(previous_threads[0])
        cv2.setNumThreads(previous_threads[1])
    return row


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak RSS of this process image (``VmHWM``); ``ru_maxrss`` where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_isolated(case: Case, timing: TimingConfig, image_path: Path, score_threshold: float | None = None, timeout_s: float = 1800) -> dict:
    """Row for ``case`` measured in a fresh ``python`` process (adds ``memory``)."""
    if case.unavailable is not None:
        return {**case.to_dict(), "status": "unavailable", "reason": case.unavailable, "file_bytes": None}
    job = {"case": case.to_dict(), "timing": asdict(timing), "image": str(image_path), "score_threshold": score_threshold}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **{k: str(case.threads) for k in THREAD_ENV})
    row, failure = run_child("mobilekit.benchmarks.measure", job, env, timeout_s)
    if failure is not None:
        return {**case.to_dict(), "status": "error", "reason": failure, "file_bytes": _file_bytes(case)}
    return row


def run_child(module: str, job: dict, env: dict, timeout_s: float) -> tuple[dict | None, str | None]:
    """Run ``python -m module`` with ``job`` as JSON on stdin; its row is the last JSON line it prints.
    Returns ``(row, None)``, or ``(None, reason)`` when it timed out, crashed or printed no row."""
    try:
        proc = subprocess.run([sys.executable, "-m", module], input=json.dumps(job), env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout_s:.0f} s"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
        return None, f"benchmark subprocess failed: {tail[0][:300]}"
    return json.loads(lines[-1]), None


def child_entry(main) -> None:
    """``__main__`` of a benchmark subprocess: a user error is one line on stderr and exit status 2."""
    try:
        main()
    except MobilekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _child_main() -> None:
    """Subprocess entry: read a job (JSON) on stdin, print the row (JSON) as the last stdout line."""
    job = json.loads(sys.stdin.read())
    case = Case.from_dict(job["case"])
    if case.backend == "onnxruntime":
        import onnxruntime  # noqa: F401  (imported before the baseline: counts as import, not model)
    elif case.backend == "tflite":
        import ai_edge_litert.interpreter  # noqa: F401
    image = read_image(job["image"])
    baseline = rss_mb()
    row = measure_case(case, TimingConfig(**job["timing"]), image, job["score_threshold"])
    peak = peak_rss_mb()
    row["memory"] = {"peak_rss_mb": round(peak, 1), "delta_rss_mb": round(peak - baseline, 1), "method": MEMORY_METHOD}
    print(json.dumps(row))


if __name__ == "__main__":
    child_entry(_child_main)
