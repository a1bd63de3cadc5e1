"""``mobilekit predict``: faces on images with a PyTorch model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mobilekit.cli.options import check_device, check_size
from mobilekit.errors import MobilekitError


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Image files as given, folders expanded to the images inside them."""
    from mobilekit.image_io import IMAGE_SUFFIXES, list_images

    images: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise MobilekitError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            images.extend(found)
        elif path.exists():
            images.append(path)
        else:
            raise MobilekitError(f"image not found: {path}")
    return images


def predict(
    images: list[Path] = typer.Argument(..., help="Image files or folders of images."),
    model: str = typer.Option("retinaface_mnet025", "--model", help="Registered model name."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint for the model (loaded strictly; BlazeFace also reads Google's .tflite). Required, except for yunet_n / yunet_s: default, their authors' weights shipped with mobilekit."),
    conf: Optional[float] = typer.Option(None, "--conf", min=0.0, max=1.0, help="Score threshold before NMS (default: the model family's: 0.02; BlazeFace: MediaPipe's 0.5 short / 0.6 full range)."),
    nms: Optional[float] = typer.Option(None, "--nms", min=0.0, max=1.0, help="NMS IoU threshold (default: the model's, e.g. 0.4 RetinaFace, 0.5 ADYOLOv5-Face, 0.3 BlazeFace's weighted NMS)."),
    max_det: int = typer.Option(750, "--max-det", min=1, help="Faces kept per image after NMS."),
    imgsz: Optional[str] = typer.Option(None, "--imgsz", callback=check_size, help="Inference size N or H,W (default: each image's own size; BlazeFace: its 128 / 192 input)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write all detections to this JSON file."),
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Write images with faces drawn here."),
    widerface_out: Optional[Path] = typer.Option(
        None, "--widerface-out", help="Also write official WIDER FACE prediction files DIR/EVENT/NAME.txt (EVENT = the image's folder)."
    ),
    draw_score: float = typer.Option(0.5, "--draw-score", min=0.0, max=1.0, help="Only faces at or above this score are drawn."),
    device: str = typer.Option("auto", "--device", callback=check_device, help="cpu, cuda or auto."),
) -> None:
    """Detect faces (boxes, scores, landmarks: 5, or BlazeFace's 6) in images.

    Examples:

      mobilekit predict photo.jpg --weights retinaface_mnet025_widerface.pth --save-dir out/

      mobilekit predict photos/ --model featherface_v1 --weights best.pth --imgsz 640 --json faces.json

      mobilekit predict photo.jpg --model blazeface_short --weights face_detection_short_range.tflite

      mobilekit predict photos/ --model yunet_n --save-dir out/

      mobilekit predict WIDER_val/images --weights best.pth --widerface-out preds/ && mobilekit eval widerface --preds preds/ --gt ../shared/widerface_eval
    """
    import cv2

    from mobilekit.atomic import write_json_atomic
    from mobilekit.config import parse_size
    from mobilekit.draw import draw_detections
    from mobilekit.evaluation.widerface import write_widerface_predictions
    from mobilekit.families import family_of
    from mobilekit.image_io import read_image
    from mobilekit.inference import detect_image, load_model, resolve_device

    size = parse_size(imgsz)
    from mobilekit.models.registry import weights_or_released

    weights = weights_or_released(model, weights)
    paths = expand_inputs(images)
    net = load_model(model, weights, resolve_device(device))
    post = family_of(net.deploy).postprocess(net.deploy, conf_threshold=conf, nms_iou=nms, max_detections=max_det)
    console = Console(stderr=True)
    results = []
    for path in paths:
        image = read_image(path)
        dets = detect_image(net, image, size, post)
        faces = dets.to_json()
        results.append({"image": path.name, "width": image.shape[1], "height": image.shape[0], "faces": faces})
        shown = sum(f["score"] >= draw_score for f in faces)
        console.print(f"{path}: {shown} faces with score >= {draw_score} ({len(faces)} detections)")
        if widerface_out is not None:
            write_widerface_predictions(dets, widerface_out / path.parent.name / f"{path.stem}.txt")
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            out = save_dir / f"{path.stem}_faces.jpg"
            drawn = draw_detections(image, dets, draw_score)
            if not cv2.imwrite(str(out), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)):
                raise MobilekitError(f"cannot write {out}")
    if json_out is not None:
        write_json_atomic(json_out, results)
        console.print(f"detections written to {json_out}")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
