"""The sections of the device check (``benchmarks/gpu_check.py``). Each returns a dict with ``status``
(``ok`` or ``error``) and its rows; a row that cannot run on this machine (a missing provider or
package) is ``unavailable`` with the reason, one that fails is ``error`` with the message."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from mobilekit.converters.runtimes import BackendUnavailable
from mobilekit.models import list_models

OPTIONAL_PACKAGES = ("onnxruntime", "onnx", "tensorrt", "triton", "tensorboard", "matplotlib")
DDP_TOLERANCE = {"cuda": 2e-3, "cpu": 1e-5}  # relative, per step (cuDNN algorithm choice, TF32)


@dataclass(frozen=True)
class CheckPlan:
    """Sizes and counts of one device check (the full GPU run or the CPU dry run)."""

    device: str
    imgsz: int
    batch: int
    models: tuple[str, ...]
    steps: int
    warmup: int
    compile: bool
    compile_note: str | None
    synth_images: int
    synth_imgsz: int
    epochs: int
    latency_batches: tuple[int, ...]
    latency_runs: int
    loader_workers: tuple[int, ...]
    loader_batches: int
    compile_budget_s: float
    tensorrt_budget_s: float


def full_plan(models: tuple[str, ...], cpus: int) -> CheckPlan:
    """The GPU run: 640 px, batch 32 and auto, eager and compiled, about 6 minutes on an H200."""
    workers = tuple(sorted({1, max(1, cpus // 4), max(1, cpus // 2), cpus}))
    return CheckPlan("cuda", 640, 32, models, 10, 3, True, None, 256, 640, 2, (1, 32), 50, workers, 12, 150.0, 60.0)


def dry_plan(models: tuple[str, ...], compile_on_cpu: bool) -> CheckPlan:
    """The CPU dry run: the same code paths at 64 px, batch 2, one or two steps."""
    note = None if compile_on_cpu else "skipped on CPU: torch.compile takes ~90 s per model on a small CPU (--cpu-compile runs it)"
    return CheckPlan("cpu", 64, 2, models, 1, 1, compile_on_cpu, note, 14, 128, 2, (1, 2), 2, (0, 1), 2, 600.0, 0.0)


def guarded(fn: Callable[[], dict], **ident) -> dict:
    """``fn()``'s row with ``ident``; an unusable backend becomes ``unavailable``, any failure ``error``."""
    try:
        return {**ident, "status": "ok", **fn()}
    except BackendUnavailable as exc:
        return {**ident, "status": "unavailable", "reason": str(exc)}
    except Exception as exc:  # one failing case must not lose the others; the message is kept
        return {**ident, "status": "error", "reason": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)[-2000:]}


def section_status(rows: list[dict]) -> str:
    return "error" if any(row["status"] == "error" for row in rows) else "ok"


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _release() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- environment ----------------------------------------------------------------------------------
def environment(plan: CheckPlan) -> dict:
    """Machine, versions, and which optional packages and ONNX Runtime providers exist (none imported)."""
    from mobilekit.benchmarks.hardware import machine_description

    info = {"status": "ok", "machine": machine_description(), "plan": asdict(plan), "torch": torch.__version__}
    info["optional_packages"] = {name: importlib.util.find_spec(name) is not None for name in OPTIONAL_PACKAGES}
    info["tensorflow_installed"] = importlib.util.find_spec("tensorflow") is not None
    if info["optional_packages"]["onnxruntime"]:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["cuda"] = {"device": props.name, "memory_gb": round(props.total_memory / 2**30, 1), "torch_cuda": torch.version.cuda,
                        "cudnn": torch.backends.cudnn.version(), "bf16": torch.cuda.is_bf16_supported(), "nccl": torch.cuda.nccl.version()}  # fmt: skip
    elif plan.device == "cuda":
        info.update(status="error", reason="torch.cuda.is_available() is False on a --device cuda run")
    return info


