"""Numeric parity of exported files against PyTorch (float64): tensors, then faces after the one decode path.

Each precision is judged by what it can promise:

- **fp32** files (ONNX, simplified ONNX, TFLite fp32, any converter, any CPU) meet the model's float
  criterion (:mod:`mobilekit.converters.float_criterion`): every output group's error relative to its own
  magnitude, within a bound derived from float32's unit roundoff and the layers on the output's path.
- **fp16** files are judged on faces (all of PyTorch's faces found at IoU 0.9, none added): storing the
  weights in float16 moves trained models' outputs by 0.2 to 7 % of their magnitude (measured,
  docs/float_criterion.md), up to what a 1 % change of one layer's weights does, so no float bound tells a
  correct fp16 file from a broken one on every photo; the faces an app shows can. Their relative errors
  are reported.
- **int8** files are judged on faces, on photos their calibration did not use.

A face judgement needs faces: with fewer than :data:`MIN_REFERENCE_FACES` reference faces over its photos
a file is *not judged*, which fails.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mobilekit.box_coder import box_iou
from mobilekit.converters.float_criterion import FloatCriterion, float_criterion, relative_error
from mobilekit.converters.model_source import rebuild_source_model
from mobilekit.converters.runtimes import TorchRuntime, open_runtime
from mobilekit.converters.sidecars import find_artefacts, sha256_file
from mobilekit.converters.tflite_run_child import IsolatedRun, run_isolated
from mobilekit.converters.variants import VARIANT
from mobilekit.detections import Detections
from mobilekit.errors import MobilekitError
from mobilekit.families import decode_outputs, family_of
from mobilekit.families.base import ParityTolerance
from mobilekit.image_io import list_images, read_image, resize_to_input

if TYPE_CHECKING:
    from mobilekit.converters.arm_emulation import ArmCheck

FACE_SCORE = 0.5  # a face an app shows
KEEP_SCORE = 0.3  # the margin: a face still counts as found when the other side scores it this high
DIAGNOSTIC_IOU = 0.5  # the old, lenient matching against every decoded detection (diagnostic only)
MIN_REFERENCE_FACES = 3  # a face judgement over fewer reference faces could not fail: it is not made


def tensor_metrics(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    ref, out = reference.astype(np.float64).ravel(), test.astype(np.float64).ravel()
    diff = np.abs(ref - out)
    denom = np.linalg.norm(ref) * np.linalg.norm(out)
    return {
        "max_abs": float(diff.max()),
        "relative": relative_error(ref, out),
        "mean_abs": float(diff.mean()),
        "cosine": float(ref @ out / denom) if denom > 0 else float(np.array_equal(ref, out)),
    }


def pair_faces(reference: Detections, test: Detections, min_iou: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one pairs ``(reference index, test index, IoU)``, highest IoU first, IoU >= ``min_iou``."""
    if not len(reference) or not len(test):
        return []
    iou = box_iou(reference.boxes.astype(np.float64), test.boxes.astype(np.float64))
    pairs, used_ref, used_test = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        r, t = divmod(int(flat), iou.shape[1])
        if iou[r, t] < min_iou:
            break
        if r not in used_ref and t not in used_test:
            pairs.append((r, t, float(iou[r, t])))
            used_ref.add(r)
            used_test.add(t)
    return pairs


def _subset(faces: Detections, keep: np.ndarray) -> Detections:
    return Detections(faces.boxes[keep], faces.scores[keep], faces.landmarks[keep])


def face_agreement(reference: Detections, test: Detections, match_iou: float) -> dict:
    """What an app sees, judged with a margin.

    *Recall*: reference faces (score >= :data:`FACE_SCORE`) that ``test`` detects with score >=
    :data:`KEEP_SCORE` at IoU >= ``match_iou``. *Precision*: ``test``'s faces (score >= FACE_SCORE) that
    the reference detects with score >= KEEP_SCORE at the same IoU. ``score_drift`` holds |score
    difference| of every found face; ``ious`` the IoU of each reference face's match (0 when missed).
    ``matched_any`` (diagnostic) pairs reference faces with any decoded detection at IoU >= 0.5.
    """
    ref_strong = np.flatnonzero(reference.scores >= FACE_SCORE)
    test_strong = np.flatnonzero(test.scores >= FACE_SCORE)
    ref_kept = np.flatnonzero(reference.scores >= KEEP_SCORE)
    test_kept = np.flatnonzero(test.scores >= KEEP_SCORE)
    found = pair_faces(_subset(reference, ref_strong), _subset(test, test_kept), match_iou)
    confirmed = pair_faces(_subset(test, test_strong), _subset(reference, ref_kept), match_iou)
    ious = [0.0] * len(ref_strong)
    drift, landmark_errors = [], []
    for r, t, iou in found:
        ri, ti = ref_strong[r], test_kept[t]
        ious[r] = iou
        drift.append(abs(float(reference.scores[ri]) - float(test.scores[ti])))
        points = (reference.landmarks[ri] - test.landmarks[ti]).reshape(-1, 2)
        landmark_errors.append(float(np.linalg.norm(points, axis=1).mean()))
    lenient = pair_faces(_subset(reference, ref_strong), test, DIAGNOSTIC_IOU)
    return {
        "faces": int(len(ref_strong)),
        "found": len(found),
        "file_faces": int(len(test_strong)),
        "confirmed": len(confirmed),
        "ious": ious,
        "score_drift": drift,
        "landmark_errors_px": landmark_errors,
        "matched_any": len(lenient),
    }


