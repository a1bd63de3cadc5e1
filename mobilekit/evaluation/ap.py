"""Average precision at IoU 0.5 for any dataset in the label layout (VOC-style, all-point)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mobilekit.box_coder import box_iou
from mobilekit.detections import PostprocessConfig

IOU_THRESHOLD = 0.5


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope over all recall points (VOC 2010+, WIDER FACE)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


@dataclass
class APAccumulator:
    """Collects per-image detections and ground truth; :meth:`result` gives AP and the PR curve.

    Detections are matched greedily by descending score to the unmatched ground-truth face of
    highest IoU (>= ``iou_threshold``); a second hit on a matched face is a false positive.
    """

    iou_threshold: float = IOU_THRESHOLD
    scores: list[np.ndarray] = field(default_factory=list)
    hits: list[np.ndarray] = field(default_factory=list)
    num_faces: int = 0
    num_images: int = 0

    def add(self, boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray) -> None:
        """One image: detections ``boxes`` [D, 4] xyxy with ``scores`` [D], ground truth [G, 4] xyxy."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        order = np.argsort(-scores, kind="stable")
        boxes, scores = boxes[order], scores[order]
        hit = np.zeros(len(scores), dtype=bool)
        if len(gt_boxes) and len(boxes):
            iou = box_iou(boxes, gt_boxes)
            taken = np.zeros(len(gt_boxes), dtype=bool)
            for d in range(len(boxes)):
                candidates = np.where(taken, -1.0, iou[d])
                g = int(np.argmax(candidates))
                if candidates[g] >= self.iou_threshold:
                    taken[g] = hit[d] = True
        self.scores.append(scores)
        self.hits.append(hit)
        self.num_faces += len(gt_boxes)
        self.num_images += 1

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(recall, precision) at every detection, in descending score order."""
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0)
        hits = np.concatenate(self.hits) if self.hits else np.zeros(0, dtype=bool)
        order = np.argsort(-scores, kind="stable")
        tp = np.cumsum(hits[order])
        fp = np.cumsum(~hits[order])
        recall = tp / max(self.num_faces, 1)
        precision = tp / np.maximum(tp + fp, 1)
        return recall, precision

    def result(self) -> dict:
        recall, precision = self.curve()
        ap = voc_ap(recall, precision) if self.num_faces else 0.0
        return {
            "ap50": ap,
            "recall": float(recall[-1]) if len(recall) else 0.0,
            "images": self.num_images,
            "faces": self.num_faces,
            "detections": int(len(recall)),
        }


@torch.no_grad()
def evaluate_dataset(
    model,
    root,
    split: str = "val",
    imgsz: int | tuple[int, int] | None = None,
    post: PostprocessConfig | None = None,
    iou_threshold: float = IOU_THRESHOLD,
) -> dict:
    """AP@0.5 of a PyTorch detector on ``root/<split>/label.txt``, one image at a time.

    Images are brought to ``imgsz`` (N or (H, W)) the model's way (stretch or letterbox), or fed at
    their own size when ``imgsz`` is None. Returns ``{"ap50", "recall", "images", "faces", "detections"}``.
    """
    from mobilekit.data.dataset import FaceDataset
    from mobilekit.config import parse_size
    from mobilekit.inference import detect_image

    dataset = FaceDataset(root, split=split, augment=False)
    size = parse_size(imgsz)
    was_training = model.training
    model.eval()
    acc = APAccumulator(iou_threshold)
    try:
        for index in range(len(dataset)):
            image, item = dataset.load_eval_item(index)
            dets = detect_image(model, image, size, post)
            gt = np.array([f.box_xywh for f in item.faces if f.box_xywh[2] > 0 and f.box_xywh[3] > 0], dtype=np.float64).reshape(-1, 4)
            gt[:, 2:] += gt[:, :2]
            acc.add(dets.boxes, dets.scores, gt)
    finally:
        model.train(was_training)
    return acc.result()
