"""Which detector to ship (issue 25 item 6): size, latency and faces of every candidate's TFLite files.

Every ``mobilekit export --tflite --int8`` folder under ``--exports`` (one model at one size each, all
int8 files calibrated on the same photos) contributes its fp32, fp16 and int8 (float I/O) files. For
each model at each size: parameters, file sizes, TFLite (XNNPACK) latency of every file at each thread
count, all files of all models in one alternation per thread count (``interleaved_medians``: a busy
minute on a shared machine slows every file alike, so compare ratios), the int8/fp32 ratio, and the
faces each file finds on the photos in ``--images``.

Faces: the reference is RetinaFace-MobileNet-0.25 in PyTorch (fp32) with its WIDER FACE weights at each
photo's own size, faces with score >= 0.5 (``../shared/reference/`` holds the reference implementation's
detections for only 2 of the 6 shared photos; on those two this reference is checked against them).
Each file runs on each photo resized as its model resizes (stretch, letterbox or MediaPipe's letterbox)
and keeps the faces at its model's app threshold; a reference face is found when a detection overlaps
it at IoU >= 0.5; detections matching no reference face are extra. fp32 and fp16 are judged on every
photo, int8 only on the photos its calibration did not use (the sidecar lists them by sha256).
Recall is also split by the reference face's height relative to the photo's (< 5 %, 5-10 %, >= 10 %).

ARM instructions per invoke are copied from ``benchmarks/results/arm_instructions.json`` where it has a
file of the same name (counted on earlier exports; not re-counted here).

    python -m studies.detector_choice --exports /tmp/detector_choice/exports --shared ../shared \\
        --out studies/results
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from mobilekit.benchmarks.arguments import (
    Parser,
    existing_dir,
    positive_int,
    thread_counts,
)
from mobilekit.benchmarks.hardware import machine_description
from mobilekit.benchmarks.markdown import table, write_report
from mobilekit.converters.parity import calibration_images
from mobilekit.converters.runtimes import TFLiteRuntime
from mobilekit.converters.sidecars import find_artefacts, sha256_file
from mobilekit.models.blazeface import GOOGLE_WEIGHTS

from mobilekit.box_coder import box_iou
from mobilekit.errors import MobilekitError
from mobilekit.families import decode_outputs
from mobilekit.image_io import list_images, read_image, resize_to_input
from mobilekit.inference import detect_image, load_model
from mobilekit.timing import interleaved_medians

PRECISIONS = ("fp32", "fp16", "int8")
MATCH_IOU = 0.5
REFERENCE_SCORE = 0.5
SIZE_BINS = (("small", 0.0, 0.05), ("medium", 0.05, 0.10), ("large", 0.10, float("inf")))
# weights per model, in the shared weights folder; None: the released weights mobilekit ships
WEIGHTS = {
    "yunet_n": None,
    "yunet_s": None,
    "retinaface_mnet025": "retinaface_mnet025_widerface.pth",
    "featherface_v1": "featherface_v1_widerface.pth",
    **GOOGLE_WEIGHTS,
}
REFERENCE_MODEL = "retinaface_mnet025"
ARM_RESULTS = Path("benchmarks/results/arm_instructions.json")
LATENCY_IMAGE = "group_768x1024.jpg"


def _weights(name: str, shared: Path) -> Path | None:
    if name not in WEIGHTS:
        raise MobilekitError(f"no weights known for {name} (this study knows {sorted(WEIGHTS)})")
    return None if WEIGHTS[name] is None else shared / "weights" / WEIGHTS[name]


def _candidates(exports: Path) -> dict[str, dict]:
    """``{"model@HxW": {"model", "input_hw", "files": {precision: path}, "meta": {precision: sidecar}}}``."""
    found: dict[str, dict] = {}
    for folder in sorted([exports, *[p for p in exports.iterdir() if p.is_dir()]]):
        for path, meta in find_artefacts(folder):
            variant = meta["artefact"]["variant"]
            if path.suffix != ".tflite" or variant not in PRECISIONS:
                continue
            hw = tuple(meta["input_hw"])
            key = f"{meta['model']['name']}@{hw[0]}" if hw[0] == hw[1] else f"{meta['model']['name']}@{hw[0]}x{hw[1]}"
            entry = found.setdefault(key, {"model": meta["model"]["name"], "input_hw": hw, "files": {}, "meta": {}})
            entry["files"][variant] = path
            entry["meta"][variant] = meta
    if not found:
        raise MobilekitError(f"no exported TFLite files with sidecars under {exports} (run mobilekit export --tflite --int8)")
    return found


def _references(shared: Path, photos: list[Path]) -> tuple[dict[str, np.ndarray], dict]:
    """Reference boxes per photo and the check against ``shared/reference`` where it has the photo."""
    model = load_model(REFERENCE_MODEL, _weights(REFERENCE_MODEL, shared))
    boxes = {}
    for photo in photos:
        faces = detect_image(model, read_image(photo))
        boxes[photo.name] = faces.boxes[faces.scores >= REFERENCE_SCORE].astype(np.float64)
    check = {}
    shared_file = shared / "reference" / f"{REFERENCE_MODEL}_detections.json"
    if shared_file.is_file():
        for item in json.loads(shared_file.read_text())["results"]:
            if item["image"] not in boxes:
                continue
            theirs = np.array([f["box_xyxy"] for f in item["faces"] if f["score"] >= REFERENCE_SCORE], dtype=np.float64).reshape(-1, 4)
            ours = boxes[item["image"]]
            matched = int((box_iou(theirs, ours).max(axis=1) >= 0.99).sum()) if len(theirs) and len(ours) else 0
            check[item["image"]] = {"shared_reference_faces": len(theirs), "ours": len(ours), "matched_iou_0.99": matched}
    return boxes, check


def compare(reference: np.ndarray, found: np.ndarray, height: int) -> dict:
    """Reference faces found (overall and per size bin) and extra detections."""
    iou = box_iou(reference, found) if len(reference) and len(found) else np.zeros((len(reference), len(found)))
    hit = iou.max(axis=1) >= MATCH_IOU if len(found) else np.zeros(len(reference), bool)
    extra = int((iou.max(axis=0) < MATCH_IOU).sum()) if len(reference) else len(found)
    relative = (reference[:, 3] - reference[:, 1]) / height
    bins = {name: [int(hit[(relative >= lo) & (relative < hi)].sum()), int(((relative >= lo) & (relative < hi)).sum())] for name, lo, hi in SIZE_BINS}
    return {"found": int(hit.sum()), "reference": len(reference), "detections": len(found), "extra": extra, "by_size": bins}


def _file_faces(path: Path, deploy, photos: list[Path], references: dict[str, np.ndarray], skip: set[str], sweep: tuple[float, ...]) -> dict:
    """Per photo (those not in ``skip``): what the file finds at the app threshold against the reference;
    ``sweep``: the totals at other score thresholds (None where the decode keeps no score that low, as
    BlazeFace's weighted NMS, which starts at the app threshold)."""
    runtime = TFLiteRuntime(path, num_threads=2)
    per_photo, decoded = {}, {}
    lowest = 1.0
    for photo in photos:
        if photo.name in skip:
            continue
        image = read_image(photo)
        resized, transform = resize_to_input(image, runtime.input_hw, deploy.resize, deploy.pad_value)
        outputs = runtime.run(resized[None])
        faces = decode_outputs(deploy, {k: v[0] for k, v in outputs.items()}, runtime.input_hw).numpy()
        decoded[photo.name] = (transform.to_image(faces.boxes).astype(np.float64), np.asarray(faces.scores), image.shape[0])
        lowest = min(lowest, float(faces.scores.min())) if len(faces) else lowest
    totals = {}
    for threshold in (deploy.score_threshold, *sweep):
        if threshold < min(lowest, deploy.score_threshold):  # above the app threshold the decode keeps every face
            totals[str(threshold)] = None
            continue
        results = {name: compare(references[name], boxes[scores >= threshold], height) for name, (boxes, scores, height) in decoded.items()}
        if threshold == deploy.score_threshold:
            per_photo = results
        total = {key: sum(p[key] for p in results.values()) for key in ("found", "reference", "detections", "extra")}
        total["by_size"] = {name: [sum(p["by_size"][name][i] for p in results.values()) for i in (0, 1)] for name, _, _ in SIZE_BINS}
        total["found_per_photo"] = {name: r["found"] for name, r in results.items()}
        totals[str(threshold)] = total
    return {"photos": sorted(per_photo), "total": totals[str(deploy.score_threshold)], "per_photo": per_photo,
            "sweep": {t: totals[str(t)] for t in map(str, sweep)}, "lowest_decoded_score": lowest}


def _arm_counts(sources: list[Path]) -> dict[str, dict]:
    """``{file name: {cpu: instructions, "source": json}}`` from ``arm_count`` JSONs, later ones first."""
    counts: dict[str, dict] = {}
    for source in sources:
        if source.is_file():
            for f in json.loads(source.read_text()).get("files", []):
                if f.get("instructions"):
                    counts[f["file"]] = {**f["instructions"], "source": str(source)}
    return counts


def run(exports: Path, shared: Path, threads: list[int], rounds: int, calls: int, arm_sources: list[Path] | None = None, sweep: tuple[float, ...] = (0.5, 0.7, 0.9)) -> dict:
    started = time.time()
    photos = list_images(shared / "images")
    hashes = {p.name: sha256_file(p) for p in photos}
    candidates = _candidates(exports)
    references, reference_check = _references(shared, photos)
    arm = _arm_counts(arm_sources if arm_sources is not None else [ARM_RESULTS])
    latency_photo = next((p for p in photos if p.name == LATENCY_IMAGE), photos[0])
    latency_image = read_image(latency_photo)
    result = {
        "machine": machine_description(),
        "load_average_at_start": os.getloadavg(),
        "reference": f"{REFERENCE_MODEL} PyTorch fp32 at each photo's own size, score >= {REFERENCE_SCORE}",
        "reference_check_against_shared": reference_check,
        "reference_faces": {name: len(b) for name, b in references.items()},
        "match_iou": MATCH_IOU,
        "latency_input": latency_photo.name,
        "models": {},
        "latency_ms": {},
    }
    runners_by_threads: dict[int, dict] = {count: {} for count in threads}
    for key, entry in candidates.items():
        model = load_model(entry["model"], _weights(entry["model"], shared))
        deploy = model.deploy
        row = {
            "model": entry["model"],
            "input_hw": list(entry["input_hw"]),
            "parameters": sum(p.numel() for p in model.parameters()),
            "app_score_threshold": deploy.score_threshold,
            "resize": deploy.resize,
            "files": {v: str(p) for v, p in entry["files"].items()},
            "bytes": {v: p.stat().st_size for v, p in entry["files"].items()},
            "keep_float": {v: (m.get("tflite") or {}).get("keep_float") for v, m in entry["meta"].items() if v == "int8"},
            "arm_instructions_recorded": {v: arm[p.name] for v, p in entry["files"].items() if p.name in arm},
            "faces": {},
        }
        for variant, path in entry["files"].items():
            skip = calibration_images(entry["meta"][variant], hashes) if variant == "int8" else set()
            row["faces"][variant] = _file_faces(path, deploy, photos, references, skip, sweep if variant != "fp16" else ())
            if variant == "int8":
                row["faces"][variant]["calibration_photos"] = sorted(skip)
            resized = resize_to_input(latency_image, tuple(entry["input_hw"]), deploy.resize, deploy.pad_value)[0][None]
            for count in threads:
                runtime = TFLiteRuntime(path, num_threads=count)
                x = runtime.prepare(resized)
                runners_by_threads[count][f"{key} {variant}"] = lambda runtime=runtime, x=x: runtime.infer(x)
        result["models"][key] = row
    for count in threads:
        result["latency_ms"][str(count)] = interleaved_medians(runners_by_threads[count], rounds=rounds, calls=calls)
    result["load_average_at_end"] = os.getloadavg()
    result["seconds"] = round(time.time() - started, 1)
    return result


def _kib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:,.0f}"