def summarize_faces(per_image: list[dict]) -> dict:
    """Counts over images, with recall, precision, score drift (median, max) and landmark error."""
    total = {key: sum(img[key] for img in per_image) for key in ("faces", "found", "file_faces", "confirmed", "matched_any")}
    ious = [v for img in per_image for v in img["ious"]]
    drift = [v for img in per_image for v in img["score_drift"]]
    landmarks = [v for img in per_image for v in img["landmark_errors_px"]]
    matched = [v for v in ious if v > 0]
    return {
        **total,
        "recall": total["found"] / total["faces"] if total["faces"] else None,
        "precision": total["confirmed"] / total["file_faces"] if total["file_faces"] else None,
        "ious": ious,
        "mean_iou": float(np.mean(matched)) if matched else None,
        "score_drift_median": float(np.median(drift)) if drift else None,
        "score_drift_max": float(max(drift)) if drift else None,
        "mean_landmark_error_px": float(np.mean(landmarks)) if landmarks else None,
        "images": len(per_image),
    }


def int8_faces_summary(deploy, runtime, images: np.ndarray, reference: list[dict]) -> dict:
    """:func:`summarize_faces` of ``runtime`` (batch 1) on ``images`` against ``reference`` (its outputs
    on each image, batch 1), at the model's int8 match IoU: the int8 judge without parity's report."""
    match_iou = family_of(deploy).parity_tolerance(deploy).int8_match_iou
    input_hw = images.shape[1:3]

    def faces(outputs: dict):
        return decode_outputs(deploy, {n: outputs[n][0] for n in deploy.output_names}, input_hw).numpy()

    return summarize_faces([face_agreement(faces(expected), faces(runtime.run(image[None])), match_iou) for image, expected in zip(images, reference)])


@dataclass
class ArtefactParity:
    file: str
    format: str
    variant: str
    precision: str
    export_seconds: float | None
    kernels: str = ""
    error: str | None = None
    tensors: dict[str, dict[str, float]] = field(default_factory=dict)
    faces: dict = field(default_factory=dict)
    sha256: str = ""  # of the file checked: a report verifies that file only, not a later export under its name
    calibration_faces: dict | None = None  # int8: the same measure on the photos it was calibrated on
    builtin: dict | None = None  # TFLite: the same file on LiteRT's built-in kernels, beside the XNNPACK result
    arm: list[dict] = field(default_factory=list)  # TFLite with --arm: the file on each emulated ARM64 CPU, judged alike
    per_image: list[dict] = field(default_factory=list)
    passed: bool = False
    criterion: str = ""
    verdict: str = ""


