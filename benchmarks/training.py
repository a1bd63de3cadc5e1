"""Training-step benchmark: images/s and peak memory of full training steps (forward, each model's own
loss, backward, AdamW update) on random images with three faces each.

Every case runs in a fresh ``python`` process (``measure_training_isolated``), so its peak memory is its
own: on CPU the process's peak RSS (``VmHWM``) minus its RSS before the model was built; on CUDA
``torch.cuda.max_memory_allocated``. CUDA steps are timed between ``torch.cuda.synchronize`` calls and
can use AMP (bf16 where supported, else fp16 with a GradScaler, as ``mobilekit train --amp``) and
channels_last.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch
from rich.table import Table

from mobilekit.benchmarks.hardware import THREAD_ENV
from mobilekit.benchmarks.measure import child_entry, peak_rss_mb, rss_mb, run_child
from mobilekit.timing import LatencyStats
from mobilekit.errors import MobilekitError
from mobilekit.families import build_criterion
from mobilekit.models import create_model


@dataclass(frozen=True)
class TrainCase:
    model: str
    imgsz: int
    batch: int
    device: str = "cpu"
    threads: int = 1
    amp: bool = False
    channels_last: bool = False
    compile: bool = False  # torch.compile the model; its compilation time is the first warm-up step's


def synthetic_batch(batch: int, imgsz: int, seed: int = 0, num_keypoints: int = 5) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Random RGB images with three faces each (normalised target rows with ``num_keypoints`` keypoints)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, imgsz, imgsz, generator=gen) * 255
    face = torch.tensor([[0.1, 0.1, 0.3, 0.35], [0.5, 0.2, 0.6, 0.32], [0.4, 0.6, 0.8, 0.95]])
    points = face[:, :2].repeat(1, num_keypoints) + 0.5 * (face[:, 2:] - face[:, :2]).repeat(1, num_keypoints)
    target = torch.cat([face, points, torch.ones(3, 1)], dim=1)
    return images, [target.clone() for _ in range(batch)]


def measure_training(case: TrainCase, steps: int = 3, warmup: int = 1) -> dict:
    """Time ``steps`` training steps after ``warmup`` untimed ones in this process; the row for ``case``."""
    device = torch.device(case.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MobilekitError("--device cuda was requested but torch.cuda.is_available() is False")
    if device.type == "cpu":
        torch.set_num_threads(case.threads)
    use_amp = case.amp and device.type == "cuda"
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
    memory_format = torch.channels_last if case.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = create_model(case.model).train().to(device, memory_format=memory_format)
    forward = torch.compile(model) if case.compile else model
    criterion = build_criterion(model, (case.imgsz, case.imgsz))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    images, targets = synthetic_batch(case.batch, case.imgsz, num_keypoints=model.deploy.num_landmarks)
    images = images.to(device).contiguous(memory_format=memory_format)
    targets = [t.to(device) for t in targets]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    samples, loss, first_step_s = [], torch.zeros(()), 0.0
    for step in range(warmup + steps):
        sync()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss, _ = criterion(forward(images), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sync()
        if step == 0:
            first_step_s = time.perf_counter() - start
        if step >= warmup:
            samples.append((time.perf_counter() - start) * 1e3)
    if not torch.isfinite(loss):
        raise MobilekitError(f"{case.model}: the training loss is {loss.item()} (not finite)")
    stats = LatencyStats.from_samples(samples)
    row = {**asdict(case), "status": "ok", "images_per_s": case.batch * 1e3 / stats.mean_ms, "step_ms": stats.to_dict(), "loss": float(loss), "first_step_s": first_step_s}
    row["amp_dtype"] = str(amp_dtype).replace("torch.", "") if amp_dtype else None
    if device.type == "cuda":
        row["memory"] = {"peak_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1), "method": "torch.cuda.max_memory_allocated"}
    return row


def measure_training_isolated(case: TrainCase, steps: int = 3, warmup: int = 1, timeout_s: float = 3600) -> dict:
    """``measure_training`` in a fresh process (CPU: adds the step's peak RSS); failures become error rows."""
    job = {"case": asdict(case), "steps": steps, "warmup": warmup}
    env = dict(os.environ, **{k: str(case.threads) for k in THREAD_ENV})
    row, failure = run_child("mobilekit.benchmarks.training", job, env, timeout_s)
    return row if failure is None else {**asdict(case), "status": "error", "reason": failure}


def training_table(report: dict) -> Table:
    """One line per case: images/s, step time and the step's peak memory."""
    table = Table(title=f"mobilekit training benchmark - {report['machine']['cpu_model']}")
    for column in ("model", "device", "size", "batch", "threads", "amp", "images/s", "step median ms", "step min ms", "peak MB", "status"):
        table.add_column(column, justify="left" if column in ("model", "device", "status") else "right")
    for row in report["rows"]:
        ok = row["status"] == "ok"
        step = row.get("step_ms") or {}
        table.add_row(
            row["model"], row["device"], str(row["imgsz"]), str(row["batch"]), str(row["threads"]), row.get("amp_dtype") or "-",
            f"{row['images_per_s']:.2f}" if ok else "-", f"{step['median_ms']:.0f}" if ok else "-", f"{step['min_ms']:.0f}" if ok else "-",
            f"{row['memory']['peak_mb']:.0f}" if ok else "-", "ok" if ok else f"[yellow]{row['status']}: {row['reason']}[/]",
        )
    return table


def _child_main() -> None:
    job = json.loads(sys.stdin.read())
    baseline = rss_mb()
    row = measure_training(TrainCase(**job["case"]), job["steps"], job["warmup"])
    if "memory" not in row:
        peak = peak_rss_mb()
        row["memory"] = {"peak_mb": round(peak - baseline, 1), "method": "peak RSS (VmHWM) of a fresh process minus its RSS before the model was built"}
    print(json.dumps(row))


if __name__ == "__main__":
    child_entry(_child_main)
