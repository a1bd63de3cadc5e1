"""The official WIDER FACE validation protocol (eval_tools / wider_face_py ``evaluation.py``), vectorised.

Per image, predictions are taken in file order: each one hits the ground-truth face of highest IoU
(inclusive-pixel boxes) when that IoU is >= 0.5; hits on faces outside the setting's keep list are
ignored (neither true nor false positive). Scores are min-max normalised over the whole prediction
set, precision/recall are accumulated at 1000 thresholds and AP is the VOC all-point area. The
results equal the official loop implementation (see tests/test_evaluation.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilekit.atomic import write_json_atomic
from mobilekit.box_coder import box_iou
from mobilekit.errors import MobilekitError
from mobilekit.evaluation.ap import voc_ap

SETTINGS = ("easy", "medium", "hard")
THRESH_NUM = 1000
IOU_THRESHOLD = 0.5


@dataclass
class WiderImage:
    """One validation image: ``boxes`` [G, 4] (x, y, w, h) and, per setting, the 0-based kept faces."""

    event: str
    name: str
    boxes: np.ndarray
    keep: dict[str, np.ndarray]


def load_widerface_gt(gt_dir: str | Path) -> list[WiderImage]:
    """Read ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` from ``gt_dir``."""
    from scipy.io import loadmat

    gt_dir = Path(gt_dir)
    files = {name: gt_dir / f"wider_{name}_val.mat" for name in ("face", *SETTINGS)}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise MobilekitError(f"WIDER FACE ground truth missing: {', '.join(missing)}")
    face = loadmat(str(files["face"]))
    keeps = {s: loadmat(str(files[s]))["gt_list"] for s in SETTINGS}
    images = []
    for i, event_cell in enumerate(face["event_list"]):
        event = str(event_cell[0][0])
        file_list, box_list = face["file_list"][i][0], face["face_bbx_list"][i][0]
        for j in range(len(file_list)):
            keep = {s: keeps[s][i][0][j][0].reshape(-1).astype(np.int64) - 1 for s in SETTINGS}
            images.append(WiderImage(event, str(file_list[j][0][0]), box_list[j][0].astype(np.float64).reshape(-1, 4), keep))
    return images


def read_prediction_file(path: Path) -> np.ndarray:
    """``[D, 5]`` (x, y, w, h, score) from an official-layout file: name, count, then one line per face."""
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise MobilekitError(f"{path}: expected the image name and a face count on the first two lines")
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        values = line.split()
        if not values:
            continue
        if len(values) < 5:
            raise MobilekitError(f"{path}:{number}: expected 'x y w h score', got {line!r}")
        try:
            rows.append([float(v) for v in values[:5]])
        except ValueError:
            raise MobilekitError(f"{path}:{number}: not a number in {line!r}") from None
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def read_predictions(pred_dir: str | Path) -> dict[tuple[str, str], np.ndarray]:
    """All ``EVENT/NAME.txt`` files under ``pred_dir``, keyed by (event, name)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise MobilekitError(f"prediction folder not found: {pred_dir}")
    preds = {(p.parent.name, p.stem): read_prediction_file(p) for p in sorted(pred_dir.glob("*/*.txt"))}
    if not preds:
        raise MobilekitError(f"no EVENT/NAME.txt prediction files in {pred_dir}")
    return preds


def write_widerface_predictions(dets, path: str | Path) -> Path:
    """Write detections (``Detections`` in original-image pixels) as an official prediction file:
    the image name, the count, then ``x y w h score`` per face. ``path`` is ``OUT/EVENT/NAME.txt``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = dets.numpy()
    lines = [path.stem, str(len(d))]
    for (x1, y1, x2, y2), score in zip(np.asarray(d.boxes, dtype=np.float64), np.asarray(d.scores, dtype=np.float64)):
        lines.append(f"{x1:.1f} {y1:.1f} {x2 - x1 + 1:.1f} {y2 - y1 + 1:.1f} {score:.6f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def normalize_scores(preds: dict[tuple[str, str], np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    """Min-max normalise every score over the whole set (the official ``norm_score``, bounds start at 1 and 0)."""
    nonempty = [v[:, 4] for v in preds.values() if len(v)]
    low = min([1.0] + [float(s.min()) for s in nonempty])
    high = max([0.0] + [float(s.max()) for s in nonempty])
    if high <= low:
        raise MobilekitError(f"all prediction scores equal {high}: the protocol normalises scores by their range")
    out = {}
    for key, v in preds.items():
        v = v.copy()
        if len(v):
            v[:, 4] = (v[:, 4] - low) / (high - low)
        out[key] = v
    return out


def image_pr(pred: np.ndarray, gt_xywh: np.ndarray, keep: np.ndarray, thresholds: np.ndarray, iou_threshold: float) -> np.ndarray:
    """``[T, 2]`` (proposals, recalled faces) at each threshold for one image (official ``image_eval`` +
    ``img_pr_info``)."""
    n_pred, n_gt = len(pred), len(gt_xywh)
    gt = gt_xywh.copy()
    gt[:, 2:] += gt[:, :2]
    boxes = pred[:, :4].copy()
    boxes[:, 2:] += boxes[:, :2]
    overlaps = box_iou(boxes, gt, offset=1.0)
    best = overlaps.argmax(axis=1)
    hit = overlaps[np.arange(n_pred), best] >= iou_threshold
    kept = np.zeros(n_gt, dtype=bool)
    kept[keep] = True
    # A hit on an ignored face is no proposal; a kept face counts as recalled from its first hit on.
    proposal = ~(hit & ~kept[best])
    first_hit = np.full(n_gt, n_pred, dtype=np.int64)
    np.minimum.at(first_hit, best[hit], np.flatnonzero(hit))
    recalled_by = np.bincount(first_hit[kept], minlength=n_pred + 1)[:n_pred]
    pred_recall = np.cumsum(recalled_by)
    proposals = np.cumsum(proposal)
    # Official: the LAST prediction (file order) with score >= threshold bounds the count.
    suffix_max = np.maximum.accumulate(pred[::-1, 4])[::-1]
    last = np.searchsorted(-suffix_max, -thresholds, side="right") - 1
    info = np.zeros((len(thresholds), 2))
    valid = last >= 0
    info[valid, 0] = proposals[last[valid]]
    info[valid, 1] = pred_recall[last[valid]]
    return info


def evaluate_widerface(
    preds: dict[tuple[str, str], np.ndarray],
    gt: list[WiderImage],
    iou_threshold: float = IOU_THRESHOLD,
    thresh_num: int = THRESH_NUM,
) -> dict:
    """AP per setting plus the PR curves: ``{"easy": ap, ..., "curves": {setting: (recall, precision)}}``."""
    missing = [f"{im.event}/{im.name}" for im in gt if (im.event, im.name) not in preds]
    if missing:
        raise MobilekitError(f"{len(missing)} of {len(gt)} ground-truth images have no prediction file, e.g. {missing[0]}.txt")
    preds = normalize_scores(preds)
    thresholds = 1 - (np.arange(thresh_num) + 1) / thresh_num
    results: dict = {"curves": {}}
    for setting in SETTINGS:
        pr_curve = np.zeros((thresh_num, 2))
        count_face = 0
        for im in gt:
            pred = preds[(im.event, im.name)]
            keep = im.keep[setting]
            count_face += len(keep)
            if len(im.boxes) == 0 or len(pred) == 0:
                continue
            pr_curve += image_pr(pred, im.boxes, keep, thresholds, iou_threshold)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = pr_curve[:, 1] / pr_curve[:, 0]
        recall = pr_curve[:, 1] / count_face
        results[setting] = float(voc_ap(recall, precision))
        results["curves"][setting] = (recall, precision)
    return results


def plot_pr_curves(results: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for setting in SETTINGS:
        recall, precision = results["curves"][setting]
        ax.plot(recall, precision, label=f"{setting}: AP {results[setting]:.4f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("WIDER FACE val")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def evaluate_widerface_folder(pred_dir: str | Path, gt_dir: str | Path, json_out: str | Path | None = None, plot_out: str | Path | None = None) -> dict:
    """Read predictions and ground truth, evaluate, optionally write ``{"easy", "medium", "hard"}`` JSON and the PR plot."""
    results = evaluate_widerface(read_predictions(pred_dir), load_widerface_gt(gt_dir))
    aps = {s: results[s] for s in SETTINGS}
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(json_out, aps)
    if plot_out:
        plot_pr_curves(results, plot_out)
    return results
