"""``mobilekit package``: an export folder -> Flutter-ready assets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console


def package(
    export_dir: Path = typer.Argument(..., help="Folder written by mobilekit export (TFLite files + .json sidecars)."),
    out: Path = typer.Option(..., "--out", help="Package folder to write, e.g. flutter_assets/retinaface (replaced atomically)."),
    precision: str = typer.Option("fp32", "--precision", help="TFLite variant: fp32, fp16, int8 (or int8_full). With files of two converters, the one that passes parity and is faster."),
    end_to_end: bool = typer.Option(False, "--end-to-end", help="Package a TFLite with decode + NMS inside the graph (fp32/fp16)."),
    golden_image: Optional[Path] = typer.Option(None, "--golden-image", help="Photo for golden/ (default: a photo of the shared images where present, else a synthetic picture of faces)."),
    max_detections: int = typer.Option(100, "--max-det", min=1, help="Faces returned by the end-to-end model (fixed K)."),
    parity_report: Optional[Path] = typer.Option(None, "--parity", help="The mobilekit parity JSON report that must pass the file (default: EXPORT_DIR/parity.json, which mobilekit parity writes)."),
    unverified: bool = typer.Option(False, "--unverified", help="Package a file that has no passing parity report anyway (model_meta.json and the README say so)."),
) -> None:
    """Write a folder a Flutter developer copies as is: model.tflite, model_meta.json, anchors.json,
    labels.txt, pubspec snippet, README, golden/ test files and the Dart decoder in lib/.

    Only a file that passed `mobilekit parity` is packaged (its report in EXPORT_DIR/parity.json, or --parity REPORT; matched by name and sha256): exit status 1 otherwise, unless --unverified.

    Examples:

      mobilekit parity exports/ --images photos/ && mobilekit package exports/ --out flutter_assets/retinaface

      mobilekit package exports/ --out flutter_assets/retinaface_e2e --precision fp16 --end-to-end
    """
    from mobilekit.flutter.package import package_export

    import json

    path = package_export(export_dir, out, precision, end_to_end, golden_image, max_detections, parity_report, unverified)
    console = Console(stderr=True)
    meta = json.loads((path / "model_meta.json").read_text())
    export = meta["export"]
    console.print(f"packaged {precision}{' end-to-end' if end_to_end else ''} model {export['source_file']} into {path}")
    if export["converter_choice"] is not None:
        console.print(f"converter: {export['converter_choice']['reason']}")
    if not meta["verification"]["verified"]:
        console.print(f"[bold yellow]unverified:[/] {meta['verification']['reason']}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("package")(package)