def judge(result: ArtefactParity, tolerance: ParityTolerance, floats: FloatCriterion) -> None:
    """Set ``passed``, ``criterion`` and ``verdict`` by the artefact's precision: fp32 by ``floats`` (the
    model's float criterion) on ``tensors``, fp16 and int8 by ``tolerance``'s face thresholds on ``faces``.
    Any run of a file can be judged once :func:`_compare` has filled those two against the float64 reference."""
    if result.error:
        result.criterion, result.passed, result.verdict = "the file runs", False, result.error
        return
    if result.precision == "fp32":
        share = {group: m["relative"] / floats.bounds[group] for group, m in result.tensors.items()}
        worst = max(share, key=share.__getitem__)
        result.criterion = floats.describe()
        result.passed = share[worst] <= 1.0
        result.verdict = f"worst {worst}: error {result.tensors[worst]['relative']:.2g} of its magnitude, {share[worst]:.2f} of its bound"
        return
    faces = result.faces
    if not faces.get("images"):
        result.criterion = "faces on photos not used for calibration"
        result.passed, result.verdict = False, "every parity photo was a calibration photo: nothing held out (pass --images with other photos)"
        return
    min_recall = 1.0 if result.precision == "fp16" else tolerance.int8_min_recall
    min_precision = 1.0 if result.precision == "fp16" else tolerance.int8_min_precision
    iou = tolerance.match_iou(result.precision)
    held_out = " on photos not used for calibration" if result.precision == "int8" else ""
    result.criterion = (
        f"recall >= {min_recall:.0%} (faces scored >= {FACE_SCORE} by PyTorch, found at score >= {KEEP_SCORE}, IoU >= {iou}) "
        f"and precision >= {min_precision:.0%} (the file's faces >= {FACE_SCORE} found by PyTorch at >= {KEEP_SCORE}){held_out}, "
        f"over at least {MIN_REFERENCE_FACES} reference faces"
    )
    if faces["faces"] < MIN_REFERENCE_FACES:
        result.passed = False
        result.verdict = (
            f"not judged: PyTorch finds {faces['faces']} face(s) on the {faces['images']} photo(s){held_out}, fewer than "
            f"{MIN_REFERENCE_FACES}: pass --images with photos with faces"
        )
        return
    precision = 1.0 if faces["precision"] is None else faces["precision"]
    result.passed = faces["recall"] >= min_recall and precision >= min_precision
    drift = "" if faces["score_drift_max"] is None else f"; score drift median {faces['score_drift_median']:.3f}, max {faces['score_drift_max']:.3f}"
    result.verdict = f"recall {faces['found']}/{faces['faces']}, precision {faces['confirmed']}/{faces['file_faces']}{drift}"


def load_inputs(image_paths: list[Path], deploy, input_hw: tuple[int, int]) -> np.ndarray:
    """Every image resized once as at inference: the same uint8 bytes for every backend."""
    return np.stack([resize_to_input(read_image(p), input_hw, deploy.resize, deploy.pad_value)[0] for p in image_paths])


def _run_file(path: Path, inputs: np.ndarray, num_threads: int, xnnpack: bool = True) -> IsolatedRun:
    """Every input through ``path``: ONNX Runtime in this process, TFLite in a child process (a crash
    inside LiteRT or its delegate becomes this file's error)."""
    if path.suffix == ".tflite":
        return run_isolated(path, inputs, num_threads, xnnpack)
    runtime = open_runtime(path, num_threads)
    per_image = [runtime.run(image[None]) for image in inputs]  # the files take batch 1
    outputs = {name: np.concatenate([out[name] for out in per_image]) for name in per_image[0]}
    return IsolatedRun(outputs, getattr(runtime, "provider", "onnxruntime"))


def _compare(deploy, input_hw, image_names, reference, ref_faces, outputs, match_iou, calibration) -> tuple[dict, list[dict], dict]:
    """Per output group tensor metrics (worst over images), per-image face agreement, and raw errors."""
    family = family_of(deploy)
    groups = {g: (name, cols) for name in deploy.output_names for g, cols in family.output_groups(name, deploy).items()}
    per_group: dict[str, list[dict]] = {g: [] for g in groups}
    errors: dict[str, list[np.ndarray]] = {n: [] for n in deploy.output_names}
    per_image = []
    for i, (image_name, ref_out, ref_det) in enumerate(zip(image_names, reference, ref_faces)):
        out = {n: outputs[n][i : i + 1] for n in deploy.output_names}
        for g, (name, cols) in groups.items():
            per_group[g].append(tensor_metrics(ref_out[name][..., cols], out[name][..., cols]))
        for n in deploy.output_names:
            errors[n].append(np.abs(ref_out[n] - out[n]).ravel())
        faces = decode_outputs(deploy, {k: v[0] for k, v in out.items()}, input_hw).numpy()
        per_image.append({"image": image_name, "calibration": image_name in calibration, **face_agreement(ref_det, faces, match_iou)})
    tensors = {
        g: {
            "max_abs": max(m["max_abs"] for m in ms),
            "relative": max(m["relative"] for m in ms),
            "mean_abs": float(np.mean([m["mean_abs"] for m in ms])),
            "cosine": min(m["cosine"] for m in ms),
        }
        for g, ms in per_group.items()
    }
    return tensors, per_image, {n: np.concatenate(v) for n, v in errors.items()}


def _held_out(per_image: list[dict]) -> tuple[dict, dict | None]:
    """Faces on photos the file was not calibrated on (judged), and on its calibration photos (diagnostic)."""
    seen = [img for img in per_image if img["calibration"]]
    return summarize_faces([img for img in per_image if not img["calibration"]]), summarize_faces(seen) if seen else None


