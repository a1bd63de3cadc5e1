"""``mobilekit export``: PyTorch -> ONNX -> simplified ONNX -> TFLite fp32/fp16/int8, each with a sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mobilekit.cli.options import check_size
from mobilekit.config import parse_size
from mobilekit.errors import MobilekitError


def export(
    name: str = typer.Argument(..., help="Registered model name."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint to export (loaded strictly; default for yunet_n / yunet_s: their authors' weights, shipped with mobilekit)."),
    random_init: bool = typer.Option(False, "--random-init", help="No weights: export a randomly initialised model (tests only; labelled in the metadata)."),
    seed: int = typer.Option(0, "--seed", help="Seed for --random-init."),
    imgsz: Optional[str] = typer.Option(
        None, "--imgsz", callback=check_size, help="Input size N or H,W (multiples of the model's max stride; default: the model's own, 640 for most, 128/192 for BlazeFace)."
    ),
    onnx: bool = typer.Option(False, "--onnx", help="Write the ONNX file."),
    simplify: bool = typer.Option(False, "--simplify", help="Write the onnxsim-simplified ONNX file."),
    tflite: bool = typer.Option(False, "--tflite", help="Write TFLite fp32 and fp16 (implies the ONNX steps)."),
    fp16: bool = typer.Option(False, "--fp16", help="Same as --tflite (fp16 is always written with fp32)."),
    int8: bool = typer.Option(False, "--int8", help="Also write int8 (float I/O) and full-integer (uint8 I/O) TFLite; needs --calib-images."),
    converter: str = typer.Option("onnx2tf", "--converter", help="Who writes the TFLite files: onnx2tf (from the ONNX file), litert (litert-torch, directly from PyTorch; fp32/fp16, int8 stays onnx2tf's; the optional extra [litert]) or both (litert's get a _litert suffix)."),
    calib_images: Optional[Path] = typer.Option(None, "--calib-images", help="Folder of real photos for int8 calibration."),
    calib_count: int = typer.Option(200, "--calib-count", min=1, help="At most this many calibration images."),
    keep_float: Optional[str] = typer.Option(
        None,
        "--keep-float",
        help="int8 layers left in float: 'auto' (fewest layers, ranked by TF's quantisation debugger, until the detections on the calibration photos meet the int8 target), 'speed' (the float prefix from the input that is fastest on this machine at 1 thread and meets the same target), 'stem' (the ops from the input down to stride 4), 'heads', 'outputs' (heads and the reshapes/concatenations after them), op types (FULLY_CONNECTED) or tensor names, comma-separated; 'none' for a fully int8 graph. Default: the model's declaration.",
    ),
    calib_ranges: Optional[str] = typer.Option(None, "--calib-ranges", help="How int8 activation ranges are estimated: 'mean' (the default: the mean of each calibration photo's minimum and maximum, so rare outliers saturate instead of coarsening every value) or 'minmax' (over all photos, TensorFlow's calibrator)."),
    opset: int = typer.Option(17, "--opset", min=17, help="ONNX opset (>= 17)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic H/W in the ONNX files (priors then come from the metadata); TFLite stays static."),
    out: Path = typer.Option(Path("exports"), "--out", help="Output folder."),
) -> None:
    """Export a detector; every file gets a sidecar JSON (input/output contract, priors, sha256, versions, timings).

    Every TFLite file is loaded under LiteRT's XNNPACK delegate (what apps run) in a child process first: a file that fails there is a failed check (exit status 1) and nothing is written; files appear only when the whole export succeeded.

    Without format flags: ONNX, simplified ONNX, TFLite fp32 and fp16. Every file takes raw RGB 0-255: NCHW float32 for ONNX, NHWC for TFLite (uint8 for the full-integer TFLite).

    Examples:

      mobilekit export retinaface_mnet025 --weights retinaface_mnet025_widerface.pth

      mobilekit export retinaface_mnet025 --weights w.pth --imgsz 480,640 --tflite --int8 --calib-images photos/ --out exports/

      mobilekit export featherface_v1 --random-init --onnx --out /tmp/test_export

      mobilekit export retinaface_mnet025 --weights w.pth --tflite --converter both --out exports/

      mobilekit export yunet_n --imgsz 320 --tflite --int8 --calib-images photos/ --out exports/
    """
    from mobilekit.converters import build_source_model, export_model, resolve_formats, source_metadata
    from mobilekit.converters.model_source import source_weights
    from mobilekit.converters.selective_int8 import parse_keep_float

    weights = source_weights(name, weights, random_init)
    if calib_images is not None and not int8:
        raise MobilekitError("--calib-images is only used with --int8")
    if keep_float is not None and not int8:
        raise MobilekitError("--keep-float is only used with --int8")
    if calib_ranges is not None and not int8:
        raise MobilekitError("--calib-ranges is only used with --int8")
    layers = None if keep_float is None else parse_keep_float(keep_float)
    formats = resolve_formats(onnx, simplify, tflite, fp16, int8, converter)
    model = build_source_model(name, weights, seed if random_init else None)
    size = parse_size(imgsz) or model.deploy.input_size
    console = Console()
    console.print(f"exporting {name} at {size[0]}x{size[1]}: {', '.join(formats)} -> {out}")
    paths = export_model(
        model,
        size,
        out,
        formats=formats,
        calib_images=calib_images,
        calib_count=calib_count,
        opset=opset,
        dynamic=dynamic,
        source=source_metadata(weights, seed if random_init else None, name),
        keep_float=layers,
        calib_ranges=calib_ranges,
        warn=lambda message: console.print(f"[yellow]warning: {message}[/]"),
    )
    _print_summary(console, paths)


def _print_summary(console: Console, paths: list[Path]) -> None:
    from mobilekit.converters.sidecars import read_sidecar

    table = Table(title="exported")
    table.add_column("file", overflow="fold")
    for column in ("size", "seconds", "notes"):
        table.add_column(column)
    notes: list[str] = []
    for path in paths:
        meta = read_sidecar(path)
        analysis = meta.get("tflite", {}).get("analysis", {})
        gpu = analysis.get("gpu_delegate_compatible")
        note = "" if gpu is None else ("GPU delegate: compatible" if gpu else "GPU delegate: NOT compatible")
        kept = (meta.get("tflite", {}).get("keep_float") or {}).get("layers")
        if kept:
            note += f"; {len(kept)} layer(s) kept in float"
        table.add_row(path.name, f"{meta['artefact']['bytes'] / 1024:,.0f} KiB", f"{meta['artefact']['export_seconds']:.1f}", note)
        notes = meta.get("notes", notes)
    console.print(table)
    for note in notes:
        console.print(f"[dim]{note}[/]")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
