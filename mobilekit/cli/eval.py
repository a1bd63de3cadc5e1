"""``mobilekit eval``: AP@0.5 of a model on a labelled dataset, or ``eval widerface`` (official protocol)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mobilekit.atomic import write_json_atomic
from mobilekit.cli.options import check_device, check_size
from mobilekit.errors import MobilekitError

eval_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)


@eval_app.callback()
def evaluate(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", help="Registered model name."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Weights for the model (loaded strictly; default for yunet_n / yunet_s: their authors' weights, shipped with mobilekit)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset root with <split>/label.txt and images/."),
    split: str = typer.Option("val", "--split", help="Which split to evaluate."),
    imgsz: Optional[str] = typer.Option(None, "--imgsz", callback=check_size, help="Inference size N or H,W (default: each image's own size)."),
    device: str = typer.Option("auto", "--device", callback=check_device, help="cpu, cuda or auto."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics to this JSON file."),
) -> None:
    """AP at IoU 0.5 (VOC all-point) of a model on a dataset in the label layout; or, as the
    sub-command `widerface`, the official WIDER FACE protocol on a folder of predictions.

    Examples:

      mobilekit eval --model featherface_v1 --weights runs/train/best_weights.pth --data synth/ --imgsz 320

      mobilekit eval --model yunet_n --data synth/ --imgsz 320  (the authors' weights)

      mobilekit eval widerface --preds preds/ --gt ../shared/widerface_eval --json ap.json
    """
    if ctx.invoked_subcommand is not None:
        return
    from mobilekit.config import parse_size
    from mobilekit.evaluation.ap import evaluate_dataset
    from mobilekit.inference import load_model, resolve_device
    from mobilekit.models.registry import released_weights

    if weights is None and model is not None:
        weights = released_weights(model)
    missing = [flag for flag, value in (("--model", model), ("--weights", weights), ("--data", data)) if value is None]
    if missing:
        raise MobilekitError(f"mobilekit eval needs {', '.join(missing)} (or use `mobilekit eval widerface`); see --help")
    size = parse_size(imgsz)
    net = load_model(model, weights, resolve_device(device))
    metrics = {"model": model, "weights": str(weights), "data": str(data), "split": split, "imgsz": list(size) if size else None}
    metrics.update(evaluate_dataset(net, data, split, size))
    Console().print(
        f"{model} on {data}/{split}: AP50 = {metrics['ap50']:.4f}, recall {metrics['recall']:.4f} "
        f"({metrics['faces']} faces in {metrics['images']} images, {metrics['detections']} detections)"
    )
    if json_out:
        write_json_atomic(json_out, metrics)


@eval_app.command("widerface")
def widerface(
    preds: Path = typer.Option(..., "--preds", help="Folder of EVENT/NAME.txt prediction files (official layout)."),
    gt: Path = typer.Option(..., "--gt", help="Folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat."),
    json_out: Optional[Path] = typer.Option(None, "--json", help='Write {"easy": AP, "medium": AP, "hard": AP} here.'),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PR-curve PNG (default: beside --json as NAME_pr.png)."),
) -> None:
    """The official WIDER FACE val protocol (easy / medium / hard AP) on a folder of predictions.

    Examples:

      mobilekit predict WIDER_val/images --weights best.pth --widerface-out preds/

      mobilekit eval widerface --preds preds/ --gt ../shared/widerface_eval --json ap.json
    """
    from mobilekit.evaluation.widerface import SETTINGS, evaluate_widerface_folder

    if plot is None and json_out is not None:
        plot = json_out.with_name(json_out.stem + "_pr.png")
    results = evaluate_widerface_folder(preds, gt, json_out, plot)
    Console().print("WIDER FACE val AP: " + ", ".join(f"{s} {results[s]:.4f}" for s in SETTINGS) + (f" (PR curves: {plot})" if plot else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
