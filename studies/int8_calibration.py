"""int8 calibration choices judged on photos the calibration never saw, over every split of a photo folder.

The model is converted to onnx2tf's float SavedModel once. For each way to split ``--images`` into a
calibration half and a judged half, it is calibrated on the first half with each range estimator
(``--ranges``, see ``converters.activation_ranges``) and quantised with each ``--keep-float`` entry
(``none`` for a fully int8 graph); each int8 file runs under XNNPACK on the other half and is judged
by ``mobilekit parity``'s rule against PyTorch (recall: PyTorch's faces >= 0.5 found at >= 0.3, IoU >=
0.5; precision the other way round). The fp32 file and every int8 file of the first split are timed
in one alternation.

    python -m studies.int8_calibration featherface_v1 --weights W.pth --images photos/ \\
        --out studies/results
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import numpy as np

from mobilekit.benchmarks.arguments import Parser, existing_dir, existing_file, positive_int, thread_counts
from mobilekit.benchmarks.hardware import machine_description
from mobilekit.benchmarks.markdown import table, write_report
from mobilekit.converters.selective_int8 import parse_keep_float
from mobilekit.errors import MobilekitError
from mobilekit.image_io import list_images
from mobilekit.timing import interleaved_medians

FACE_COUNTS = ("faces", "found", "file_faces", "confirmed")


def _float_model(name: str, weights: Path, images: np.ndarray, work: Path):
    """(source model, named SavedModel folder, ONNX input name) for ``name`` at the photos' size."""
    import onnx

    from mobilekit.converters import build_source_model, export_model, source_metadata
    from mobilekit.converters.onnx2tf_child import saved_model

    model = build_source_model(name, weights)
    (onnx_path,) = export_model(model, images.shape[1:3], work, formats=("onnx_sim",), source=source_metadata(weights, None))
    input_name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
    named_dir, _ = saved_model({"onnx_path": str(onnx_path), "work_dir": str(work), "input_name": input_name}, images[:1])
    return model, named_dir, input_name


def _judge(path: Path, deploy, images: np.ndarray, reference: list[dict]) -> dict:
    from mobilekit.converters.parity import int8_faces_summary
    from mobilekit.converters.runtimes import TFLiteRuntime

    summary = int8_faces_summary(deploy, TFLiteRuntime(path, 2), images, reference)
    return {key: summary[key] for key in FACE_COUNTS}


