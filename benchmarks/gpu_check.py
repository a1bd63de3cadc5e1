"""The device check: one command that answers every GPU question and writes ``gpu_check.json`` and
``gpu_check.md`` under ``--out``.

Sections: environment; (1) training steps/s and images/s per model at 640 with bf16 autocast and
channels_last, batch 32 and ``--batch auto``, eager and ``torch.compile``; (2) the DDP path under
``torchrun`` with one process (DDP kept on), losses equal to the plain run's; (3) a 2-epoch
featherface_v1 training on the synthetic set, then ``mobilekit eval``; (4) inference latency,
PyTorch fp32/fp16 at batch 1 and 32, ONNX Runtime CUDA and TensorRT at batch 1 with the provider
actually used; (5) the data pipeline alone with N workers, and which side limits training.

Each section records its own failure and the others still run; the exit status is 1 when any section
failed. ``--dry-run`` runs the same code on CPU at 64 px with one or two steps (CI). Nothing here
imports TensorFlow or onnx2tf: the device machine has neither.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

from mobilekit.atomic import write_json_atomic, write_text_atomic
from mobilekit.benchmarks import gpu_sections as sections
from mobilekit.benchmarks.gpu_summary import markdown
from mobilekit.errors import MobilekitError


def run_section(report: dict, name: str, fn: Callable[[], dict], json_path: Path) -> None:
    """Run one section into ``report["sections"][name]``, catching its failure; save the partial report."""
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # a failing section is recorded, never lost, and the next one runs
        result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)[-3000:]}
    result["seconds"] = round(time.perf_counter() - start, 2)
    report["sections"][name] = result
    print(f"[gpu_check] {name}: {result['status']} ({result['seconds']:.0f} s)", file=sys.stderr, flush=True)
    write_json_atomic(json_path, report)


def run_check(out: Path, plan: sections.CheckPlan, onnx_dir: Path | None = None) -> dict:
    """Every section in order; returns the report (also written as JSON and Markdown under ``out``)."""
    from mobilekit.data.synth import make_synthetic_dataset

    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "gpu_check.json"
    report: dict = {"schema": "mobilekit.gpu_check/1", "dry_run": plan.device == "cpu", "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sections": {}}
    start = time.perf_counter()
    workers = max(plan.loader_workers)
    with tempfile.TemporaryDirectory(prefix="mobilekit_gpu_check_") as scratch:
        data = Path(scratch) / "synth"
        run_section(report, "environment", lambda: sections.environment(plan), json_path)
        run_section(report, "training", lambda: sections.training(plan), json_path)
        run_section(report, "synthetic_data", lambda: {"status": "ok", "path": str(make_synthetic_dataset(data, plan.synth_images, seed=0, imgsz=plan.synth_imgsz))}, json_path)
        run_section(report, "ddp", lambda: sections.ddp(plan, data), json_path)
        run_section(report, "train_eval", lambda: sections.train_eval(plan, data, out, workers), json_path)
        run_section(report, "inference", lambda: sections.inference(plan, onnx_dir), json_path)
        run_section(report, "data_pipeline", lambda: sections.data_pipeline(plan, data), json_path)
    report["verdict"] = sections.verdict(report)
    report["failed_sections"] = [name for name, s in report["sections"].items() if s["status"] != "ok"]
    report["tensorflow_imported"] = "tensorflow" in sys.modules or "onnx2tf" in sys.modules
    if report["tensorflow_imported"]:
        report["failed_sections"].append("tensorflow_imported")
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    write_json_atomic(json_path, report)
    write_text_atomic(out / "gpu_check.md", markdown(report))
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json, gpu_check.md and the training run (required)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, 64 px, one or two steps: the same code paths, for CI")
    parser.add_argument("--models", default=None, help="comma-separated model names (default: every registered model)")
    parser.add_argument("--cpu-compile", action="store_true", help="dry run: include the torch.compile cases (minutes on CPU)")
    parser.add_argument("--onnx-dir", type=Path, default=None, help="batch-1 ONNX files made by --export-onnx (for a machine without the onnx package)")
    parser.add_argument("--export-onnx", type=Path, default=None, metavar="DIR", help="only write every model's batch-1 ONNX file at 640 (64 with --dry-run) into DIR")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 when every section passed, 1 when one failed, 2 for a bad option."""
    args = parse_args(argv)
    try:
        models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else sections.all_models()
        unknown = [m for m in models if m not in sections.all_models()]
        if unknown or not models:
            raise MobilekitError(f"--models: unknown {unknown}; choose from {','.join(sections.all_models())}")
        if args.out is None and args.export_onnx is None:
            raise MobilekitError("--out DIR is required (the folder for gpu_check.json and gpu_check.md)")
        if args.out is not None and args.out.exists() and not args.out.is_dir():
            raise MobilekitError(f"--out {args.out} is a file, not a folder")
        if args.onnx_dir is not None and not args.onnx_dir.is_dir():
            raise MobilekitError(f"--onnx-dir {args.onnx_dir} is not a folder")
        plan = sections.dry_plan(models, args.cpu_compile) if args.dry_run else sections.full_plan(models, sections.usable_cores())
        if args.export_onnx is not None:
            args.export_onnx.mkdir(parents=True, exist_ok=True)
            for model in models:
                print(sections.export_batch1_onnx(model, plan.imgsz, args.export_onnx / sections.onnx_name(model, plan.imgsz)))
            return 0
    except MobilekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = run_check(args.out, plan, args.onnx_dir)
    print(f"[gpu_check] {report['total_seconds']:.0f} s; failed: {report['failed_sections'] or 'none'}; report: {args.out / 'gpu_check.md'}", file=sys.stderr)
    return 1 if report["failed_sections"] else 0


if __name__ == "__main__":
    sys.exit(main())
