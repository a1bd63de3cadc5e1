"""``mobilekit train``: train a detector (CPU or CUDA, one process or many under torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mobilekit.cli.options import check_batch, check_device, check_positive
from mobilekit.errors import MobilekitError


def train_command(
    model: Optional[str] = typer.Option(None, "--model", help="Registered model name (default featherface_v1)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset root with train/label.txt (and val/label.txt)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Number of epochs."),
    batch: Optional[str] = typer.Option(None, "--batch", callback=check_batch, help="Images per step and process, or 'auto' (CUDA)."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", min=32, help="Square training size (multiple of 32; default 256, BlazeFace models: their own input size, the only one they train at)."),
    device: Optional[str] = typer.Option(None, "--device", callback=check_device, help="cpu, cuda, cuda:N or auto."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision on CUDA (bf16 where supported, else fp16)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue from a last.pt exactly (its settings are reused)."),
    pretrained_backbone: Optional[Path] = typer.Option(None, "--pretrained-backbone", help="ImageNet MobileNetV1-0.25 weights."),
    init_weights: Optional[Path] = typer.Option(None, "--init-weights", help="Start from these weights (fine-tuning; keys that fit; BlazeFace: Google's .tflite too)."),
    from_scratch: Optional[bool] = typer.Option(None, "--from-scratch/--from-released", help="yunet_n / yunet_s: train from random initialisation instead of fine-tuning the authors' weights shipped with mobilekit (their default)."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher weights: adds distillation losses."),
    teacher_model: Optional[str] = typer.Option(None, "--teacher-model", help="Teacher architecture (default featherface_v1 for featherface_v2)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (checkpoints, logs, curves)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of settings; command-line options override it."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Data-loading worker processes."),
    threads: Optional[int] = typer.Option(None, "--threads", min=0, help="CPU threads for torch (0: torch's default; 1 is fastest on a busy shared CPU)."),
    lr: Optional[float] = typer.Option(None, "--lr", callback=check_positive, help="Peak learning rate."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adamw or sgd."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (runs are reproducible)."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Show the progress bar."),
    compile_model: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model for training (slow to start on CPU)."),
    force_ddp: Optional[bool] = typer.Option(None, "--force-ddp/--no-force-ddp", help="Under torchrun, keep DDP on with one process (checks the DDP path on one GPU)."),
) -> None:
    """Train a face detector; writes OUT/last.pt, OUT/best.pt, OUT/best_weights.pth, results.csv,
    TensorBoard events and curves.png.

    Examples:

      mobilekit data synth --out synth/ --images 300 --imgsz 256

      mobilekit train --model featherface_v1 --data synth/ --pretrained-backbone mobilenetv1_025_imagenet.tar --out runs/v1

      mobilekit train --model featherface_v2 --data synth/ --teacher runs/v1/best_weights.pth --out runs/v2

      mobilekit train --resume runs/v1/last.pt

      mobilekit train --model blazeface_short --data synth/ --init-weights face_detection_short_range.tflite --lr 1e-3 --out runs/bf

      mobilekit train --model yunet_n --data synth/ --lr 1e-3 --out runs/yunet  (fine-tunes the authors' weights)

      torchrun --nproc_per_node 4 $(which mobilekit) train --model featherface_v1 --data widerface/ --device cuda --amp --batch auto

      torchrun --nproc_per_node 1 $(which mobilekit) train --data synth/ --device cuda --force-ddp --compile
    """
    from mobilekit.training import load_config, train

    overrides = {
        "model": model, "data": str(data) if data else None, "epochs": epochs, "batch": batch, "imgsz": imgsz,
        "device": device, "amp": amp, "resume": str(resume) if resume else None,
        "pretrained_backbone": str(pretrained_backbone) if pretrained_backbone else None,
        "init_weights": str(init_weights) if init_weights else None, "from_scratch": from_scratch,
        "teacher": str(teacher) if teacher else None, "teacher_model": teacher_model, "out": str(out) if out else None,
        "workers": workers, "threads": threads, "lr": lr, "optimizer": optimizer, "seed": seed, "progress": progress,
        "compile": compile_model, "force_ddp": force_ddp,
    }  # fmt: skip
    if resume is not None and config is None:
        from mobilekit.checkpoint import read_training_checkpoint

        base = read_training_checkpoint(resume)["config"]
        base.update({k: v for k, v in overrides.items() if v is not None})
        overrides = base
    cfg = load_config(config, overrides)
    if not cfg.data:
        raise MobilekitError("mobilekit train needs --data DIR (or a --config / --resume that names it); see --help")
    result = train(cfg)
    typer.echo(f"best weights: {result.best_weights}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