# -- (1) training throughput ----------------------------------------------------------------------
def _auto_batch(model_name: str, plan: CheckPlan) -> int:
    from mobilekit.families import build_criterion
    from mobilekit.models import create_model
    from mobilekit.training.autobatch import auto_batch_size

    device = torch.device(plan.device)
    model = create_model(model_name).train().to(device, memory_format=torch.channels_last)
    criterion = build_criterion(model, (plan.imgsz, plan.imgsz)).to(device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    batch = auto_batch_size(model, criterion, plan.imgsz, device, amp, lambda message: None)
    del model, criterion
    _release()
    return batch


def training(plan: CheckPlan) -> dict:
    """Steps/s and images/s per model at batch ``plan.batch`` and ``--batch auto``, eager and compiled,
    bf16 autocast (CUDA) and channels_last."""
    from mobilekit.benchmarks.training import TrainCase, measure_training

    rows, compile_start, compile_spent = [], None, 0.0
    for model in plan.models:
        for batch_label in (str(plan.batch), "auto"):
            batch = plan.batch if batch_label != "auto" else None
            for compiled in (False, True):
                ident = {"model": model, "batch_option": batch_label, "mode": "compile" if compiled else "eager"}
                if compiled and not plan.compile:
                    rows.append({**ident, "status": "skipped", "reason": plan.compile_note})
                    continue
                if compiled and compile_spent > plan.compile_budget_s:
                    rows.append({**ident, "status": "skipped", "reason": f"compile time budget ({plan.compile_budget_s:.0f} s) spent"})
                    continue
                compile_start = time.perf_counter()

                def measure() -> dict:
                    size = batch if batch is not None else _auto_batch(model, plan)
                    case = TrainCase(model, plan.imgsz, size, plan.device, usable_cores(), amp=True, channels_last=True, compile=compiled)
                    row = measure_training(case, plan.steps, plan.warmup)
                    return {**row, "steps_per_s": 1e3 / row["step_ms"]["mean_ms"]}

                rows.append(guarded(measure, **ident))
                if compiled:
                    compile_spent += time.perf_counter() - compile_start
                    torch._dynamo.reset()
                _release()
    return {"status": section_status(rows), "rows": rows}


# -- (2) DDP over NCCL ------------------------------------------------------------------------------
def ddp(plan: CheckPlan, data: Path) -> dict:
    """``torchrun --nproc_per_node 1`` with DDP kept on: its losses must equal the plain run's."""
    batch = min(plan.batch, 8)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "mobilekit.benchmarks.ddp_check",
               "--data", str(data), "--device", plan.device, "--imgsz", str(plan.imgsz), "--batch", str(batch), "--steps", "3"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    result = {"command": " ".join(command[1:]), "seconds": time.perf_counter() - start, "returncode": proc.returncode}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {**result, "status": "error", "reason": "torchrun failed", "stderr_tail": proc.stderr[-3000:]}
    result.update(json.loads(lines[-1]))
    tolerance = DDP_TOLERANCE["cuda" if plan.device.startswith("cuda") else "cpu"]
    diffs = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(result["plain_losses"], result["ddp_losses"])]
    result.update(max_relative_difference=max(diffs), tolerance=tolerance)
    same = len(result["plain_losses"]) == len(result["ddp_losses"]) > 0 and max(diffs) <= tolerance
    return {**result, "status": "ok" if same else "error", **({} if same else {"reason": "DDP losses differ from the plain run's"})}


# -- (3) a short training run, then mobilekit eval --------------------------------------------------
def _run(command: list[str], timeout: float) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    row = {"command": " ".join(command[2:]), "returncode": proc.returncode, "seconds": time.perf_counter() - start}
    if proc.returncode != 0:
        row["stderr_tail"] = proc.stderr[-3000:]
    return row


