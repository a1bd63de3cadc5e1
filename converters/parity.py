"""Numeric parity of exported files against PyTorch: tensors, then faces after the one decode path.

Thresholds fit each precision: fp32 files (ONNX, simplified ONNX, TFLite fp32) must reproduce every
output tensor (max abs error); fp16 and int8 are judged on *detections*, because reduced precision
moves raw tensors by design while the faces must stay put.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mobilekit.box_coder import box_iou
from mobilekit.converters.metadata import find_artefacts
from mobilekit.converters.model_source import rebuild_source_model
from mobilekit.converters.runtimes import TorchRuntime, open_runtime
from mobilekit.converters.variants import VARIANT
from mobilekit.errors import MobilekitError
from mobilekit.image_io import list_images, read_image, resize_to_input
from mobilekit.families import ParityTolerance, decode_outputs, family_of
from mobilekit.postprocess import Detections

FACE_SCORE = 0.5
MATCH_IOU = 0.5


def tensor_metrics(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    ref, out = reference.astype(np.float64).ravel(), test.astype(np.float64).ravel()
    diff = np.abs(ref - out)
    denom = np.linalg.norm(ref) * np.linalg.norm(out)
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "cosine": float(ref @ out / denom) if denom > 0 else float(np.array_equal(ref, out)),
    }


def match_faces(reference: Detections, test: Detections, min_score: float = FACE_SCORE, min_iou: float = MATCH_IOU) -> dict:
    """Greedy one-to-one matching by IoU (>= ``min_iou``) of all detections; reports faces with score >= ``min_score``.

    ``ious`` holds, per reference face (score >= ``min_score``), the IoU of its match (0 when missed).
    """
    ref_strong = np.flatnonzero(reference.scores >= min_score)
    test_strong = set(np.flatnonzero(test.scores >= min_score).tolist())
    pairs: dict[int, int] = {}
    if len(reference) and len(test):
        iou = box_iou(reference.boxes.astype(np.float64), test.boxes.astype(np.float64))
        used_test: set[int] = set()
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            r, t = divmod(int(flat), iou.shape[1])
            if iou[r, t] < min_iou:
                break
            if r not in pairs and t not in used_test:
                pairs[r] = t
                used_test.add(t)
    ious, score_diffs, landmark_errors = [], [], []
    for r in ref_strong:
        t = pairs.get(int(r))
        if t is None:
            ious.append(0.0)
            continue
        ious.append(float(iou[r, t]))
        score_diffs.append(abs(float(reference.scores[r]) - float(test.scores[t])))
        points = (reference.landmarks[r] - test.landmarks[t]).reshape(-1, 2)
        landmark_errors.append(float(np.linalg.norm(points, axis=1).mean()))
    matched_ious = [v for v in ious if v > 0]
    return {
        "faces": int(len(ref_strong)),
        "matched": len(matched_ious),
        "ious": ious,
        "mean_iou": float(np.mean(matched_ious)) if matched_ious else None,
        "max_score_diff": max(score_diffs) if score_diffs else None,
        "mean_landmark_error_px": float(np.mean(landmark_errors)) if landmark_errors else None,
        "missed": int(len(ref_strong) - len(matched_ious)),
        "extra": len(test_strong - set(pairs.values())),
    }


@dataclass
class ArtefactParity:
    file: str
    format: str
    variant: str
    precision: str
    export_seconds: float | None
    tensors: dict[str, dict[str, float]] = field(default_factory=dict)
    faces: dict = field(default_factory=dict)
    per_image: list[dict] = field(default_factory=list)
    passed: bool = False
    criterion: str = ""
    verdict: str = ""


def judge(result: ArtefactParity, thresholds: ParityTolerance) -> None:
    """Set ``passed``, ``criterion`` and ``verdict`` for the artefact's precision."""
    faces = result.faces
    if result.precision == "fp32":
        worst = max(m["max_abs"] for m in result.tensors.values())
        result.criterion = f"every output: max abs error <= {thresholds.fp32_max_abs:g}"
        result.passed = worst <= thresholds.fp32_max_abs
        result.verdict = f"worst max abs error {worst:.3g}"
        return
    if result.precision == "fp16":
        good = sum(1 for v in faces["ious"] if v >= thresholds.fp16_match_iou)
        result.criterion = f"every face with score >= {FACE_SCORE} matched at IoU >= {thresholds.fp16_match_iou}"
        result.passed = good == faces["faces"]
    else:
        good = sum(1 for v in faces["ious"] if v >= thresholds.int8_match_iou)
        result.criterion = f">= {thresholds.int8_min_recall:.0%} of faces with score >= {FACE_SCORE} matched at IoU >= {thresholds.int8_match_iou} (detections, not tensors)"
        result.passed = good >= thresholds.int8_min_recall * faces["faces"]
    result.verdict = f"{good}/{faces['faces']} faces within the IoU bound" + (" (no reference faces: vacuous)" if faces["faces"] == 0 else "")


