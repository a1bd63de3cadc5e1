"""Faces BlazeFace finds on the shared photos, against RetinaFace's reference detections.

The reference is RetinaFace-MobileNet-0.25 with its WIDER FACE weights on each photo at the photo's own
size (mobilekit reproduces the reference implementation bit-exactly, ``tests/test_retinaface.py``),
faces with score >= 0.5. Each detector then runs at a given input size with its own resize (BlazeFace:
MediaPipe's letterbox; RetinaFace: its stretch) and its app threshold (BlazeFace: MediaPipe's
``min_score_thresh``; RetinaFace: 0.5). A reference face is found when a detection overlaps it at
IoU >= 0.5; detections matching no reference face are counted as extra. Recall is also split by the
reference face's height relative to the photo's height (small < 5 %, medium 5-10 %, large >= 10 %).

    python -m studies.blazeface_faces --shared ../shared --json studies/results/blazeface_faces.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mobilekit.atomic import write_json_atomic
from mobilekit.benchmarks.markdown import table
from mobilekit.box_coder import box_iou
from mobilekit.image_io import read_image
from mobilekit.inference import detect_image, load_model
from mobilekit.models.blazeface import GOOGLE_WEIGHTS

MATCH_IOU = 0.5
REFERENCE_SCORE = 0.5
SIZE_BINS = (("small", 0.0, 0.05), ("medium", 0.05, 0.10), ("large", 0.10, float("inf")))
RETINAFACE_WEIGHTS = "retinaface_mnet025_widerface.pth"
# (label, model, weights in the shared weights folder, input size)
DETECTORS = (
    ("blazeface_short@128", "blazeface_short", GOOGLE_WEIGHTS["blazeface_short"], (128, 128)),
    ("retinaface@128", "retinaface_mnet025", RETINAFACE_WEIGHTS, (128, 128)),
    ("blazeface_full@192", "blazeface_full", GOOGLE_WEIGHTS["blazeface_full"], (192, 192)),
    ("retinaface@192", "retinaface_mnet025", RETINAFACE_WEIGHTS, (192, 192)),
    ("retinaface@640", "retinaface_mnet025", RETINAFACE_WEIGHTS, (640, 640)),
)


def app_faces(model, image: np.ndarray, imgsz: tuple[int, int] | None) -> np.ndarray:
    """Boxes (photo pixels) the model reports at its app threshold."""
    faces = detect_image(model, image, imgsz)
    return faces.boxes[faces.scores >= model.deploy.score_threshold]


def compare(reference: np.ndarray, found: np.ndarray, height: int) -> dict:
    """Reference faces found (overall and per size bin) and extra detections."""
    iou = box_iou(reference.astype(np.float64), found.astype(np.float64)) if len(reference) and len(found) else np.zeros((len(reference), len(found)))
    hit = iou.max(axis=1) >= MATCH_IOU if len(found) else np.zeros(len(reference), bool)
    extra = int((iou.max(axis=0) < MATCH_IOU).sum()) if len(reference) else len(found)
    relative = (reference[:, 3] - reference[:, 1]) / height
    bins = {name: [int(hit[(relative >= lo) & (relative < hi)].sum()), int(((relative >= lo) & (relative < hi)).sum())] for name, lo, hi in SIZE_BINS}
    return {"found": int(hit.sum()), "reference": len(reference), "detections": len(found), "extra": extra, "by_size": bins}


def run(shared: Path) -> dict:
    photos = sorted((shared / "images").glob("*.jpg"))
    reference_model = load_model("retinaface_mnet025", shared / "weights" / RETINAFACE_WEIGHTS)
    images = {p.name: read_image(p) for p in photos}
    references = {}
    for name, image in images.items():
        faces = detect_image(reference_model, image)
        references[name] = faces.boxes[faces.scores >= REFERENCE_SCORE]
    results = {}
    for label, model_name, weights, size in DETECTORS:
        model = load_model(model_name, shared / "weights" / weights)
        results[label] = {name: compare(references[name], app_faces(model, image, size), image.shape[0]) for name, image in images.items()}
    return {"reference": f"retinaface_mnet025 at each photo's own size, score >= {REFERENCE_SCORE}", "match_iou": MATCH_IOU, "results": results}


def markdown(report: dict) -> str:
    """One row per detector: reference faces found in total and per size bin, extra detections."""
    rows = []
    for label, photos in report["results"].items():
        total = [sum(p["found"] for p in photos.values()), sum(p["reference"] for p in photos.values())]
        bins = {name: [sum(p["by_size"][name][i] for p in photos.values()) for i in (0, 1)] for name, _, _ in SIZE_BINS}
        cells = [f"{found}/{count}" for found, count in (total, *bins.values())]
        rows.append([label, *cells, sum(p["extra"] for p in photos.values())])
    header = ["detector", "faces found", "small (< 5 % of height)", "medium (5-10 %)", "large (>= 10 %)", "extra detections"]
    return "\n".join(table(header, rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = run(args.shared)
    if args.json:
        write_json_atomic(args.json, report)
    print(markdown(report))
    print(json.dumps({label: {p: r["found"] for p, r in photos.items()} for label, photos in report["results"].items()}))


if __name__ == "__main__":
    main()
