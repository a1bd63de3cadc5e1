"""Data-pipeline benchmark (``mobilekit benchmark-train --data-only``): what one data-loading worker
delivers at training size, for mobilekit's augmentations and for Pytorch_Retinaface's own
``WiderFaceDetection`` + ``preproc`` on the same labelled photos.

Per-worker rate = 1000 / (process CPU ms per item), measured in this process with torch and OpenCV at
one thread, the candidates interleaved round by round (median over rounds), so other jobs on a shared
machine disturb every candidate alike. DataLoader rows add the wall-clock rate with N worker processes.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sized

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from mobilekit.errors import MobilekitError
from mobilekit.training.loop import worker_init

REFERENCE_MEAN_BGR = (104, 117, 123)  # Pytorch_Retinaface's rgb_mean (its images are BGR)
REFERENCE_NAME = "Pytorch_Retinaface WiderFaceDetection + preproc"


def label_photos(photos: Path, weights: Path, out: Path, repeats: int, conf: float = 0.5) -> Path:
    """``out/label.txt`` + ``out/images/``: every photo in ``photos`` pseudo-labelled by
    retinaface_mnet025 (``weights``) at 640, each listed ``repeats`` times; returns the label file."""
    from mobilekit.data.labels import Face, LabeledImage, write_labels
    from mobilekit.families import family_of
    from mobilekit.image_io import list_images, read_image
    from mobilekit.inference import detect_image, load_model

    if not weights.is_file():
        raise MobilekitError(f"no weights to label the photos: {weights} (pass --data DIR with a label.txt)")
    detector = load_model("retinaface_mnet025", weights)
    post = family_of(detector.deploy).postprocess(detector.deploy, conf_threshold=conf)
    (out / "images").mkdir(parents=True, exist_ok=True)
    items = []
    for path in list_images(photos):
        dets = detect_image(detector, read_image(path), (640, 640), post)
        faces = [Face((float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])), lm.reshape(5, 2), 0.0) for b, lm in zip(dets.boxes, dets.landmarks)]
        if faces:  # the reference cannot load an image without faces
            target = out / "images" / path.name
            target.write_bytes(path.read_bytes())
            items.append(LabeledImage(path.name, faces))
    if not items:
        raise MobilekitError(f"no faces found in the photos of {photos}")
    write_labels(out / "label.txt", items * repeats)
    return out / "label.txt"


def load_reference(repo: Path, label_file: Path, imgsz: int) -> Dataset:
    """Pytorch_Retinaface's ``WiderFaceDetection(label_file, preproc(imgsz, rgb_mean))`` from a checkout."""
    if not (repo / "data" / "wider_face.py").is_file() or not (repo / "data" / "data_augment.py").is_file():
        raise MobilekitError(f"--reference-repo {repo}: no data/wider_face.py and data/data_augment.py (a Pytorch_Retinaface checkout)")
    sys.path.insert(0, str(repo))
    try:
        from data.data_augment import preproc  # type: ignore[import-not-found]
        from data.wider_face import WiderFaceDetection  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(repo))
    if label_file.name != "label.txt":
        raise MobilekitError(f"the reference reads images from beside a file named label.txt, not {label_file.name}")
    return WiderFaceDetection(str(label_file), preproc(imgsz, REFERENCE_MEAN_BGR))


def cpu_ms_per_item(dataset: Dataset) -> float:
    """Process CPU milliseconds per ``dataset[i]`` over the whole dataset."""
    n = len(dataset)  # type: ignore[arg-type]
    start = time.process_time()
    for index in range(n):
        dataset[index]
    return (time.process_time() - start) * 1e3 / n


def interleaved_cpu_ms(candidates: dict[str, Dataset], rounds: int) -> dict[str, list[float]]:
    """CPU ms per item of every candidate, one pass each per round (one warm-up pass first)."""
    torch.manual_seed(0)
    random.seed(0)
    for dataset in candidates.values():
        dataset[0]
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, dataset in candidates.items():
            samples[name].append(cpu_ms_per_item(dataset))
    return samples


def batch_megabytes(dataset: Dataset, batch: int) -> dict[str, float]:
    """MB of one batch of images as the dataset delivers them, and as float32 (the former format)."""
    image = dataset[0][0]
    image = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.asarray(image))
    return {"dtype": str(image.dtype).replace("torch.", ""), "mb": image.nbytes * batch / 1e6, "float32_mb": image.numel() * 4 * batch / 1e6}


def loader_rate(dataset: Sized, collate: Callable, workers: int, batch: int, batches: int, pin_memory: bool = False) -> dict:
    """Wall-clock images/s of a DataLoader with ``workers`` processes over ``batches`` batches after a
    first, untimed one (worker start-up); the sampler runs over the dataset as often as needed."""
    sampler = RandomSampler(dataset, num_samples=(batches + 1) * batch, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate, pin_memory=pin_memory, worker_init_fn=worker_init)
    iterator, seen = iter(loader), 0
    next(iterator)
    start = time.perf_counter()
    for images, *_ in iterator:
        seen += images.shape[0]
    elapsed = time.perf_counter() - start
    return {"workers": workers, "batch": batch, "images": seen, "seconds": elapsed, "images_per_s": seen / elapsed}


def mobilekit_datasets(label_file: Path, imgsz: int) -> dict[str, Dataset]:
    """mobilekit's training datasets at ``imgsz``: both augmentations, and no augmentation."""
    from mobilekit.data.dataset import FaceDataset

    return {
        "mobilekit crop_stretch": FaceDataset(label_file, "train", imgsz, augment=True, mode="crop_stretch"),
        "mobilekit letterbox": FaceDataset(label_file, "train", imgsz, augment=True, mode="letterbox"),
        "mobilekit resize only": FaceDataset(label_file, "train", imgsz, augment=False),
    }


def run_data_benchmark(
    label_file: Path, imgsz: int, rounds: int, workers: list[int], batch: int, reference_repo: Path | None, loader_batches: int = 4
) -> dict:
    """Per-worker rates (interleaved), MB per batch and DataLoader rates; the report as a dict."""
    from mobilekit.data.dataset import detection_collate

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    candidates = mobilekit_datasets(label_file, imgsz)
    reference_note = "not measured: pass --reference-repo DIR (a Pytorch_Retinaface checkout)"
    if reference_repo is not None:
        candidates[REFERENCE_NAME] = load_reference(reference_repo, label_file, imgsz)
        reference_note = f"measured from {reference_repo}"
    samples = interleaved_cpu_ms(candidates, rounds)
    rows = []
    for name, dataset in candidates.items():
        ms = statistics.median(samples[name])
        rows.append({"pipeline": name, "cpu_ms_per_item": ms, "cpu_ms_rounds": samples[name], "images_per_s_per_worker": 1e3 / ms,
                     "batch_bytes": batch_megabytes(dataset, batch)})  # fmt: skip
    reference = next((r for r in rows if r["pipeline"] == REFERENCE_NAME), None)
    for row in rows:
        row["speed_vs_reference"] = reference["cpu_ms_per_item"] / row["cpu_ms_per_item"] if reference else None
    loaders = []
    for name, dataset in list(candidates.items())[:2]:
        for count in workers:
            loaders.append({"pipeline": name, **loader_rate(dataset, detection_collate, count, batch, loader_batches)})
    return {"label_file": str(label_file), "items": len(candidates[next(iter(candidates))]), "imgsz": imgsz, "rounds": rounds,
            "reference": reference_note, "rows": rows, "loaders": loaders}  # fmt: skip