def _merge_faces(per_image: list[dict]) -> dict:
    def values(key):
        return [img[key] for img in per_image if img[key] is not None]

    ious = [v for img in per_image for v in img["ious"]]
    matched = [v for v in ious if v > 0]
    return {
        "faces": sum(img["faces"] for img in per_image),
        "matched": len(matched),
        "ious": ious,
        "mean_iou": float(np.mean(matched)) if matched else None,
        "max_score_diff": max(values("max_score_diff"), default=None),
        "mean_landmark_error_px": float(np.mean(values("mean_landmark_error_px"))) if values("mean_landmark_error_px") else None,
        "missed": sum(img["missed"] for img in per_image),
        "extra": sum(img["extra"] for img in per_image),
    }


def load_inputs(image_paths: list[Path], deploy, input_hw: tuple[int, int]) -> np.ndarray:
    """Every image resized once as at inference: the same uint8 bytes for every backend."""
    return np.stack([resize_to_input(read_image(p), input_hw, deploy.resize, deploy.pad_value)[0] for p in image_paths])


def check_artefacts(
    export_dir: str | Path,
    images: str | Path,
    weights: str | Path | None = None,
    thresholds: ParityTolerance | None = None,
    num_threads: int = 2,
    xnnpack: bool = False,
) -> dict:
    """Run PyTorch and every exported file in ``export_dir`` on ``images``; returns the parity report dict.

    TFLite runs on LiteRT's built-in kernels unless ``xnnpack`` (the default delegate on devices).
    ``thresholds`` default to each model family's declared parity tolerance.
    """
    artefacts = find_artefacts(export_dir)
    if not artefacts:
        raise MobilekitError(f"no exported files with sidecars in {export_dir} (run mobilekit export first)")
    image_paths = list_images(images)
    if not image_paths:
        raise MobilekitError(f"no images in {images}")
    groups: dict[tuple, list] = {}
    for path, meta in artefacts:
        groups.setdefault((meta["model"]["name"], tuple(meta["input_hw"])), []).append((path, meta))
    results: list[ArtefactParity] = []
    tolerances: dict[str, dict] = {}
    errors_by_artefact: dict[str, dict[str, np.ndarray]] = {}
    for (name, input_hw), members in groups.items():
        model = rebuild_source_model(members[0][1]["model"], weights)
        deploy = model.deploy
        tolerance = thresholds or family_of(deploy).parity
        tolerances[name] = asdict(tolerance)
        inputs = load_inputs(image_paths, deploy, input_hw)
        torch_rt = TorchRuntime(model, float64=True)
        reference = [torch_rt.run(image[None]) for image in inputs]
        ref_faces = [decode_outputs(deploy, {k: v[0] for k, v in out.items()}, input_hw).numpy() for out in reference]
        for path, meta in members:
            runtime = open_runtime(path, num_threads, xnnpack=xnnpack)
            missing = set(deploy.output_names) - set(runtime.output_names)
            if missing:
                raise MobilekitError(f"{path.name} lacks outputs {sorted(missing)} (has {runtime.output_names})")
            variant = meta["artefact"]["variant"]
            result = ArtefactParity(path.name, meta["artefact"]["format"], variant, VARIANT[variant].precision, meta["artefact"].get("export_seconds"))
            diffs: dict[str, list[np.ndarray]] = {n: [] for n in deploy.output_names}
            per_tensor: dict[str, list[dict]] = {n: [] for n in deploy.output_names}
            for image_path, image, ref_out, ref_det in zip(image_paths, inputs, reference, ref_faces):
                out = runtime.run(image[None])
                for n in deploy.output_names:
                    per_tensor[n].append(tensor_metrics(ref_out[n], out[n]))
                    diffs[n].append(np.abs(ref_out[n] - out[n]).ravel())
                faces = decode_outputs(deploy, {k: v[0] for k, v in out.items()}, input_hw).numpy()
                result.per_image.append({"image": image_path.name, **match_faces(ref_det, faces)})
            result.tensors = {
                n: {
                    "max_abs": max(m["max_abs"] for m in ms),
                    "mean_abs": float(np.mean([m["mean_abs"] for m in ms])),
                    "cosine": min(m["cosine"] for m in ms),
                }
                for n, ms in per_tensor.items()
            }
            result.faces = _merge_faces(result.per_image)
            judge(result, tolerance)
            results.append(result)
            errors_by_artefact[path.name] = {n: np.concatenate(v) for n, v in diffs.items()}
    return {
        "export_dir": str(Path(export_dir).resolve()),
        "images": [p.name for p in image_paths],
        "reference": "PyTorch evaluated in float64 (its own float32 rounding is not charged to the exported files)",
        "thresholds": tolerances,
        "tflite_kernels": "XNNPACK delegate" if xnnpack else "LiteRT built-in kernels (no default delegate)",
        "face_score": FACE_SCORE,
        "match_iou": MATCH_IOU,
        "passed": all(r.passed for r in results),
        "artefacts": [asdict(r) for r in results],
        "_errors": errors_by_artefact,
    }
