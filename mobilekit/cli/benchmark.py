"""``mobilekit benchmark``: latency of every model and format (PyTorch, ONNX Runtime, TFLite) on CPU or GPU."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mobilekit.benchmarks.report import RESULTS_DIR
from mobilekit.cli.options import check_device, check_int_list, check_int_list_or_zero, check_sizes
from mobilekit.errors import CheckFailed, MobilekitError

ALL_BACKENDS = ("torch", "torch_channels_last", "torch_compile", "onnxruntime", "tflite", "tflite_builtin")
DEFAULT_BACKENDS = "torch,torch_channels_last,torch_compile,onnxruntime,tflite"


def parse_int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MobilekitError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise MobilekitError(f"{option} takes positive integers, got {text!r}")
    return sorted(set(values))


def parse_counts(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2] (checked while parsing by ``check_int_list_or_zero``)."""
    return sorted({int(v) for v in text.split(",") if v.strip()})


def parse_sizes(text: str | None) -> list[tuple[int, int]]:
    """``"320,640"`` -> [(320, 320), (640, 640)]; ``"480x640"`` -> [(480, 640)] (H x W)."""
    if not text:
        return []
    from mobilekit.config import parse_size

    try:
        return list(dict.fromkeys(parse_size(item.strip()) for item in text.split(",") if item.strip()))
    except ValueError as exc:
        raise MobilekitError(f"--imgsz: {exc} (use e.g. 320,640 or 480x640)") from None


def benchmark_device(device: str) -> str:
    """The device benchmarks run on, ``cpu`` or ``cuda``, from a ``--device`` that ``check_device`` accepted
    (``auto``: CUDA when PyTorch or ONNX Runtime can use it); asking for CUDA without it is an error."""
    import onnxruntime as ort
    import torch

    usable = torch.cuda.is_available() or "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        return "cuda" if usable else "cpu"
    if device not in ("cpu", "cuda"):
        raise MobilekitError(f"--device {device}: benchmarks run on cpu or cuda (the current CUDA device)")
    if device == "cuda" and not usable:
        raise MobilekitError(
            "--device cuda was requested but no CUDA device is usable: torch.cuda.is_available() is False "
            f"and onnxruntime offers only {ort.get_available_providers()}"
        )
    return device


