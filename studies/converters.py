"""onnx2tf against litert-torch: converter x model x precision -> max error vs PyTorch, faces, latency, conversion time.

    python -m studies.converters --imgsz 320 --out studies/results/converters_cpu_320.json
    python -m studies.converters --table --out studies/results/converters_cpu_320.json

Every registered model is exported with ``--converter both`` (fp32 and fp16; real weights where the shared
folder has them, seeded random init otherwise). Errors and faces come from ``check_artefacts`` with the
XNNPACK delegate (what apps run) against the float64 PyTorch reference; latency is each file's
model-only median at 1 and 2 threads, the two converters' files of a precision timed in alternation.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from mobilekit.atomic import write_json_atomic
from mobilekit.benchmarks.markdown import table
from mobilekit.converters import build_source_model, check_artefacts, export_model, source_metadata
from mobilekit.converters.parity import load_inputs
from mobilekit.converters.runtimes import TFLiteRuntime
from mobilekit.converters.sidecars import read_sidecar
from mobilekit.converters.variants import VARIANT
from mobilekit.image_io import list_images
from mobilekit.models import list_models
from mobilekit.paths import shared_dir
from mobilekit.timing import interleaved_medians

WEIGHTS = {"retinaface_mnet025": "retinaface_mnet025_widerface.pth", "featherface_v1": "featherface_v1_widerface.pth"}
FORMATS = ("fp32", "fp16", "fp32_litert", "fp16_litert")


def export_both(name: str, imgsz: int, out: Path) -> tuple[list[Path], list[str]]:
    weights = shared_dir() / "weights" / WEIGHTS[name] if name in WEIGHTS else None
    model = build_source_model(name, weights, None if weights else 0)
    warnings: list[str] = []
    paths = export_model(model, imgsz, out, formats=FORMATS, source=source_metadata(weights, None if weights else 0, name), warn=warnings.append)
    return paths, warnings


def latencies(paths: list[Path], threads: int, image) -> dict[str, float]:
    """Model-only median ms per file; files of one precision (the converters' twins) interleaved."""
    result: dict[str, float] = {}
    for kind in ("fp32", "fp16"):
        group = [p for p in paths if VARIANT[read_sidecar(p)["artefact"]["variant"]].kind == kind]
        runners = {}
        for path in group:
            runtime = TFLiteRuntime(path, num_threads=threads)
            x = runtime.prepare(image[None])
            runners[path.name] = lambda runtime=runtime, x=x: runtime.infer(x)
        result.update(interleaved_medians(runners, rounds=8, calls=5))
    return result


def run(imgsz: int, images: Path, out_dir: Path, models: list[str]) -> dict:
    rows, notes = [], {}
    image_names = [p.name for p in list_images(images)]
    for name in models:
        export_dir = out_dir / name
        paths, warnings = export_both(name, imgsz, export_dir)
        notes[name] = warnings
        report = check_artefacts(export_dir, images)
        parity = {a["file"]: a for a in report["artefacts"]}
        image = load_inputs(list_images(images)[:1], build_source_model(name, None, 0).deploy, (imgsz, imgsz))[0]
        timing = {t: latencies(paths, t, image) for t in (1, 2)}
        for path in paths:
            meta, entry = read_sidecar(path), parity[path.name]
            rows.append({
                "model": name,
                "weights": "trained" if name in WEIGHTS else "random init (seed 0)",
                "converter": meta["artefact"]["converter"],
                "precision": VARIANT[meta["artefact"]["variant"]].kind,
                "file": path.name,
                "max_abs_error": max(t["max_abs"] for t in entry["tensors"].values()),
                "max_abs_error_by_output": {k: t["max_abs"] for k, t in entry["tensors"].items()},
                "faces": entry["faces"]["faces"],
                "faces_found": entry["faces"]["found"],
                "parity_passed": entry["passed"],
                "latency_ms_1_thread": timing[1][path.name],
                "latency_ms_2_threads": timing[2][path.name],
                "conversion_seconds": meta["artefact"]["export_seconds"],
                "ops": meta["tflite"]["analysis"]["ops"],
                "gpu_delegate_compatible": meta["tflite"]["analysis"]["gpu_delegate_compatible"],
                "xnnpack_load": meta["tflite"]["analysis"]["xnnpack_load"]["ok"],
            })  # fmt: skip
    return {
        "imgsz": imgsz,
        "images": image_names,
        "reference": report["reference"],
        "tflite_kernels": "XNNPACK delegate",
        "machine": {"cpu": platform.processor() or platform.machine(), "note": "2 cores shared with other jobs: latencies interleaved per precision, medians"},
        "notes": notes,
        "rows": rows,
    }


def markdown_table(result: dict) -> str:
    """The recorded rows as the Markdown table of ``studies/converters.md``."""
    header = ["model", "weights", "precision", "converter", "max abs error", "faces found", "ms, 1 thread", "ms, 2 threads", "conversion s"]
    rows = [[r["model"], r["weights"], r["precision"], r["converter"], f"{r['max_abs_error']:.2g}", f"{r['faces_found']}/{r['faces']}",
             f"{r['latency_ms_1_thread']:.1f}", f"{r['latency_ms_2_threads']:.1f}", f"{r['conversion_seconds']:.0f}"]
            for r in sorted(result["rows"], key=lambda r: (r["model"], r["precision"] != "fp32", r["converter"] != "onnx2tf"))]  # fmt: skip
    return "\n".join(table(header, rows, "llllrrrrr"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--images", type=Path, default=shared_dir() / "images")
    parser.add_argument("--exports", type=Path, default=Path("build/converter_exports"))
    parser.add_argument("--models", default=",".join(list_models()))
    parser.add_argument("--out", type=Path, required=True, help="JSON results (with --table: read, not measured).")
    parser.add_argument("--table", action="store_true", help="Print the Markdown table of the results in --out.")
    args = parser.parse_args()
    if not args.table:
        write_json_atomic(args.out, run(args.imgsz, args.images, args.exports.resolve(), args.models.split(",")))
    print(markdown_table(json.loads(args.out.read_text())))


if __name__ == "__main__":
    main()
