"""Evaluation: the vectorised WIDER FACE protocol equals the official loop definition, and dataset
AP@0.5 behaves as VOC AP on hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mobilekit.evaluation.ap import APAccumulator, voc_ap
from mobilekit.evaluation.widerface import (
    SETTINGS,
    evaluate_widerface,
    evaluate_widerface_folder,
    load_widerface_gt,
    read_predictions,
    write_widerface_predictions,
)
from mobilekit.detections import Detections


# -- the official protocol (wider_face_py / Pytorch_Retinaface widerface_evaluate/evaluation.py) ------
def ref_bbox_overlaps(boxes, query_boxes):
    n, k = boxes.shape[0], query_boxes.shape[0]
    overlaps = np.zeros((n, k), dtype=np.float64)
    for kk in range(k):
        box_area = (query_boxes[kk, 2] - query_boxes[kk, 0] + 1) * (query_boxes[kk, 3] - query_boxes[kk, 1] + 1)
        for nn in range(n):
            iw = min(boxes[nn, 2], query_boxes[kk, 2]) - max(boxes[nn, 0], query_boxes[kk, 0]) + 1
            if iw > 0:
                ih = min(boxes[nn, 3], query_boxes[kk, 3]) - max(boxes[nn, 1], query_boxes[kk, 1]) + 1
                if ih > 0:
                    ua = float((boxes[nn, 2] - boxes[nn, 0] + 1) * (boxes[nn, 3] - boxes[nn, 1] + 1) + box_area - iw * ih)
                    overlaps[nn, kk] = iw * ih / ua
    return overlaps


def ref_norm_score(pred):
    max_score, min_score = 0, 1
    for _, k in pred.items():
        for _, v in k.items():
            if len(v) == 0:
                continue
            max_score = max(np.max(v[:, -1]), max_score)
            min_score = min(np.min(v[:, -1]), min_score)
    diff = max_score - min_score
    for _, k in pred.items():
        for _, v in k.items():
            if len(v) == 0:
                continue
            v[:, -1] = (v[:, -1] - min_score) / diff


def ref_image_eval(pred, gt, ignore, iou_thresh):
    _pred, _gt = pred.copy(), gt.copy()
    pred_recall = np.zeros(_pred.shape[0])
    recall_list = np.zeros(_gt.shape[0])
    proposal_list = np.ones(_pred.shape[0])
    _pred[:, 2] = _pred[:, 2] + _pred[:, 0]
    _pred[:, 3] = _pred[:, 3] + _pred[:, 1]
    _gt[:, 2] = _gt[:, 2] + _gt[:, 0]
    _gt[:, 3] = _gt[:, 3] + _gt[:, 1]
    overlaps = ref_bbox_overlaps(_pred[:, :4], _gt)
    for h in range(_pred.shape[0]):
        gt_overlap = overlaps[h]
        max_overlap, max_idx = gt_overlap.max(), gt_overlap.argmax()
        if max_overlap >= iou_thresh:
            if ignore[max_idx] == 0:
                recall_list[max_idx] = -1
                proposal_list[h] = -1
            elif recall_list[max_idx] == 0:
                recall_list[max_idx] = 1
        r_keep_index = np.where(recall_list == 1)[0]
        pred_recall[h] = len(r_keep_index)
    return pred_recall, proposal_list


def ref_img_pr_info(thresh_num, pred_info, proposal_list, pred_recall):
    pr_info = np.zeros((thresh_num, 2)).astype("float")
    for t in range(thresh_num):
        thresh = 1 - (t + 1) / thresh_num
        r_index = np.where(pred_info[:, 4] >= thresh)[0]
        if len(r_index) == 0:
            pr_info[t, 0] = 0
            pr_info[t, 1] = 0
        else:
            r_index = r_index[-1]
            p_index = np.where(proposal_list[: r_index + 1] == 1)[0]
            pr_info[t, 0] = len(p_index)
            pr_info[t, 1] = pred_recall[r_index]
    return pr_info


def ref_dataset_pr_info(thresh_num, pr_curve, count_face):
    _pr_curve = np.zeros((thresh_num, 2))
    for i in range(thresh_num):
        _pr_curve[i, 0] = pr_curve[i, 1] / pr_curve[i, 0]
        _pr_curve[i, 1] = pr_curve[i, 1] / count_face
    return _pr_curve


def ref_voc_ap(rec, prec):
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def ref_evaluation(pred, facebox_list, event_list, file_list, setting_gts, iou_thresh=0.5):
    """The official ``evaluation()`` body, on already-loaded (and possibly subset) .mat arrays."""
    ref_norm_score(pred)
    thresh_num = 1000
    aps = []
    for gt_list in setting_gts:  # easy, medium, hard
        count_face = 0
        pr_curve = np.zeros((thresh_num, 2)).astype("float")
        for i in range(len(event_list)):
            event_name = str(event_list[i][0][0])
            img_list = file_list[i][0]
            pred_list = pred[event_name]
            sub_gt_list = gt_list[i][0]
            gt_bbx_list = facebox_list[i][0]
            for j in range(len(img_list)):
                pred_info = pred_list[str(img_list[j][0][0])]
                gt_boxes = gt_bbx_list[j][0].astype("float")
                keep_index = sub_gt_list[j][0]
                count_face += len(keep_index)
                if len(gt_boxes) == 0 or len(pred_info) == 0:
                    continue
                ignore = np.zeros(gt_boxes.shape[0])
                if len(keep_index) != 0:
                    ignore[keep_index - 1] = 1
                pred_recall, proposal_list = ref_image_eval(pred_info, gt_boxes, ignore, iou_thresh)
                pr_curve += ref_img_pr_info(thresh_num, pred_info, proposal_list, pred_recall)
        pr_curve = ref_dataset_pr_info(thresh_num, pr_curve, count_face)
        aps.append(ref_voc_ap(pr_curve[:, 1], pr_curve[:, 0]))
    return aps


# -- generated predictions around the real ground truth -----------------------------------------------
def jittered_predictions(boxes_xywh: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Some faces found (with box noise, duplicates), some missed, false positives, unsorted scores."""
    found = boxes_xywh[rng.random(len(boxes_xywh)) < 0.7]
    noise = rng.normal(0, 0.12, found.shape) * np.repeat(found[:, 2:], 2, axis=1)
    hits = np.abs(found + noise)
    dup = hits[rng.random(len(hits)) < 0.15]
    false = rng.uniform([0, 0, 5, 5], [900, 900, 80, 80], (int(rng.integers(0, 6)), 4))
    boxes = np.concatenate([hits, dup, false]).reshape(-1, 4)
    scores = np.concatenate([rng.uniform(0.3, 1.0, len(hits)), rng.uniform(0.0, 0.8, len(dup)), rng.uniform(0.0, 0.7, len(false))])
    order = rng.permutation(len(boxes)) if rng.random() < 0.3 else np.argsort(-scores, kind="stable")
    return np.column_stack([boxes, scores])[order]


