"""``mobilekit parity``: every exported file vs PyTorch on real images; non-zero exit on failure."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table


def parity(
    export_dir: Path = typer.Argument(..., help="Folder written by mobilekit export."),
    images: Path = typer.Option(..., "--images", help="Folder of real photos (resized as at inference)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="PyTorch weights (default: the path recorded in the metadata)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full report as JSON."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write a Markdown report (and a PNG error plot next to it)."),
    xnnpack: bool = typer.Option(False, "--xnnpack", help="Run TFLite with the XNNPACK delegate (default: LiteRT built-in kernels)."),
    threads: int = typer.Option(2, "--threads", min=1, help="CPU threads for ONNX Runtime and TFLite."),
) -> None:
    """Compare PyTorch, ONNX Runtime and every TFLite file on the same preprocessed images.

    Per output: max/mean abs error and cosine. Per image after decode + NMS: faces matched at IoU >= 0.5, mean IoU, score and landmark differences, missed/extra faces.

    fp32 files must match every output tensor to 1e-4; fp16 and int8 are judged on detections. Exit status 1 when any file fails.

    Examples:

      mobilekit parity exports/ --images photos/

      mobilekit parity exports/ --images photos/ --json parity.json --report parity.md
    """
    from mobilekit.converters.parity import check_artefacts
    from mobilekit.converters.parity_report import write_json, write_markdown, write_plot

    result = check_artefacts(export_dir, images, weights, num_threads=threads, xnnpack=xnnpack)
    table = Table(title=f"parity vs PyTorch on {len(result['images'])} images ({result['tflite_kernels']})")
    table.add_column("file", overflow="fold")
    for column in ("precision", "worst max abs", "faces matched", "mean IoU", "result"):
        table.add_column(column)
    for a in result["artefacts"]:
        faces = a["faces"]
        table.add_row(
            a["file"],
            a["precision"],
            f"{max(m['max_abs'] for m in a['tensors'].values()):.3g}",
            f"{faces['matched']}/{faces['faces']}",
            "-" if faces["mean_iou"] is None else f"{faces['mean_iou']:.4f}",
            "[green]PASS[/]" if a["passed"] else "[bold red]FAIL[/]",
        )
    console = Console()
    console.print(table)
    for a in result["artefacts"]:
        if not a["passed"]:
            console.print(f"{a['file']}: {a['criterion']} -> {a['verdict']}", markup=False, highlight=False)
    if json_out:
        write_json(result, json_out)
    if report:
        write_markdown(result, report)
        write_plot(result, report.with_suffix(".png"))
    if not result["passed"]:
        failed = [a["file"] for a in result["artefacts"] if not a["passed"]]
        Console(stderr=True).print(f"[bold red]parity failed:[/] {', '.join(failed)}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("parity")(parity)