def train_eval(plan: CheckPlan, data: Path, out: Path, workers: int) -> dict:
    """``mobilekit train`` featherface_v1 for ``plan.epochs`` epochs (AMP on CUDA), then ``mobilekit eval``."""
    run_dir = out / "train_featherface_v1"
    config = out / "train_config.yaml"
    config.write_text("tensorboard: false\n")  # TensorBoard is optional on the device machine
    mobilekit = [sys.executable, "-m", "mobilekit"]
    train_cmd = mobilekit + ["train", "--model", "featherface_v1", "--data", str(data), "--epochs", str(plan.epochs), "--batch", str(plan.batch),
                             "--imgsz", str(plan.imgsz), "--device", plan.device, "--workers", str(workers), "--out", str(run_dir),
                             "--config", str(config), "--no-progress", "--amp" if plan.device == "cuda" else "--no-amp"]  # fmt: skip
    train_row = _run(train_cmd, 600)
    result: dict = {"train": train_row}
    if train_row["returncode"] == 0:
        with (run_dir / "results.csv").open() as f:
            result["epochs"] = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
        metrics = out / "eval.json"
        eval_cmd = mobilekit + ["eval", "--model", "featherface_v1", "--weights", str(run_dir / "best_weights.pth"), "--data", str(data),
                                "--imgsz", str(plan.imgsz), "--device", plan.device, "--json", str(metrics)]  # fmt: skip
        result["eval"] = _run(eval_cmd, 300)
        if result["eval"]["returncode"] == 0:
            result["eval"]["metrics"] = json.loads(metrics.read_text())
    ok = train_row["returncode"] == 0 and result.get("eval", {}).get("returncode") == 0
    return {**result, "status": "ok" if ok else "error", **({} if ok else {"reason": "mobilekit train or eval failed (see stderr_tail)"})}


# -- (4) inference latency ----------------------------------------------------------------------------
def _torch_latency(model_name: str, plan: CheckPlan, batch: int, fp16: bool) -> dict:
    from mobilekit.timing import TimingConfig, measure
    from mobilekit.models import DeployModule, create_model

    if fp16 and plan.device != "cuda":
        raise BackendUnavailable("fp16 autocast is measured on CUDA only")
    device = torch.device(plan.device)
    module = DeployModule(create_model(model_name)).eval().to(device)
    x = torch.rand(batch, 3, plan.imgsz, plan.imgsz, device=device) * 255
    autocast = torch.autocast("cuda", dtype=torch.float16) if fp16 else contextlib.nullcontext()

    def call() -> None:
        with torch.inference_mode(), autocast:
            module(x)

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    stats = measure(call, TimingConfig(warmup=min(plan.latency_runs, 10), runs=plan.latency_runs, min_seconds=0.0), sync)
    return {"latency_ms": stats.to_dict(), "images_per_s": batch * 1e3 / stats.mean_ms, "provider_used": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}


def onnx_name(model_name: str, imgsz: int) -> str:
    return f"{model_name}_{imgsz}_batch1.onnx"


def export_batch1_onnx(model_name: str, imgsz: int, path: Path) -> Path:
    """The model's deploy graph (random weights: latency only) as ONNX at batch 1; torch's exporter needs the onnx package."""
    from mobilekit.models import DeployModule, create_model

    if importlib.util.find_spec("onnx") is None:
        raise BackendUnavailable("the onnx package is not installed: export the files elsewhere with --export-onnx DIR and pass --onnx-dir DIR")
    module = DeployModule(create_model(model_name)).eval()
    example = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)) * 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, input_names=["input"], output_names=list(module.model.deploy.output_names))
    return path


def _onnx_file(model_name: str, imgsz: int, onnx_dir: Path | None, scratch: Path) -> dict:
    """A pre-exported file from ``onnx_dir`` when there is one, else an export into ``scratch``."""
    given = onnx_dir / onnx_name(model_name, imgsz) if onnx_dir else None
    if given is not None and given.is_file():
        return {"path": str(given), "source": "--onnx-dir", "file_bytes": given.stat().st_size}
    path = export_batch1_onnx(model_name, imgsz, scratch / onnx_name(model_name, imgsz))
    return {"path": str(path), "source": "exported now", "file_bytes": path.stat().st_size}


def _ort_latency(path: Path, provider: str, plan: CheckPlan) -> dict:
    import numpy as np

    from mobilekit.timing import TimingConfig, measure
    from mobilekit.converters.runtimes import OnnxRuntime

    if importlib.util.find_spec("onnxruntime") is None:
        raise BackendUnavailable("onnxruntime is not installed")
    start = time.perf_counter()
    runtime = OnnxRuntime(path, num_threads=usable_cores(), provider=provider)
    x = runtime.prepare(np.random.default_rng(0).uniform(0, 255, (1, plan.imgsz, plan.imgsz, 3)).astype(np.float32))
    runtime.infer(x)  # TensorRT builds its engine here
    first_s = time.perf_counter() - start
    stats = measure(lambda: runtime.infer(x), TimingConfig(warmup=min(plan.latency_runs, 10), runs=plan.latency_runs, min_seconds=0.0))
    return {"latency_ms": stats.to_dict(), "images_per_s": 1e3 / stats.mean_ms, "provider_used": runtime.provider, "session_and_first_call_s": first_s}