def benchmark(
    targets: list[str] = typer.Argument(..., help="Export folders/files (from `mobilekit export`) or registered model names."),
    device: str = typer.Option("cpu", "--device", callback=check_device, help="cpu, cuda or auto."),
    threads: Optional[str] = typer.Option(None, "--threads", callback=check_int_list, help="CPU thread counts, e.g. 1,2,4 (default: 1 and all usable cores)."),
    runs: int = typer.Option(50, "--runs", min=1, help="At least this many timed runs per measurement."),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Untimed warm-up runs."),
    min_seconds: float = typer.Option(2.0, "--min-seconds", min=0.0, help="Keep timing for at least this long."),
    imgsz: Optional[str] = typer.Option(None, "--imgsz", callback=check_sizes, help="Input sizes, e.g. 320,640 or 480x640 (default: each export's size; for model names 640, BlazeFace its own)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint for the PyTorch rows (default: the export's recorded weights, else random init)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Photo for end-to-end timing (default: a shared test photo)."),
    backends: str = typer.Option(DEFAULT_BACKENDS, "--backends", help=f"Subset of {','.join(ALL_BACKENDS)} (tflite_builtin: TFLite with XNNPACK off)."),
    conf: Optional[float] = typer.Option(None, "--conf", min=0.0, max=1.0, help="Score threshold of the end-to-end decode (default: each model's app threshold, 0.5)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report here (default: OUT_DIR/benchmark_DEVICE_TIME.json)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the PNG chart here (default: next to the JSON)."),
    out_dir: Path = typer.Option(RESULTS_DIR, "--out-dir", help="Folder for the default JSON/PNG names (relative to the working directory)."),
    isolate: bool = typer.Option(True, "--isolate/--in-process", help="Fresh subprocess per case (measures peak memory) or all in this process."),
    peak: bool = typer.Option(True, "--peak/--no-peak", help="Probe the fp32 matmul peak (numpy and torch) at each thread count."),
    arm_count: Optional[str] = typer.Option(None, "--arm-count", help="Also count each TFLite file's instructions per invoke on these emulated ARM64 CPUs, e.g. cortex-a53,neoverse-n1 (deterministic; set up with mobilekit arm-setup)."),
    arm_cache: Optional[Path] = typer.Option(None, "--arm-cache", help="--arm-count: the folder mobilekit arm-setup filled (default: $MOBILEKIT_ARM_CACHE, else ~/.cache/mobilekit/arm)."),
) -> None:
    """Measure latency (median, p90, p99, mean +- std, FPS), model-only and end-to-end, file size, peak
    memory, MACs and achieved GFLOP/s against the machine's matmul peak.

    Exit status 2 for a file that is not a readable model, 1 when a measurement failed (its row says why).

    Examples:

      mobilekit benchmark exports/ --threads 1,2 --json benchmarks/results/cpu.json

      mobilekit benchmark retinaface_mnet025 --weights retinaface_mnet025_widerface.pth --imgsz 320,640

      mobilekit benchmark exports/ --device cuda --runs 200

      mobilekit benchmark exports/ --backends tflite --threads 1 --arm-count cortex-a53,neoverse-n1
    """
    from mobilekit.benchmarks.cases import default_image, default_threads, plan_cases
    from mobilekit.benchmarks.report import plot_report, print_report, write_json
    from mobilekit.benchmarks.suite import run_suite
    from mobilekit.timing import TimingConfig

    device = benchmark_device(device)
    chosen = tuple(b.strip() for b in backends.split(",") if b.strip())
    unknown = [b for b in chosen if b not in ALL_BACKENDS]
    if unknown or not chosen:
        raise MobilekitError(f"--backends: unknown {unknown}; choose from {','.join(ALL_BACKENDS)}")
    if weights is not None and not weights.is_file():
        raise MobilekitError(f"weights file not found: {weights}")
    image_path = image if image is not None else default_image()
    if not image_path.is_file():
        raise MobilekitError(f"image not found: {image_path}")
    try:
        timing = TimingConfig(warmup=warmup, runs=runs, min_seconds=min_seconds)
    except ValueError as exc:
        raise MobilekitError(str(exc)) from None
    thread_counts = parse_int_list(threads, "--threads") if threads else default_threads()
    arm = arm_counting(arm_count, arm_cache) if arm_count else None
    console = Console(stderr=True)
    json_path = json_out or out_dir / f"benchmark_{device}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    with tempfile.TemporaryDirectory(prefix="mobilekit_bench_onnx_") as scratch:
        cases = plan_cases(targets, parse_sizes(imgsz), thread_counts, device, chosen, str(weights) if weights else None, Path(scratch))
        if not cases:
            raise MobilekitError(f"nothing to benchmark for {targets} with --backends {','.join(chosen)} --device {device} --imgsz {imgsz}")
        if arm and not any(case.backend == "tflite" and case.path for case in cases):
            raise MobilekitError("--arm-count: no TFLite file among the targets (pass export folders or .tflite files, --backends with tflite)")
        console.print(f"{len(cases)} measurements on {device}, threads {thread_counts}, image {image_path.name}")

        def progress(partial: dict, row: dict) -> None:
            status = f"{row['model_only']['median_ms']:.2f} ms ({row['provider_used']})" if row["status"] == "ok" else f"{row['status']}: {row['reason']}"
            console.print(f"  {row['model']} {row['label']} {'x'.join(map(str, row['imgsz']))} t{row['threads']}: {status}")
            write_json(partial, json_path)  # an interrupted run keeps the rows measured so far

        report = run_suite(cases, timing, image_path, conf, isolate, peak, progress)
    if arm:
        from mobilekit.benchmarks.arm_count import attach_to_benchmark

        console.print(f"instructions per invoke on emulated {', '.join(arm[1])}:")
        attach_to_benchmark(report, *arm, image_path, on_row=lambda row, cpu: console.print(f"  {row['file']} on {cpu}: {row['instructions'].get(cpu, row['errors'].get(cpu))}"))
    print_report(report, Console())
    write_json(report, json_path)
    plot_path = plot_report(report, plot or json_path.with_suffix(".png"))
    console.print(f"report written to {json_path} and {plot_path}")
    failed = [row for row in report["rows"] if row["status"] == "error"]
    if failed:
        first = failed[0]
        raise CheckFailed(f"{len(failed)} of {len(report['rows'])} measurements failed, e.g. {first['model']} {first['label']} t{first['threads']}: {first['reason']}")


def arm_counting(cpus: str, cache_dir: Optional[Path]) -> tuple:
    """(cache, CPUs) of --arm-count, checked before any timing (one line and exit 2 otherwise)."""
    from mobilekit.converters.arm_emulation import parse_cpus
    from mobilekit.converters.arm_setup import require_ready

    cache = require_ready(cache_dir)
    return cache, parse_cpus(cpus, cache)


