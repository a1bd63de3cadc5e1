"""fp32 and int8 files side by side: latency (interleaved, 1 and 2 threads) and the faces an app keeps.

Each ``--export NAME=DIR`` is a ``mobilekit export --int8`` folder (one ``--keep-float`` policy per
folder, the same calibration photos); its int8 file (float I/O) is timed beside the fp32 file of the
first folder and ONNX Runtime on its simplified ONNX, in one alternation, and judged by ``mobilekit
parity``'s rule on the photos its calibration did not use (recall: PyTorch faces >= 0.5 found at >= 0.3,
IoU >= 0.5; precision the other way round). ``--extra NAME=FILE`` adds other files (another
converter's, an earlier export) to the same alternation.

    python -m studies.int8_policies --export none=rf_none --export speed=rf_speed \\
        --weights W.pth --images photos/ --out studies/results
"""

from __future__ import annotations

import os
from pathlib import Path

from mobilekit.benchmarks.arguments import Parser, existing_dir, existing_file, named_path, positive_int, thread_counts
from mobilekit.benchmarks.hardware import machine_description
from mobilekit.benchmarks.markdown import table, write_report
from mobilekit.converters.parity import check_artefacts, load_inputs
from mobilekit.converters.runtimes import OnnxRuntime, TFLiteRuntime
from mobilekit.converters.sidecars import read_sidecar
from mobilekit.converters.variants import artefact_path
from mobilekit.errors import MobilekitError
from mobilekit.image_io import list_images
from mobilekit.timing import interleaved_medians


def _files(exports: dict[str, Path]) -> dict[str, Path]:
    """``{label: file}``: ORT and fp32 from the first folder, then every folder's int8 file."""
    first = next(iter(exports.values()))
    fp32 = next(first.glob("*_fp32.tflite"), None)
    if fp32 is None:
        raise MobilekitError(f"no *_fp32.tflite in {first} (export it with mobilekit export --int8)")
    stem = fp32.name.removesuffix("_fp32.tflite")
    files = {"onnxruntime": artefact_path(first, stem, "onnx_sim"), "fp32": fp32}
    for label, folder in exports.items():
        files[f"int8 ({label})"] = artefact_path(folder, stem, "int8")
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise MobilekitError(f"missing file(s) {missing}: every --export folder needs the same model's int8 export")
    return files


def _faces(folder: Path, images: Path, weights: Path) -> dict:
    """The int8 file's held-out face counts from a parity run over ``folder``."""
    report = check_artefacts(folder, images, weights)
    (result,) = [a for a in report["artefacts"] if a["variant"] == "int8"]
    keys = ("faces", "found", "recall", "file_faces", "confirmed", "precision", "score_drift_median", "score_drift_max", "images")
    return {key: result["faces"].get(key) for key in keys} | {"passed": result["passed"]}


def run(exports: dict[str, Path], weights: Path, images: Path, threads: list[int], rounds: int, calls: int, extra: dict[str, Path] | None = None) -> dict:
    files = _files(exports) | (extra or {})
    meta = read_sidecar(files["fp32"])
    image = load_inputs(list_images(images)[:1], _deploy(files["fp32"], weights), tuple(meta["input_hw"]))
    result = {"machine": machine_description(), "load_average_at_start": os.getloadavg(), "files": {k: str(v) for k, v in files.items()}, "latency_ms": {}}
    for count in threads:
        runners = {}
        for label, path in files.items():
            runtime = OnnxRuntime(path, num_threads=count) if path.suffix == ".onnx" else TFLiteRuntime(path, num_threads=count)
            x = runtime.prepare(image)
            runners[label] = lambda runtime=runtime, x=x: runtime.infer(x)
        result["latency_ms"][str(count)] = interleaved_medians(runners, rounds=rounds, calls=calls)
    result["keep_float"] = {f"int8 ({label})": read_sidecar(files[f"int8 ({label})"]).get("tflite", {}).get("keep_float") for label in exports}
    result["faces_held_out"] = {f"int8 ({label})": _faces(folder, images, weights) for label, folder in exports.items()}
    return result


def _deploy(fp32: Path, weights: Path):
    from mobilekit.converters.model_source import rebuild_source_model

    return rebuild_source_model(read_sidecar(fp32)["model"], weights).deploy


def markdown(result: dict) -> str:
    threads = list(result["latency_ms"])
    header = ["file"] + [h for t in threads for h in (f"ms, {t} thread(s)", "x fp32")] + ["held-out faces kept (recall)", "precision", "float layers"]
    rows = []
    for label in result["files"]:
        cells = [label]
        for t in threads:
            ms = result["latency_ms"][t]
            cells += [f"{ms[label]:.2f}", f"{ms[label] / ms['fp32']:.2f}"]
        faces = result["faces_held_out"].get(label)
        cells.append(f"{faces['found']}/{faces['faces']} ({100 * faces['recall']:.1f} %)" if faces else "-")
        cells.append(f"{100 * faces['precision']:.1f} %" if faces and faces["precision"] is not None else "-")
        keep = result["keep_float"].get(label)
        cells.append("-" if keep is None else f"{len(keep.get('layers', []))} (`--keep-float {','.join(keep.get('requested') or ['none'])}`)")
        rows.append(cells)
    return "\n".join(table(header, rows, "l" + "r" * (len(header) - 2) + "l")) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="int8_policies", description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=named_path(Path.is_dir), action="append", required=True, help="NAME=DIR, one per --keep-float policy")
    parser.add_argument("--extra", type=named_path(Path.is_file), action="append", default=[], help="NAME=FILE, another .tflite or .onnx timed in the same alternation")
    parser.add_argument("--weights", type=existing_file(), required=True)
    parser.add_argument("--images", type=existing_dir, required=True)
    parser.add_argument("--threads", type=thread_counts, default=[1, 2])
    parser.add_argument("--rounds", type=positive_int, default=12)
    parser.add_argument("--calls", type=positive_int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        result = run(dict(args.export), args.weights, args.images, args.threads, args.rounds, args.calls, dict(args.extra))
    except MobilekitError as exc:
        parser.exit(2, f"int8_policies: {exc}\n")
    stem = Path(result["files"]["fp32"]).name.removesuffix("_fp32.tflite")
    write_report(args.out, f"int8_policies_{stem}", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
