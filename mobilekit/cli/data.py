"""``mobilekit data``: make a synthetic dataset, pseudo-label photos with a trained detector."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mobilekit.cli.options import check_device, check_share, check_size

data_app = typer.Typer(help="Training data in the RetinaFace label.txt layout.", no_args_is_help=True)


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Dataset root to write (train/ and val/ inside)."),
    images: int = typer.Option(..., "--images", min=2, help="Number of images in total (train + val)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same dataset."),
    imgsz: int = typer.Option(640, "--imgsz", min=32, help="Long side of the generated images in pixels."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", callback=check_share, help="Share of the images put in val/."),
) -> None:
    """Write a procedural face dataset (faces with 5 landmarks, distractors, clutter).

    Layout: OUT/train/label.txt, OUT/train/images/*.jpg, OUT/val/label.txt, OUT/val/images/*.jpg.

    Examples:

      mobilekit data synth --out data/synth --images 1000 --imgsz 320

      mobilekit data synth --out /tmp/faces --images 200 --seed 3
    """
    from mobilekit.data.labels import read_labels
    from mobilekit.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(out, images, seed=seed, imgsz=imgsz, val_fraction=val_fraction)
    for split in ("train", "val"):
        items = read_labels(root / split / "label.txt")
        n_faces = sum(len(item.faces) for item in items)
        Console().print(f"{split}: {len(items)} images, {n_faces} faces -> {root / split}")


@data_app.command("label")
def label(
    images_dir: Path = typer.Argument(..., help="Folder of photos (searched recursively)."),
    model: str = typer.Option(..., "--model", help="Registered model name, e.g. retinaface_mnet025."),
    weights: Path = typer.Option(..., "--weights", help="Trained weights for --model."),
    out: Path = typer.Option(..., "--out", help="Output split folder: OUT/label.txt and OUT/images/."),
    conf: float = typer.Option(0.5, "--conf", min=0.0, max=1.0, help="Keep detections with at least this score."),
    imgsz: Optional[str] = typer.Option(None, "--imgsz", callback=check_size, help="Detector input N or H,W (default: each image's own size)."),
    device: str = typer.Option("cpu", "--device", callback=check_device, help="cpu, cuda or auto."),
) -> None:
    """Pseudo-label photos with a trained detector into the RetinaFace layout.

    Images are copied under OUT/images/ (same relative paths), faces go to OUT/label.txt with
    landmarks flagged 0.0 (visible) and blur 0. Review the labels before training on them.

    Examples:

      mobilekit data label photos/ --model retinaface_mnet025 --weights mnet025.pth --out data/mine/train

      mobilekit data label photos/ --model retinaface_mnet025 --weights w.pth --out labeled --conf 0.7 --imgsz 640
    """
    from mobilekit.data.labels import Face, LabeledImage, write_labels
    from mobilekit.image_io import list_images, read_image
    from mobilekit.config import parse_size
    from mobilekit.inference import detect_image, load_model, resolve_device
    from mobilekit.families import family_of

    detector = load_model(model, weights, resolve_device(device))
    size = parse_size(imgsz)
    post = family_of(detector.deploy).postprocess(detector.deploy, conf_threshold=conf)
    items: list[LabeledImage] = []
    console = Console()
    out_root = out.resolve()
    for path in list_images(images_dir):
        if out_root in path.resolve().parents:  # an OUT folder inside IMAGES_DIR holds earlier copies
            continue
        relative = path.relative_to(images_dir)
        dets = detect_image(detector, read_image(path), size, post)
        landmarks = family_of(detector.deploy).label_landmarks(detector.deploy, dets.landmarks)  # None: boxes only
        faces = [
            Face(
                (float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])),
                None if landmarks is None else landmarks[i].astype("float32"),
                0.0,
            )
            for i, (b, s) in enumerate(zip(dets.boxes, dets.scores))
            if s >= conf
        ]
        target = out / "images" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        items.append(LabeledImage(relative.as_posix(), faces))
        console.print(f"{relative}: {len(faces)} faces")
    write_labels(out / "label.txt", items)
    console.print(f"{len(items)} images, {sum(len(i.faces) for i in items)} faces -> {out / 'label.txt'}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