@pytest.fixture(scope="module")
def wider_gt(shared):
    return load_widerface_gt(shared / "widerface_eval")


@pytest.mark.slow
def test_widerface_protocol_equals_official_loop(shared, wider_gt) -> None:
    from scipy.io import loadmat

    gt_dir = shared / "widerface_eval"
    face = loadmat(str(gt_dir / "wider_face_val.mat"))
    keeps = [loadmat(str(gt_dir / f"wider_{s}_val.mat"))["gt_list"] for s in SETTINGS]
    events = [0, 7, 23, 41, 60]  # a subset keeps the official (slow) loop to a few seconds
    rng = np.random.default_rng(0)
    preds_official: dict[str, dict[str, np.ndarray]] = {}
    preds_ours: dict[tuple[str, str], np.ndarray] = {}
    for i in events:
        event = str(face["event_list"][i][0][0])
        preds_official[event] = {}
        for j, cell in enumerate(face["file_list"][i][0]):
            name = str(cell[0][0])
            pred = jittered_predictions(face["face_bbx_list"][i][0][j][0].astype(np.float64), rng)
            if j % 17 == 3:
                pred = pred[:0]  # an image without detections
            preds_official[event][name] = pred.copy()
            preds_ours[(event, name)] = pred.copy()
    subset = lambda arr: arr[events]  # noqa: E731
    ref = ref_evaluation(preds_official, subset(face["face_bbx_list"]), subset(face["event_list"]), subset(face["file_list"]), [subset(k) for k in keeps])
    wanted = {str(face["event_list"][i][0][0]) for i in events}
    ours = evaluate_widerface(preds_ours, [im for im in wider_gt if im.event in wanted])
    for setting, ref_ap in zip(SETTINGS, ref):
        assert 0.2 < ref_ap < 0.95, (setting, ref_ap)
        assert abs(ours[setting] - ref_ap) <= 1e-6, (setting, ours[setting], ref_ap)


