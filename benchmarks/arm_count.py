"""A deterministic ARM cost: guest instructions per invoke of TFLite files on emulated ARM64 CPUs.

Each file runs under LiteRT's own aarch64 wheel in qemu user mode (``mobilekit arm-setup``), XNNPACK on
one thread. The TCG plugin ``mobilekit/native/arm_count_plugin.c`` counts the instructions executed between
two marker system calls around ``interpreter.invoke()`` (the protocol: ``converters/arm_guest.py``).
After one warm-up invoke, :data:`REPEATS` invokes are counted and the figure is their median. The counts
repeat exactly from run to run; within one run, files with ops outside XNNPACK vary by a few thousand
instructions from invoke to invoke (< 0.01 %). Compare counts within one ``-cpu`` only: each CPU runs
other XNNPACK kernels. They measure work, not a phone's time (no caches or pipelines are modelled).

    python -m mobilekit.benchmarks.arm_count EXPORT_DIR_OR_FILE... --cpus cortex-a53,neoverse-n1 --out DIR
        [--op-profile FILE.tflite --op-cpu neoverse-n1] [--image PHOTO] [--arm-cache DIR]

writes ``DIR/arm_instructions.json`` and ``.md``: instructions per file and CPU, int8/fp32 per model,
each model against RetinaFace, whether each int8 file's faces on ARM equal x86's (read from
``EXPORT_DIR/parity.json`` when ``mobilekit parity --arm`` wrote it for that file), and with
``--op-profile`` one file's instructions per op (prefix models cut as in ``op_profile.py``).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from mobilekit.benchmarks.arguments import Parser, existing_file
from mobilekit.benchmarks.markdown import table, write_report
from mobilekit.converters.arm_emulation import GuestModel, count_instructions, describe_cpu, guest_model, parse_cpus
from mobilekit.converters.arm_setup import ArmCache, require_ready
from mobilekit.converters.metadata import find_artefacts, read_sidecar, sha256_file, sidecar_path
from mobilekit.converters.model_source import source_model_name
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


def op_instructions(cache: ArmCache, cpu: str, path: Path, image_path: Path) -> dict:
    """Instructions per op of ``path`` on ``cpu``: the model cut after each op boundary (op_profile's cut
    points: a PAD stays with the convolution it feeds), each prefix counted; an op's count is the
    difference between the prefixes ending before and after it. Grouped by kind @ resolution."""
    from mobilekit.benchmarks.op_profile import cut_points, tflite_ops, truncated_model

    model_bytes = path.read_bytes()
    ops = tflite_ops(model_bytes)
    cuts = cut_points(ops)
    full, _ = guest_model(path, prepared_image(image_path, read_sidecar(path))[None])
    with tempfile.TemporaryDirectory(prefix="mobilekit_arm_cuts_") as scratch:
        prefixes = []
        for count in cuts:
            prefix = Path(scratch) / f"prefix_{count}.tflite"
            prefix.write_bytes(truncated_model(model_bytes, count) if count < len(ops) else model_bytes)
            prefixes.append(GuestModel(prefix, full.inputs, full.input_index, {}))
        runs = count_instructions(cache, cpu, prefixes, repeats=1)
    failed = next((run.error for run in runs if not run.counts), None)
    if failed:
        raise MobilekitError(f"{path.name} on {cpu}: a prefix model failed: {failed}")
    totals = dict(zip(cuts, (run.counts[0] for run in runs)))
    per_op, previous = [], 0
    for op in ops:  # a run of ops between two cuts is counted as one, on its last op
        if op.index + 1 in totals:
            per_op.append({"index": op.index, "op_type": op.op_type, "output_shape": op.output_shape, "group": op.group,
                           "instructions": totals[op.index + 1] - previous})  # fmt: skip
            previous = totals[op.index + 1]
    groups: dict[str, int] = defaultdict(int)
    for op in per_op:
        groups[op["group"]] += op["instructions"]
    return {"file": path.name, "cpu": cpu, "prefixes": len(cuts), "total": previous, "ops": per_op, "groups": dict(sorted(groups.items(), key=lambda g: -g[1]))}


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
    for profile in result.get("op_profiles", []):
        lines += ["", f"## Per op: {profile['file']} on {profile['cpu']} ({profile['total'] / 1e6:.1f} M instructions, {profile['prefixes']} prefix models)", ""]
        lines += table(["kind @ resolution", "M instructions", "share"], [[g, f"{n / 1e6:.2f}", f"{n / profile['total']:.1%}"] for g, n in profile["groups"].items()])
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


def run(targets: list[Path], cache: ArmCache, cpus: list[str], image: Path, op_profile: Path | None = None, op_cpu: str | None = None) -> dict:
    """Every TFLite file of ``targets`` counted on each CPU, the ratios, the int8 faces check, and the op profile."""
    files = tflite_files(targets)
    if not files:
        raise MobilekitError(f"no TFLite files with sidecars in {', '.join(map(str, targets))}")
    rows = count_files(cache, cpus, files, image, on_row=lambda row, cpu: print(f"  {row['file']} on {cpu}: {_millions(row, cpu)} M", flush=True))
    result = {
        "setup": json.loads(cache.manifest.read_text()),
        "cpus": [describe_cpu(cache, cpu) for cpu in cpus],
        "image": str(image),
        "repeats": REPEATS,
        "files": rows,
        "ratios": ratios(rows, cpus),
        "int8_faces_equal_x86": int8_faces_on_arm(files),
    }
    if op_profile is not None:
        result["op_profiles"] = [op_instructions(cache, op_cpu or cpus[0], op_profile, image)]
    return result


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
    from mobilekit.cli.benchmark import default_image

    parser = Parser(prog="arm_count", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", type=Path, nargs="+", help="export folders or .tflite files")
    parser.add_argument("--cpus", default="cortex-a53,neoverse-n1")
    parser.add_argument("--image", type=existing_file(), default=None, help="photo fed to every file (default: a shared photo)")
    parser.add_argument("--op-profile", type=existing_file(".tflite"), default=None, help="also count this file op by op")
    parser.add_argument("--op-cpu", default=None, help="CPU of the op profile (default: the first of --cpus)")
    parser.add_argument("--arm-cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        cache = require_ready(args.arm_cache)
        op_cpu = parse_cpus(args.op_cpu, cache)[0] if args.op_cpu else None
        result = run(args.targets, cache, parse_cpus(args.cpus, cache), args.image or default_image(), args.op_profile, op_cpu)
    except MobilekitError as exc:
        parser.exit(2, f"arm_count: {exc}\n")
    write_report(args.out, "arm_instructions", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
