"""A deterministic ARM cost: guest instructions per invoke of TFLite files on emulated ARM64 CPUs.

Each file runs under LiteRT's own aarch64 wheel in qemu user mode (``mobilekit arm-setup``), XNNPACK on
one thread. The TCG plugin ``mobilekit/native/arm_count_plugin.c`` counts the instructions executed between
two marker system calls around ``interpreter.invoke()`` (the protocol: ``converters/arm_guest.py``).
After one warm-up invoke, :data:`REPEATS` invokes are counted and the figure is their median. The counts
repeat exactly from run to run; within one run, files with ops outside XNNPACK vary by a few thousand
instructions from invoke to invoke (< 0.01 %). Compare counts within one ``-cpu`` only: each CPU runs
other XNNPACK kernels. They measure work, not a phone's time (no caches or pipelines are modelled).

    python -m mobilekit.benchmarks.arm_count EXPORT_DIR_OR_FILE... --cpus cortex-a53,neoverse-n1 --out DIR
        [--image PHOTO] [--arm-cache DIR]

writes ``DIR/arm_instructions.json`` and ``.md``: instructions per file and CPU, int8/fp32 per model,
each model against RetinaFace, and whether each int8 file's faces on ARM equal x86's (read from
``EXPORT_DIR/parity.json`` when ``mobilekit parity --arm`` wrote it for that file). One file's
instructions per op: ``studies/arm_ops.py`` in the repository (a study, not installed).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from mobilekit.benchmarks.arguments import Parser, existing_file
from mobilekit.benchmarks.markdown import table, write_report
from mobilekit.converters.arm_emulation import count_instructions, describe_cpu, guest_model, parse_cpus
from mobilekit.converters.arm_setup import ArmCache, require_ready
from mobilekit.converters.model_source import source_model_name
from mobilekit.converters.sidecars import find_artefacts, read_sidecar, sha256_file, sidecar_path
from mobilekit.errors import MobilekitError
from mobilekit.image_io import read_image, resize_to_input

REPEATS = 3
REFERENCE_MODEL = "retinaface_mnet025"
METHOD = (
    "guest instructions between two marker system calls around interpreter.invoke() (qemu TCG plugin mobilekit/native/arm_count_plugin.c), "
    f"LiteRT's aarch64 wheel, XNNPACK, 1 thread; median of {REPEATS} invokes after a warm-up; compare within one CPU only"
)


def tflite_files(targets: list[Path]) -> list[tuple[Path, dict]]:
    """The TFLite files of export folders or files, each with its sidecar."""
    files = []
    for target in targets:
        if target.is_dir():
            files += [(path, meta) for path, meta in find_artefacts(target) if path.suffix == ".tflite"]
        elif target.suffix == ".tflite" and sidecar_path(target).is_file():
            files.append((target, read_sidecar(target)))
        else:
            raise MobilekitError(f"{target}: not an export folder or a .tflite file with its sidecar .json")
    return files


def prepared_image(image_path: Path, meta: dict) -> np.ndarray:
    """The photo resized as the file's model resizes at inference, ``[H, W, 3]``."""
    deploy = meta["deploy"]
    return resize_to_input(read_image(image_path), tuple(meta["input_hw"]), deploy["resize"], deploy["pad_value"])[0]


def count_files(cache: ArmCache, cpus: list[str], files: list[tuple[Path, dict]], image_path: Path, on_row=None) -> list[dict]:
    """One row per file: instructions per invoke on each CPU (median of :data:`REPEATS`), every count, errors."""
    models = [guest_model(path, prepared_image(image_path, meta)[None])[0] for path, meta in files]
    rows = [
        {"file": path.name, "path": str(path), "model": source_model_name(meta["model"]), "variant": meta["artefact"]["variant"],
         "imgsz": list(meta["input_hw"]), "instructions": {}, "counts": {}, "errors": {}}
        for path, meta in files
    ]  # fmt: skip
    for cpu in cpus:
        for row, run in zip(rows, count_instructions(cache, cpu, models, REPEATS)):
            if run.counts:
                row["instructions"][cpu] = int(statistics.median(run.counts))
                row["counts"][cpu] = run.counts
            else:
                row["errors"][cpu] = run.error
            if on_row:
                on_row(row, cpu)
    return rows