def benchmark_train(
    models: Optional[list[str]] = typer.Argument(None, help="Registered model names (none with --data-only)."),
    imgsz: int = typer.Option(640, "--imgsz", min=32, help="Square training input size."),
    batch: str = typer.Option("2,4", "--batch", callback=check_int_list, help="Batch sizes, e.g. 2,4,8."),
    device: str = typer.Option("cpu", "--device", callback=check_device, help="cpu, cuda or auto."),
    threads: int = typer.Option(1, "--threads", min=1, help="CPU threads (torch.set_num_threads)."),
    amp: bool = typer.Option(False, "--amp", help="CUDA: autocast (bf16 where supported, else fp16 + GradScaler)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="channels_last model and input."),
    steps: int = typer.Option(3, "--steps", min=1, help="Timed training steps per case."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed steps first."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the rows here (default: benchmarks/results/training_DEVICE_TIME.json under the working directory)."),
    data_only: bool = typer.Option(False, "--data-only", help="Measure the data pipeline alone (images/s per worker, MB per batch of the largest --batch)."),
    data: Optional[Path] = typer.Option(None, "--data", help="--data-only: dataset root or label.txt (default: the shared photos, pseudo-labelled)."),
    reference_repo: Optional[Path] = typer.Option(None, "--reference-repo", help="--data-only: a Pytorch_Retinaface checkout to measure its WiderFaceDetection + preproc."),
    workers: str = typer.Option("0,1", "--workers", callback=check_int_list_or_zero, help="--data-only: DataLoader worker counts, e.g. 0,1,2."),
    rounds: int = typer.Option(5, "--rounds", min=1, help="--data-only: interleaved passes over the dataset per pipeline."),
) -> None:
    """Training throughput (images/s, step time) and the peak memory of one training step, each case in a
    fresh process: forward, the model's own loss, backward and AdamW on random images with three faces.
    With --data-only: the data pipeline alone (see benchmarks/README.md).

    Examples:

      mobilekit benchmark-train featherface_v1 adyolov5_face --imgsz 640 --batch 2,4

      mobilekit benchmark-train featherface_v2 --device cuda --amp --channels-last --batch 32,64

      mobilekit benchmark-train --data-only --reference-repo Pytorch_Retinaface/ --batch 32 --workers 0,2
    """
    from mobilekit.benchmarks.hardware import machine_description
    from mobilekit.benchmarks.report import write_json
    from mobilekit.benchmarks.training import TrainCase, measure_training_isolated, training_table
    from mobilekit.models import list_models

    if data_only:
        from mobilekit.benchmarks.data_report import data_benchmark_command

        data_benchmark_command(data, reference_repo, imgsz, max(parse_int_list(batch, "--batch")), parse_counts(workers), rounds, json_out)
        return
    if not models:
        raise MobilekitError("benchmark-train needs model names (or --data-only)")
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise MobilekitError(f"unknown model(s) {unknown}; choose from {list_models()}")
    device = benchmark_device(device)
    if steps < 1 or warmup < 0 or imgsz < 32:
        raise MobilekitError("--steps must be >= 1, --warmup >= 0 and --imgsz >= 32")
    console = Console(stderr=True)
    json_path = json_out or RESULTS_DIR / f"training_{device}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MobilekitError(f"cannot create the folder for --json {json_path}: {exc}") from None
    rows = []
    report = {"schema": "mobilekit.training_benchmark/1", "machine": machine_description(), "settings": {"steps": steps, "warmup": warmup}, "rows": rows}
    for model in models:
        for size in parse_int_list(batch, "--batch"):
            case = TrainCase(model, imgsz, size, device, threads, amp, channels_last)
            row = measure_training_isolated(case, steps, warmup)
            rows.append(row)
            done = f"{row['images_per_s']:.2f} img/s, peak {row['memory']['peak_mb']:.0f} MB" if row["status"] == "ok" else f"{row['status']}: {row['reason']}"
            console.print(f"  {model} {imgsz}px batch {size}: {done}")
            write_json(report, json_path)  # an interrupted run keeps the rows measured so far
    Console().print(training_table(report))
    console.print(f"report written to {json_path}")
    if all(row["status"] != "ok" for row in rows):
        raise MobilekitError("every training case failed (see the table)")


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)
    app.command("benchmark-train")(benchmark_train)
