"""``mobilekit run``: the whole mission in one command (the embedded default)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mobilekit.cli.options import check_device
from mobilekit.embedded_run import Pipeline, PipelineConfig
from mobilekit.errors import CheckFailed


def run(
    model: str = typer.Option("featherface_v1", "--model", help="Registered model to train and ship."),
    data: Optional[Path] = typer.Option(None, "--data", help="Your dataset (train/label.txt, val/label.txt); default: synthetic."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training YAML (see `mobilekit train --help`)."),
    out: Path = typer.Option(Path("runs/default"), "--out", help="Where every step writes its results."),
    flutter_out: Optional[Path] = typer.Option(None, "--flutter-out", help="Flutter asset folder (default flutter_assets/MODEL)."),
    imgsz: int = typer.Option(PipelineConfig.imgsz, "--imgsz", min=32, help="Synthetic data, training, evaluation and export input size."),
    epochs: int = typer.Option(PipelineConfig.epochs, "--epochs", min=1, help="Training epochs."),
    pretrained_backbone: Optional[Path] = typer.Option(
        None, "--pretrained-backbone", help="ImageNet MobileNetV1-0.25 weights for the backbone (default: the copy shipped with mobilekit)."
    ),
    images: int = typer.Option(PipelineConfig.synth_images, "--images", min=2, help="Synthetic images to make when no --data is given."),
    device: str = typer.Option("auto", "--device", callback=check_device, help="cpu, cuda or auto."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete OUT first instead of resuming."),
) -> None:
    """Make data, train, evaluate, export (ONNX, simplified ONNX, TFLite fp32/fp16/int8), check parity,
    benchmark and package Flutter assets, printing a summary of where everything is.

    The run stops at the first step that fails (exit status 1; e.g. fp32/fp16 parity, so that nothing
    unverified is packaged); the summary lists the steps not run.

    Re-running resumes: the dataset and finished training are reused, exports and packages are replaced.

    Examples:

      mobilekit run

      mobilekit run --model featherface_v2 --data ~/widerface --device cuda --imgsz 640 --epochs 100
    """
    pipeline = Pipeline(
        PipelineConfig(
            model=model, out=out, data=data, train_config=config, synth_images=images, imgsz=imgsz,
            epochs=epochs, pretrained_backbone=pretrained_backbone, device=device, flutter_out=flutter_out, fresh=fresh,
        )
    )
    results = pipeline.run()
    failed = next((r for r in results if not r.ok), None)
    if failed is not None:
        raise CheckFailed(f"the run stopped at {failed.name}: {failed.summary} (see {out / 'summary.json'})")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