def int8_faces_on_arm(files: list[tuple[Path, dict]]) -> dict[str, dict[str, dict]]:
    """``{file: {cpu: parity's faces-versus-x86 summary}}`` (``identical``, and x86's ``faces`` the ARM run
    ``found``) for the int8 files whose export folder's parity.json (``mobilekit parity --arm``) checked
    this very file (same sha256)."""
    from mobilekit.converters.parity_report import export_report_path

    found: dict[str, dict[str, dict]] = {}
    for folder in {path.parent for path, _ in files}:
        report_path = export_report_path(folder)
        if not report_path.is_file():
            continue
        for artefact in json.loads(report_path.read_text()).get("artefacts", []):
            path = folder / artefact["file"]
            if artefact["precision"] == "int8" and artefact.get("arm") and path.is_file() and artefact.get("sha256") == sha256_file(path):
                found[artefact["file"]] = {a["cpu"]: a["versus_x86"]["faces"] for a in artefact["arm"] if a["versus_x86"]}
    return found


def ratios(rows: list[dict], cpus: list[str]) -> dict:
    """int8/fp32 instructions per model and CPU, and each model's fp32/int8 files against RetinaFace's."""
    by_key = {(r["model"], tuple(r["imgsz"]), r["variant"]): r["instructions"] for r in rows}
    int8_vs_fp32, vs_reference = {}, {}
    for (model, size, variant), counts in by_key.items():
        label = f"{model} @{'x'.join(map(str, size))}"
        fp32 = by_key.get((model, size, "fp32"), {})
        if variant == "int8" and fp32:
            int8_vs_fp32[label] = {cpu: round(counts[cpu] / fp32[cpu], 3) for cpu in cpus if cpu in counts and cpu in fp32}
        reference = by_key.get((REFERENCE_MODEL, size, variant), {})
        if model != REFERENCE_MODEL and reference:
            vs_reference[f"{label} {variant}"] = {cpu: round(counts[cpu] / reference[cpu], 3) for cpu in cpus if cpu in counts and cpu in reference}
    return {"int8_vs_fp32": int8_vs_fp32, "vs_retinaface": vs_reference}


def markdown(result: dict) -> str:
    cpus = [c["cpu"] for c in result["cpus"]]
    setup = result["setup"]
    faces = result["int8_faces_equal_x86"]
    lines = [
        "# Instructions per invoke on emulated ARM64 CPUs",
        "",
        f"qemu-user {setup['qemu']} (user mode, TCG plugin `mobilekit/native/arm_count_plugin.c`), LiteRT {setup['wheels'].get('ai_edge_litert')} "
        f"aarch64 wheel (numpy {setup['wheels'].get('numpy')}), Debian arm64 python3.11 {setup['python3.11_arm64']}; XNNPACK, 1 thread; "
        f"median of {result['repeats']} invokes after a warm-up, on `{Path(result['image']).name}` resized as each model resizes. "
        "Counts compare within one CPU only.",
        *([f"Files: {result['notes']}"] if result.get("notes") else []),
        "",
        *table(["CPU", "qemu -cpu", "MIDR", "features"], [[c["cpu"], f"`{c['qemu_cpu']}`", c["midr"], c["features"]] for c in result["cpus"]], "llll"),
        "",
        *table(
            ["file", *(f"{cpu} (M instr.)" for cpu in cpus), "int8 faces on ARM identical to x86's"],
            [[r["file"], *(_millions(r, cpu) for cpu in cpus), _faces_cell(faces.get(r["file"]), r["variant"])] for r in result["files"]],
        ),
        "",
        "int8 / fp32 instructions:",
        "",
        *table(["model", *cpus], [[label, *(v.get(cpu, "-") for cpu in cpus)] for label, v in result["ratios"]["int8_vs_fp32"].items()]),
        "",
        f"Against {REFERENCE_MODEL} (same size and precision):",
        "",
        *table(["model", *cpus], [[label, *(v.get(cpu, "-") for cpu in cpus)] for label, v in result["ratios"]["vs_retinaface"].items()]),
    ]
    return "\n".join(lines) + "\n"