def check_artefacts(
    export_dir: str | Path,
    images: str | Path,
    weights: str | Path | None = None,
    thresholds: ParityTolerance | None = None,
    num_threads: int = 2,
    arm: ArmCheck | None = None,
) -> dict:
    """Run PyTorch and every exported file in ``export_dir`` on ``images``; returns the parity report dict.

    TFLite files run as apps run them, with LiteRT's default XNNPACK delegate (the judged result), and
    on the built-in kernels beside it; each in a child process. int8 files are judged on the photos
    their calibration did not use. ``thresholds`` (face thresholds) default to each model's family's;
    fp32 files meet the model's float criterion.
    With ``arm``, every TFLite file also runs on each emulated ARM64 CPU (:func:`_arm_results`); a
    file passes only when it passes there too.
    """
    artefacts = find_artefacts(export_dir)
    if not artefacts:
        raise MobilekitError(f"no exported files with sidecars in {export_dir} (run mobilekit export first)")
    image_paths = list_images(images)
    if not image_paths:
        raise MobilekitError(f"no images in {images}")
    image_names = [p.name for p in image_paths]
    image_hashes = dict(zip(image_names, (sha256_file(p) for p in image_paths)))
    groups: dict[tuple, list] = {}
    for path, meta in artefacts:
        groups.setdefault((meta["model"]["name"], tuple(meta["input_hw"])), []).append((path, meta))
    results: list[ArtefactParity] = []
    tolerances: dict[str, dict] = {}
    errors_by_artefact: dict[str, dict[str, np.ndarray]] = {}
    for (name, input_hw), members in groups.items():
        model = rebuild_source_model(members[0][1]["model"], weights)
        deploy = model.deploy
        tolerance = thresholds or family_of(deploy).parity_tolerance(deploy)
        floats = float_criterion(model, input_hw)
        paths = {output: asdict(path) for output, path in floats.paths.items()}
        tolerances[name] = {**asdict(tolerance), "float_bounds": floats.bounds, "rounding_paths": paths}
        inputs = load_inputs(image_paths, deploy, input_hw)
        torch_rt = TorchRuntime(model, float64=True)
        reference = [torch_rt.run(image[None]) for image in inputs]
        ref_faces = [decode_outputs(deploy, {k: v[0] for k, v in out.items()}, input_hw).numpy() for out in reference]
        for path, meta in members:
            variant = meta["artefact"]["variant"]
            precision = VARIANT[variant].precision
            calibration = calibration_images(meta, image_hashes) if precision == "int8" else set()
            result = ArtefactParity(
                path.name, meta["artefact"]["format"], variant, precision, meta["artefact"].get("export_seconds"), sha256=sha256_file(path)
            )
            match_iou = tolerance.match_iou(precision)
            run = _run_file(path, inputs, num_threads)
            result.kernels, result.error = run.provider, run.error
            if run.outputs is not None:
                _check_output_names(path, deploy, run.outputs)
                result.tensors, result.per_image, errors_by_artefact[path.name] = _compare(
                    deploy, input_hw, image_names, reference, ref_faces, run.outputs, match_iou, calibration
                )
                result.faces, result.calibration_faces = _held_out(result.per_image)
            if path.suffix == ".tflite":
                result.builtin = _builtin_result(path, inputs, num_threads, deploy, input_hw, image_names, reference, ref_faces, match_iou, calibration)
            if arm is not None and path.suffix == ".tflite":
                arm_context = (deploy, input_hw, image_names, inputs, reference, ref_faces, match_iou, calibration)
                result.arm = _arm_results(arm, path, run, result, tolerance, floats, *arm_context)
            judge(result, tolerance, floats)
            for on_arm in result.arm:
                if not on_arm["passed"]:
                    result.passed = False
                    result.verdict += f"; on emulated {on_arm['cpu']}: {on_arm['verdict']}"
            results.append(result)
    return {
        "export_dir": str(Path(export_dir).resolve()),
        "images": image_names,
        "reference": "PyTorch evaluated in float64 (its own float32 rounding is not charged to the exported files)",
        "thresholds": tolerances,
        "tflite_kernels": "XNNPACK delegate (LiteRT's default, as in apps); built-in kernels reported beside",
        **({"arm": _arm_setting(arm)} if arm is not None else {}),
        "face_score": FACE_SCORE,
        "keep_score": KEEP_SCORE,
        "passed": all(r.passed for r in results),
        "artefacts": [asdict(r) for r in results],
        "_errors": errors_by_artefact,
    }


def calibration_images(meta: dict, image_hashes: dict[str, str]) -> set[str]:
    """Names of the parity photos (by content) that calibrated the file described by ``meta``."""
    used = set((meta.get("calibration") or {}).get("images_sha256", []))
    return {name for name, digest in image_hashes.items() if digest in used}