def _arm_sources(result: dict) -> dict[str, list[str]]:
    sources: dict[str, list[str]] = {}
    for row in result["models"].values():
        for variant, counts in row["arm_instructions_recorded"].items():
            sources.setdefault(counts.get("source", "?"), []).append(Path(row["files"][variant]).name)
    return sources


def _held_out_cell(faces: dict) -> str:
    """int8's faces on its held-out photos beside fp32's on the same photos."""
    int8, fp32 = faces.get("int8"), faces.get("fp32")
    if not int8 or not fp32:
        return "-"
    fp32_found = sum(fp32["per_photo"][p]["found"] for p in int8["photos"])
    return f"{int8['total']['found']} / {fp32_found} of {int8['total']['reference']}"


def _machine(m: dict) -> str:
    return f"{m.get('cpu_model')}, {m.get('usable_cores')} cores, {m.get('date_utc')}, LiteRT {m.get('versions', {}).get('ai-edge-litert')}"


def _faces_cell(faces: dict | None) -> str:
    if not faces:
        return "-"
    t = faces["total"]
    return f"{t['found']}/{t['reference']}"


def markdown(result: dict) -> str:
    threads = list(result["latency_ms"])
    base_key = next((k for k in result["models"] if k.startswith(f"{REFERENCE_MODEL}@320")), next(iter(result["models"])))
    lines = [
        "# Which detector to ship: every candidate's TFLite files side by side",
        "",
        (
            f"Machine: {_machine(result['machine'])}; load average {result['load_average_at_start'][0]:.1f} at the start, "
            f"{result['load_average_at_end'][0]:.1f} at the end{'; ' + result['note'] if result.get('note') else ''}. Read the latency as "
            f"ratios: all {sum(len(m['files']) for m in result['models'].values())} files ran in one alternation per thread count. "
            f"Latency input: `{result['latency_input']}` resized as each model resizes; model-only (`invoke`), XNNPACK."
        ),
        (
            f"Faces: reference = {result['reference']} ({sum(result['reference_faces'].values())} faces on "
            f"{len(result['reference_faces'])} photos); found = a detection at the model's app threshold with IoU >= {result['match_iou']}. "
            "fp32/fp16 on all photos; int8 only on the photos its calibration did not use."
        ),
        "",
        "## Summary",
        "",
    ]
    header = ["model @ input", "parameters", "KiB fp32 / fp16 / int8"]
    header += [f"fp32 ms, {t} thr (x {base_key} fp32)" for t in threads]
    header += [f"int8 / fp32, {t} thr" for t in threads]
    header += ["faces fp32 (all photos)", "int8 / fp32 faces (held-out photos)", "ARM instr. fp32 / int8 (n1, M)"]
    rows = []
    for key, row in result["models"].items():
        cells = [f"`{row['model']}` @{row['input_hw'][0]}", f"{row['parameters']:,}", " / ".join(_kib(row["bytes"].get(v)) for v in PRECISIONS)]
        for t in threads:
            ms = result["latency_ms"][t]
            fp32 = ms.get(f"{key} fp32")
            cells.append(f"{fp32:.2f} ({fp32 / ms[f'{base_key} fp32']:.2f})" if fp32 else "-")
        for t in threads:
            ms = result["latency_ms"][t]
            cells.append(f"{ms[f'{key} int8'] / ms[f'{key} fp32']:.2f}" if f"{key} int8" in ms and f"{key} fp32" in ms else "-")
        cells += [_faces_cell(row["faces"].get("fp32")), _held_out_cell(row["faces"])]
        arm = row["arm_instructions_recorded"]
        n1 = [arm.get(v, {}).get("neoverse-n1") for v in ("fp32", "int8")]
        cells.append(" / ".join("-" if c is None else f"{c / 1e6:.0f}" for c in n1) if any(n1) else "-")
        rows.append(cells)
    lines += table(header, rows)
    lines += ["", "## Latency of every file (median ms per invoke; x = the same model's fp32 file)", ""]
    header = ["file"] + [h for t in threads for h in (f"ms, {t} thread(s)", "x fp32")]
    rows = []
    for key, row in result["models"].items():
        for v in PRECISIONS:
            if v not in row["files"]:
                continue
            cells = [f"{key} {v}"]
            for t in threads:
                ms = result["latency_ms"][t]
                cells += [f"{ms[f'{key} {v}']:.2f}", f"{ms[f'{key} {v}'] / ms[f'{key} fp32']:.2f}"]
            rows.append(cells)
    lines += table(header, rows)
    lines += ["", "## Faces by size (reference faces found / reference faces; extra = detections matching none)", ""]
    header = ["file", "photos", "found", "small (< 5 % of height)", "medium (5-10 %)", "large (>= 10 %)", "extra"]
    rows = []
    for key, row in result["models"].items():
        for v in PRECISIONS:
            faces = row["faces"].get(v)
            if not faces:
                continue
            t = faces["total"]
            bins = [f"{a}/{b}" for a, b in t["by_size"].values()]
            rows.append([f"{key} {v}", len(faces["photos"]), f"{t['found']}/{t['reference']}", *bins, t["extra"]])
    lines += table(header, rows)
    sweep = sorted({t for row in result["models"].values() for f in row["faces"].values() for t in f.get("sweep", {})}, key=float)
    if sweep:
        lines += ["", "## Faces found (extra) at other score thresholds: the app threshold is a choice, and scores differ by family", "",
                  "int8 rows: found / reference faces on the held-out photos (extra); then fp32's found on the same photos at the same threshold.", ""]
        header = ["file", "app threshold"] + [f"score >= {t}" for t in sweep]
        rows = []
        for key, row in result["models"].items():
            for v in ("fp32", "int8"):
                faces = row["faces"].get(v)
                if not faces:
                    continue
                cells = [f"{key} {v}" + (" (held-out; fp32 there)" if v == "int8" else ""), row["app_score_threshold"]]
                for t in sweep:
                    at = faces["sweep"].get(t)
                    fp32_at = row["faces"]["fp32"]["sweep"].get(t)
                    there = f"; {sum(fp32_at['found_per_photo'][p] for p in faces['photos'])}" if v == "int8" and fp32_at else ""
                    cells.append("-" if at is None else f"{at['found']}/{at['reference']} ({at['extra']}){there}")
                rows.append(cells)
        lines += table(header, rows)
        lines += ["", "'-': the decode keeps no score that low (BlazeFace's weighted NMS starts at its app threshold)."]
    photos = sorted(result["reference_faces"])
    lines += ["", "## fp32 faces per photo", ""]
    header = ["model @ input"] + [f"{p} ({result['reference_faces'][p]})" for p in photos]
    rows = []
    for key, row in result["models"].items():
        per = row["faces"].get("fp32", {}).get("per_photo", {})
        rows.append([key] + [str(per[p]["found"]) if p in per else "-" for p in photos])
    lines += table(header, rows)
    int8_calib = {tuple(row["faces"]["int8"]["calibration_photos"]) for row in result["models"].values() if "int8" in row["faces"]}
    check = result["reference_check_against_shared"]
    lines += [
        "",
        "## Notes",
        "",
        f"- int8 calibration photos: {'; '.join(', '.join(c) for c in int8_calib) or '-'}; int8 keeps the float layers its model declares.",
        "- The reference against the reference implementation's own detections (`shared/reference/`, score >= 0.5, same face at IoU >= 0.99): "
        + ("; ".join(f"{img}: {c['matched_iou_0.99']}/{c['shared_reference_faces']} (ours {c['ours']})" for img, c in check.items()) or "not available"),
        "- App thresholds (a face counts at score >=): "
        + ", ".join(sorted({f"{row['model']} {row['app_score_threshold']}" for row in result["models"].values()}))
        + "; resize: " + ", ".join(sorted({f"{row['model']} {row['resize']}" for row in result["models"].values()})) + ".",
        "- BlazeFace runs only at its native input (short 128, full 192); its rows are at that size, with MediaPipe's letterbox and thresholds.",
        "- ARM instructions: emulated Neoverse-N1, 1 thread, millions per invoke (`mobilekit.benchmarks.arm_count`, group photo), from "
        + "; ".join(f"`{src}` ({len(files)} files)" for src, files in _arm_sources(result).items())
        + ". '-' = not counted.",
        f"- Whole run: {result['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="detector_choice", description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", type=existing_dir, help="folder of mobilekit export folders (or one)")
    parser.add_argument("--from-json", type=Path, help="re-write the report of a recorded JSON (no measurement)")
    parser.add_argument("--note", default="", help="how the machine was used meanwhile, recorded and printed (e.g. 'loaded: ...')")
    parser.add_argument("--shared", type=existing_dir, default=Path("../shared"))
    parser.add_argument("--threads", type=thread_counts, default=[1, 2])
    parser.add_argument("--rounds", type=positive_int, default=10)
    parser.add_argument("--calls", type=positive_int, default=5)
    parser.add_argument("--arm", type=Path, action="append", default=[], help="an arm_count JSON whose counts replace the recorded ones of the same file name")
    parser.add_argument("--sweep", type=lambda text: [float(t) for t in text.split(",")], default=[0.5, 0.7, 0.9], help="other score thresholds for the faces of fp32 and int8")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="detector_choice", help="report file stem")
    args = parser.parse_args(argv)
    if not args.from_json and args.exports is None:
        parser.error("--exports is required (or --from-json)")
    if args.from_json:
        result = json.loads(args.from_json.read_text())
    else:
        try:
            result = run(Path(args.exports), Path(args.shared), args.threads, args.rounds, args.calls, [ARM_RESULTS, *args.arm], tuple(args.sweep))
        except MobilekitError as exc:
            parser.exit(2, f"detector_choice: {exc}\n")
    if args.note:
        result["note"] = args.note
    write_report(args.out, args.name, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