def inference(plan: CheckPlan, onnx_dir: Path | None = None) -> dict:
    """PyTorch fp32/fp16 at each of ``plan.latency_batches``; ONNX Runtime (CUDA, TensorRT; CPU in the dry run) at batch 1."""
    rows: list[dict] = []
    providers = ("cuda", "tensorrt") if plan.device == "cuda" else ("cpu",)
    tensorrt_spent = 0.0
    with tempfile.TemporaryDirectory(prefix="mobilekit_gpu_check_onnx_") as scratch:
        for model in plan.models:
            for batch in plan.latency_batches:
                for fp16 in (False, True):
                    rows.append(guarded(lambda: _torch_latency(model, plan, batch, fp16), model=model, backend="torch", precision="fp16" if fp16 else "fp32", batch=batch))
                    _release()
            exported = guarded(lambda: _onnx_file(model, plan.imgsz, onnx_dir, Path(scratch)), model=model, backend="onnx_file")
            rows.append(exported)
            if exported["status"] != "ok":
                continue
            path = Path(exported["path"])
            for provider in providers:
                ident = {"model": model, "backend": f"onnxruntime_{provider}", "precision": "fp32", "batch": 1}
                if provider == "tensorrt" and tensorrt_spent > plan.tensorrt_budget_s:
                    rows.append({**ident, "status": "skipped", "reason": f"TensorRT engine-build budget ({plan.tensorrt_budget_s:.0f} s) spent"})
                    continue
                start = time.perf_counter()
                rows.append(guarded(lambda: _ort_latency(path, provider, plan), **ident))
                if provider == "tensorrt":
                    tensorrt_spent += time.perf_counter() - start
    return {"status": section_status(rows), "rows": rows}


# -- (5) the data pipeline alone ----------------------------------------------------------------------
def data_pipeline(plan: CheckPlan, data: Path) -> dict:
    """Images/s that N DataLoader workers deliver (pinned memory on CUDA), both augmentations."""
    from mobilekit.benchmarks.data_pipeline import loader_rate
    from mobilekit.data.dataset import FaceDataset, detection_collate

    rows = []
    for mode in ("crop_stretch", "letterbox"):
        dataset = FaceDataset(data, "train", plan.imgsz, augment=True, mode=mode)
        for workers in plan.loader_workers:
            rows.append(guarded(lambda: loader_rate(dataset, detection_collate, workers, plan.batch, plan.loader_batches, plan.device == "cuda"),
                                mode=mode, workers=workers))  # fmt: skip
    return {"status": section_status(rows), "data": f"synthetic, {plan.synth_images} images at {plan.synth_imgsz} px", "rows": rows}


def verdict(report: dict) -> list[dict]:
    """Per model: eager batch-``plan.batch`` training images/s against the best data-loader rate of its augmentation."""
    from mobilekit.families import family_of
    from mobilekit.models import create_model

    sections = report["sections"]
    loader_rows = [r for r in sections.get("data_pipeline", {}).get("rows", []) if r["status"] == "ok"]
    out = []
    for row in sections.get("training", {}).get("rows", []):
        if row["status"] != "ok" or row["mode"] != "eager" or row["batch_option"] == "auto":
            continue
        mode = family_of(create_model(row["model"]).deploy).augmentation
        rates = [r for r in loader_rows if r["mode"] == mode]
        if not rates:
            continue
        best = max(rates, key=lambda r: r["images_per_s"])
        bound = "input pipeline" if best["images_per_s"] < row["images_per_s"] else "GPU step" if plan_device(report) == "cuda" else "training step"
        out.append({"model": row["model"], "train_images_per_s": row["images_per_s"], "loader_images_per_s": best["images_per_s"],
                    "loader_workers": best["workers"], "limited_by": bound})  # fmt: skip
    return out


def plan_device(report: dict) -> str:
    return report["sections"].get("environment", {}).get("plan", {}).get("device", "cpu")


def all_models() -> tuple[str, ...]:
    return tuple(list_models())