def _millions(row: dict, cpu: str) -> str:
    if cpu in row["instructions"]:
        return f"{row['instructions'][cpu] / 1e6:.2f}"
    return f"error: {row['errors'].get(cpu)}"


def _faces_cell(per_cpu: dict[str, dict] | None, variant: str) -> str:
    if variant != "int8":
        return ""
    if not per_cpu:
        return "not checked (run mobilekit parity --arm)"
    cells = [f"{cpu}: {'yes' if f['identical'] else 'NO'}" for cpu, f in per_cpu.items()]
    counts = {(f["found"], f["faces"]) for f in per_cpu.values()}
    faces = "; ".join(f"{found}/{total}" for found, total in sorted(counts))
    return f"{', '.join(cells)} (x86's faces within IoU 0.9: {faces})"


def run(targets: list[Path], cache: ArmCache, cpus: list[str], image: Path) -> dict:
    """Every TFLite file of ``targets`` counted on each CPU, the ratios and the int8 faces check."""
    files = tflite_files(targets)
    if not files:
        raise MobilekitError(f"no TFLite files with sidecars in {', '.join(map(str, targets))}")
    rows = count_files(cache, cpus, files, image, on_row=lambda row, cpu: print(f"  {row['file']} on {cpu}: {_millions(row, cpu)} M", flush=True))
    return {
        "setup": json.loads(cache.manifest.read_text()),
        "cpus": [describe_cpu(cache, cpu) for cpu in cpus],
        "image": str(image),
        "repeats": REPEATS,
        "files": rows,
        "ratios": ratios(rows, cpus),
        "int8_faces_equal_x86": int8_faces_on_arm(files),
    }


def attach_to_benchmark(report: dict, cache: ArmCache, cpus: list[str], image: Path, on_row=None) -> None:
    """``mobilekit benchmark --arm-count``: the counts of the report's TFLite files as
    ``report["arm_instructions"]``, and each TFLite timing row's beside its milliseconds."""
    paths = list(dict.fromkeys(row["path"] for row in report["rows"] if row["backend"] == "tflite" and row.get("path")))
    rows = count_files(cache, cpus, tflite_files([Path(p) for p in paths]), image, on_row)
    report["arm_instructions"] = {"setup": json.loads(cache.manifest.read_text()), "cpus": [describe_cpu(cache, cpu) for cpu in cpus],
                                  "method": METHOD, "files": rows}  # fmt: skip
    counts = {row["path"]: row["instructions"] for row in rows}
    for row in report["rows"]:
        if row.get("path") in counts:
            row["arm_instructions"] = counts[row["path"]]


def main(argv: list[str] | None = None) -> int:
    from mobilekit.benchmarks.cases import default_image

    parser = Parser(prog="arm_count", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", type=Path, nargs="+", help="export folders or .tflite files")
    parser.add_argument("--cpus", default="cortex-a53,neoverse-n1")
    parser.add_argument("--image", type=existing_file(), default=None, help="photo fed to every file (default: a shared photo)")
    parser.add_argument("--arm-cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        cache = require_ready(args.arm_cache)
        result = run(args.targets, cache, parse_cpus(args.cpus, cache), args.image or default_image())
    except MobilekitError as exc:
        parser.exit(2, f"arm_count: {exc}\n")
    write_report(args.out, "arm_instructions", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