def halves(count: int) -> list[tuple[int, ...]]:
    """Every choice of ``count // 2`` photo indices (the calibration half), in lexicographic order."""
    return list(itertools.combinations(range(count), count // 2))


def run(name: str, weights: Path, images_dir: Path, imgsz: int, ranges: list[str], keep_float: list[str], threads: list[int],
        max_splits: int | None = None, splits: list[tuple[int, ...]] | None = None, rounds: int = 10) -> dict:  # fmt: skip
    """``splits`` (calibration photo indices into the sorted folder; default: :func:`halves`, the first
    ``max_splits`` of them)."""
    from mobilekit.converters.activation_ranges import estimate_ranges
    from mobilekit.converters.calibration import load_calibration_images
    from mobilekit.converters.onnx2tf_child import calibrate, convert_variant
    from mobilekit.converters.runtimes import TFLiteRuntime, TorchRuntime
    from mobilekit.converters.selective_int8 import resolve_layers
    from mobilekit.models import create_model

    paths = list_images(images_dir)
    if len(paths) < 2:
        raise MobilekitError(f"--images {images_dir}: needs at least 2 photos, found {len(paths)}")
    images = load_calibration_images(paths, create_model(name).deploy, (imgsz, imgsz))
    splits = (splits or halves(len(paths)))[:max_splits]
    result = {"machine": machine_description(), "load_average_at_start": os.getloadavg(), "model": name, "imgsz": imgsz, "photos": [p.name for p in paths], "splits": [], "latency_ms": {}}
    with tempfile.TemporaryDirectory(prefix="int8_calibration_") as scratch:
        work = Path(scratch)
        model, named_dir, input_name = _float_model(name, weights, images, work)
        torch_runtime = TorchRuntime(model)
        reference = [torch_runtime.run(image[None]) for image in images]
        files = {"fp32": work / "fp32.tflite"}
        files["fp32"].write_bytes(convert_variant(named_dir, "fp32", None))
        for split_index, calib in enumerate(splits):
            judged = [i for i in range(len(paths)) if i not in calib]
            row = {"calibration": [paths[i].name for i in calib], "cases": {}}
            recorded = calibrate(named_dir, images[list(calib)], input_name)
            for estimator in ranges:
                calibrated = estimate_ranges(recorded, images[list(calib)], estimator)
                for keep in keep_float:
                    case = f"{estimator} / {keep}"
                    layers = resolve_layers(calibrated, list(parse_keep_float(keep)))
                    path = work / f"int8_split{split_index}_case{len(row['cases'])}.tflite"
                    path.write_bytes(convert_variant(named_dir, "int8", calibrated, layers))
                    row["cases"][case] = _judge(path, model.deploy, images[judged], [reference[i] for i in judged]) | {"float_layers": len(layers)}
                    if split_index == 0:
                        files[f"int8 {case}"] = path
            result["splits"].append(row)
            print(f"split {split_index + 1}/{len(splits)}: " + "; ".join(f"{c} {v['found']}/{v['faces']}" for c, v in row["cases"].items()), flush=True)
        for count in threads:
            runners = {}
            for label, path in files.items():
                runtime = TFLiteRuntime(path, num_threads=count)
                x = runtime.prepare(images[:1])
                runners[label] = lambda runtime=runtime, x=x: runtime.infer(x)
            result["latency_ms"][str(count)] = interleaved_medians(runners, rounds=rounds, calls=5)
    return result


def totals(result: dict) -> dict[str, dict]:
    """Per case: faces summed over the splits, and the worst split's recall."""
    out = {}
    for case in result["splits"][0]["cases"]:
        rows = [split["cases"][case] for split in result["splits"]]
        summed = {key: sum(r[key] for r in rows) for key in FACE_COUNTS}
        recalls = [r["found"] / r["faces"] for r in rows if r["faces"]]
        out[case] = summed | {"worst_recall": min(recalls) if recalls else None, "float_layers": rows[0]["float_layers"]}
    return out


def _percent(part: float | None, whole: float) -> str:
    return "-" if part is None or not whole else f"{100 * part / whole:.1f} %"


def markdown(result: dict) -> str:
    threads = list(result["latency_ms"])
    machine = result["machine"]
    lines = [
        f"{result['model']} at {result['imgsz']}: {len(result['splits'])} splits of {len(result['photos'])} photos (calibrate on one half, judge the other);",
        f"{machine['cpu_model']}, {machine['usable_cores']} cores, {machine['date_utc']}, load average {result['load_average_at_start'][0]:.2f} at the start; "
        "latency under XNNPACK, interleaved, int8 files of the first split.",
        "",
    ]
    header = ["ranges / --keep-float", "float ops", "recall (all splits)", "worst split", "precision"] + [f"ms, {t} thread(s)" for t in threads] + [f"x fp32, {threads[0]} thread(s)"]
    rows = [["fp32", "all", "-", "-", "-"] + [f"{result['latency_ms'][t]['fp32']:.1f}" for t in threads] + ["1.00"]]
    for case, s in totals(result).items():
        ms = [result["latency_ms"][t][f"int8 {case}"] for t in threads]
        rows.append([case, str(s["float_layers"]), f"{s['found']}/{s['faces']} ({_percent(s['found'], s['faces'])})", _percent(s["worst_recall"], 1),
                     _percent(s["confirmed"], s["file_faces"])] + [f"{v:.1f}" for v in ms] + [f"{ms[0] / result['latency_ms'][threads[0]]['fp32']:.2f}"])  # fmt: skip
    lines += table(header, rows, "llrrr" + "r" * (len(threads) + 1))
    lines += ["", "Per split (faces found / PyTorch's faces on the judged half):", ""]
    cases = list(result["splits"][0]["cases"])
    lines += table(["calibrated on"] + cases, [[", ".join(s["calibration"])] + [f"{s['cases'][c]['found']}/{s['cases'][c]['faces']}" for c in cases] for s in result["splits"]])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="int8_calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--weights", type=existing_file(), required=True)
    parser.add_argument("--images", type=existing_dir, required=True)
    parser.add_argument("--imgsz", type=positive_int, default=640)
    parser.add_argument("--calib-ranges", default="minmax,mean", help="range estimators, comma-separated")
    parser.add_argument("--keep-float", action="append", default=None, help="a --keep-float value per case (repeat; not auto or speed); 'none' for fully int8")
    parser.add_argument("--threads", type=thread_counts, default=[1, 2])
    parser.add_argument("--max-splits", type=positive_int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from mobilekit.converters.activation_ranges import RANGE_ESTIMATORS
    from mobilekit.converters.onnx2tf_child import WorkerError
    from mobilekit.converters.selective_int8 import KeepFloatError

    ranges = args.calib_ranges.split(",")
    if unknown := [r for r in ranges if r not in RANGE_ESTIMATORS]:
        parser.error(f"argument --calib-ranges: unknown estimator(s) {unknown}; choose from {', '.join(RANGE_ESTIMATORS)}")
    if policies := [k for k in args.keep_float or [] if k in ("auto", "speed")]:
        parser.error(f"argument --keep-float: {policies[0]!r} chooses layers itself; name layers, 'stem', 'heads', 'outputs' or 'none'")
    try:
        result = run(args.model, args.weights, args.images, args.imgsz, ranges, args.keep_float or ["none", "stem"], args.threads, max_splits=args.max_splits)
    except (MobilekitError, KeepFloatError, WorkerError) as exc:
        parser.exit(2, f"int8_calibration: {exc}\n")
    write_report(args.out, f"int8_calibration_{args.model}_{args.imgsz}", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