def _check_output_names(path: Path, deploy, outputs: dict) -> None:
    missing = set(deploy.output_names) - set(outputs)
    if missing:
        raise MobilekitError(f"{path.name} lacks outputs {sorted(missing)} (has {sorted(outputs)})")


def _builtin_result(path, inputs, num_threads, deploy, input_hw, image_names, reference, ref_faces, match_iou, calibration) -> dict:
    run = _run_file(path, inputs, num_threads, xnnpack=False)
    if run.outputs is None:
        return {"kernels": run.provider, "error": run.error}
    tensors, per_image, _ = _compare(deploy, input_hw, image_names, reference, ref_faces, run.outputs, match_iou, calibration)
    return {"kernels": run.provider, "error": None, "tensors": tensors, "faces": _held_out(per_image)[0]}


def _arm_results(arm: ArmCheck, path, x86: IsolatedRun, template: ArtefactParity, tolerance, floats, deploy, input_hw, image_names, inputs, reference, ref_faces, match_iou, calibration) -> list[dict]:
    """``path`` on each emulated ARM64 CPU: judged by :func:`judge` like the x86 run, on at most
    ``arm.max_images`` photos (those its calibration did not use first), and compared with the x86
    run on the same photos, output by output and face by face."""
    from mobilekit.converters.arm_emulation import compare_with_x86, run_on_arm

    chosen = sorted(range(len(image_names)), key=lambda i: image_names[i] in calibration)[: arm.max_images]
    names, expected, expected_faces = [image_names[i] for i in chosen], [reference[i] for i in chosen], [ref_faces[i] for i in chosen]
    results = []
    for cpu in arm.cpus:
        started = time.monotonic()
        run = run_on_arm(arm.cache, cpu, path, inputs[chosen])
        on_arm = ArtefactParity(template.file, template.format, template.variant, template.precision, None, run.provider, run.error)
        versus_x86 = None
        if run.outputs is not None:
            _check_output_names(path, deploy, run.outputs)
            on_arm.tensors, on_arm.per_image, _ = _compare(deploy, input_hw, names, expected, expected_faces, run.outputs, match_iou, calibration)
            on_arm.faces, on_arm.calibration_faces = _held_out(on_arm.per_image)
            if x86.outputs is not None:
                x86_outputs = {n: x86.outputs[n][chosen] for n in deploy.output_names}
                versus_x86 = {"outputs": compare_with_x86(x86_outputs, run.outputs, run.steps), "faces": _faces_versus(deploy, input_hw, x86_outputs, run.outputs)}
        judge(on_arm, tolerance, floats)
        fields = {k: getattr(on_arm, k) for k in ("kernels", "error", "tensors", "faces", "passed", "criterion", "verdict")}
        results.append({"cpu": cpu, "images": names, "seconds": round(time.monotonic() - started, 1), **fields, "versus_x86": versus_x86})
    return results


def _faces_versus(deploy, input_hw, x86: dict[str, np.ndarray], arm: dict[str, np.ndarray]) -> dict:
    """ARM's faces against x86's on the same photos: ``identical`` when every decoded detection (box, score,
    landmarks) is equal, and :func:`summarize_faces` of the ARM faces with x86 as the reference (IoU 0.9)."""
    identical, per_image = True, []
    for i in range(len(next(iter(x86.values())))):
        x86_faces, arm_faces = (decode_outputs(deploy, {n: out[n][i] for n in deploy.output_names}, input_hw).numpy() for out in (x86, arm))
        identical &= all(np.array_equal(getattr(x86_faces, k), getattr(arm_faces, k)) for k in ("boxes", "scores", "landmarks"))
        per_image.append(face_agreement(x86_faces, arm_faces, 0.9))
    summary = summarize_faces(per_image)
    return {"identical": identical, **{k: summary[k] for k in ("faces", "found", "file_faces", "confirmed", "score_drift_max")}}


def _arm_setting(arm: ArmCheck) -> dict:
    """The report's record of the emulation: versions from the setup, and what each CPU reports."""
    import json

    from mobilekit.converters.arm_emulation import describe_cpu

    setup = json.loads(arm.cache.manifest.read_text())
    return {
        "emulator": f"qemu-user {setup['qemu']} (user mode), LiteRT {setup['wheels'].get('ai_edge_litert')} aarch64 wheel, Debian arm64 python3.11 {setup['python3.11_arm64']}",
        "images_per_file": arm.max_images,
        "cpus": [describe_cpu(arm.cache, cpu) for cpu in arm.cpus],
    }