@pytest.mark.slow
def test_widerface_folder_round_trip_on_the_full_val_set(tmp_path, wider_gt) -> None:
    """Perfect predictions written with ``write_widerface_predictions`` give AP near 1 on every setting."""
    for im in wider_gt:
        xyxy = im.boxes.copy()
        xyxy[:, 2:] += xyxy[:, :2] - 1
        scores = np.linspace(1.0, 0.5, len(xyxy)) if len(xyxy) else np.zeros(0)
        write_widerface_predictions(Detections(xyxy, scores, np.zeros((len(xyxy), 10))), tmp_path / "preds" / im.event / f"{im.name}.txt")
    preds = read_predictions(tmp_path / "preds")
    assert len(preds) == len(wider_gt) == 3226
    results = evaluate_widerface(preds, wider_gt)
    for setting in SETTINGS:
        assert results[setting] > 0.99, (setting, results[setting])


@pytest.mark.slow
def test_widerface_cli_writes_json_and_plot(tmp_path, shared, wider_gt) -> None:
    from mobilekit.cli import main

    for im in wider_gt:
        xyxy = im.boxes.copy()
        xyxy[:, 2:] += xyxy[:, :2] - 1
        half = xyxy[::2]  # every other face found: recall about one half
        write_widerface_predictions(Detections(half, np.linspace(0.9, 0.2, len(half)), np.zeros((len(half), 10))), tmp_path / "p" / im.event / f"{im.name}.txt")
    main(["eval", "widerface", "--preds", str(tmp_path / "p"), "--gt", str(shared / "widerface_eval"), "--json", str(tmp_path / "ap.json")])
    aps = json.loads((tmp_path / "ap.json").read_text())
    assert set(aps) == set(SETTINGS) and all(0.3 < v < 0.7 for v in aps.values()), aps
    assert (tmp_path / "ap_pr.png").is_file()


def test_widerface_missing_prediction_is_a_clear_error(tmp_path, shared) -> None:
    from mobilekit.errors import MobilekitError

    write_widerface_predictions(Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 10))), tmp_path / "0--Parade" / "x.txt")
    with pytest.raises(MobilekitError, match="no prediction file"):
        evaluate_widerface_folder(tmp_path, shared / "widerface_eval")


# -- dataset AP -----------------------------------------------------------------------------------
def test_voc_ap_hand_computed() -> None:
    # detections: hit, miss, hit over 3 faces -> precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3
    acc = APAccumulator()
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=float)
    acc.add(np.array([[0, 0, 10, 10], [60, 60, 70, 70], [21, 20, 31, 30]]), np.array([0.9, 0.8, 0.7]), gt)
    result = acc.result()
    assert result["ap50"] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)


def test_duplicate_detection_is_a_false_positive_and_empty_images_count() -> None:
    acc = APAccumulator()
    acc.add(np.array([[0, 0, 10, 10], [0, 0, 10, 10]]), np.array([0.9, 0.95]), np.array([[0, 0, 10, 10]]))
    acc.add(np.zeros((0, 4)), np.zeros(0), np.array([[5, 5, 9, 9]]))  # a missed face halves recall
    acc.add(np.array([[1, 1, 2, 2]]), np.array([0.1]), np.zeros((0, 4)))  # a face-less image: one FP
    result = acc.result()
    assert result["faces"] == 2 and result["images"] == 3 and result["detections"] == 3
    assert result["ap50"] == pytest.approx(0.5)
