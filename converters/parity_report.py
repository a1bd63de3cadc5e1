"""Parity report files: JSON, Markdown table and a PNG of the error distribution per backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilekit.atomic import atomic_path, write_json_atomic
from mobilekit.converters.parity import MIN_REFERENCE_FACES

# ``mobilekit parity EXPORT_DIR`` (and ``mobilekit run``) write the JSON report under this name inside
# the export folder, where ``mobilekit package`` looks for it (see ``mobilekit.flutter.verification``).
EXPORT_REPORT = "parity.json"


def export_report_path(export_dir: str | Path) -> Path:
    """Where the parity report of ``export_dir``'s files lives."""
    return Path(export_dir) / EXPORT_REPORT


def _fmt(value, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def write_json(report: dict, path: str | Path) -> Path:
    return write_json_atomic(path, {k: v for k, v in report.items() if not k.startswith("_")})


def _faces_cells(f: dict | None) -> str:
    if not f:
        return "- | - | - | -"
    return (
        f"{f['found']}/{f['faces']} | {f['confirmed']}/{f['file_faces']} | {_fmt(f['mean_iou'], '.4f')} "
        f"| {_fmt(f['score_drift_median'])} / {_fmt(f['score_drift_max'])}"
    )


def markdown(report: dict) -> str:
    lines = [
        "# Export parity report",
        "",
        f"Export folder: `{report['export_dir']}`  ",
        f"Images ({len(report['images'])}): {', '.join(report['images'])}  ",
        f"TFLite kernels: {report['tflite_kernels']}.  ",
        f"Reference: {report.get('reference', 'PyTorch')}.  ",
        f"Faces as an app sees them: recall = PyTorch's faces (score >= {report['face_score']}) the file finds at score >= {report['keep_score']}; "
        f"precision = the file's faces (>= {report['face_score']}) PyTorch finds at >= {report['keep_score']}; one-to-one at the precision's IoU. "
        "int8 files are judged on photos their calibration did not use.  ",
        "fp32 files are judged on raw output tensors by the float criterion (each output group's max error relative to its own magnitude, "
        "within a bound from float32's rounding and the layers on its path); fp16 and int8 on detections (reduced precision moves tensors by design), "
        f"over at least {MIN_REFERENCE_FACES} reference faces (fewer: not judged, FAIL). Each file's criterion, in words, is under Criteria.",
        "",
        f"**Overall: {'PASS' if report['passed'] else 'FAIL'}**",
        "",
        "| file | precision | kernels | error / magnitude per output | min cosine | recall | precision | mean IoU | score drift median / max | built-in kernels: worst error / magnitude, recall | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in report["artefacts"]:
        t = a["tensors"]
        per_output = " / ".join(f"{name} {_fmt(m['relative'])}" for name, m in t.items()) or "-"
        cosine = _fmt(min(m["cosine"] for m in t.values()), ".6f") if t else "-"
        builtin = a.get("builtin")
        if builtin is None:
            builtin_cell = "-"
        elif builtin["error"]:
            builtin_cell = f"error: {builtin['error']}"
        else:
            bf = builtin["faces"]
            builtin_cell = f"{_fmt(max(m['relative'] for m in builtin['tensors'].values()))}, {bf['found']}/{bf['faces']}"
        lines.append(
            f"| {a['file']} | {a['precision']} | {a['kernels']} | {per_output} | {cosine} | {_faces_cells(a['faces'])} "
            f"| {builtin_cell} | {'PASS' if a['passed'] else '**FAIL**'} |"
        )
    lines += ["", "## Criteria", ""]
    for a in report["artefacts"]:
        lines.append(f"- `{a['file']}`: {a['criterion']} -> {a['verdict']}")
        seen = a.get("calibration_faces")
        if seen:
            lines.append(f"  (on its calibration photos, not judged: recall {seen['found']}/{seen['faces']}, precision {seen['confirmed']}/{seen['file_faces']})")
    if report.get("arm"):
        lines += arm_markdown(report)
    return "\n".join(lines) + "\n"


def arm_markdown(report: dict) -> list[str]:
    """The TFLite files on the emulated ARM64 CPUs: judged like x86, and against the x86 run."""
    arm = report["arm"]
    lines = [
        "",
        "## On emulated ARM64 CPUs",
        "",
        f"{arm['emulator']}; XNNPACK with the emulated CPU's kernels, 1 thread, at most {arm['images_per_file']} photos per file "
        "(calibration photos last). Against x86 (the XNNPACK run above, same photos): outputs bit for bit, the largest difference in "
        "steps of the output's int8 grid (float outputs: float32 ULPs of its largest value) and relative to its largest value; faces "
        "identical when every decoded detection is equal.",
        "",
        "| CPU | qemu -cpu | MIDR | features |",
        "|---|---|---|---|",
        *(f"| {c['cpu']} | `{c['qemu_cpu']}` | {c['midr']} | {c['features']} |" for c in arm["cpus"]),
        "",
        "| file | CPU | kernels | max abs per output | recall | precision | mean IoU | score drift median / max | vs x86: identical outputs | max LSB | max relative | faces vs x86 | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in report["artefacts"]:
        for on_arm in a.get("arm", []):
            per_output = " / ".join(f"{name} {_fmt(m['max_abs'])}" for name, m in on_arm["tensors"].items()) or "-"
            versus = on_arm["versus_x86"]
            if versus:
                outputs = versus["outputs"]
                identical = ", ".join(name for name, m in outputs.items() if m["identical"]) or "none"
                lsb = " / ".join(f"{name} {m['max_lsb']:g}" for name, m in outputs.items())
                relative = _fmt(max(m["max_rel"] for m in outputs.values()))
                faces = _faces_versus_cell(versus["faces"])
            else:
                identical = lsb = relative = faces = "-"
            lines.append(
                f"| {a['file']} | {on_arm['cpu']} | {on_arm['error'] or on_arm['kernels']} | {per_output} | {_faces_cells(on_arm['faces'])} "
                f"| {identical} | {lsb} | {relative} | {faces} | {'PASS' if on_arm['passed'] else '**FAIL**'} |"
            )
    return lines


def write_markdown(report: dict, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(markdown(report))
    return path


def write_plot(report: dict, path: str | Path) -> Path:
    """Box plot of |output - PyTorch| (all outputs pooled, log scale) per exported file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors = report["_errors"]
    names = list(errors)
    data = [np.maximum(np.concatenate(list(errors[n].values())), 1e-9) for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4.5))
    ax.boxplot(data, whis=(0, 100), showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), [n.rsplit(".", 1)[0].split("_", 2)[-1] + "\n" + n.rsplit(".", 1)[1] for n in names], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("|output - PyTorch| (all outputs, min..max whiskers)")
    ax.set_title("Export parity: error distribution per backend")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _faces_versus_cell(f: dict) -> str:
    """``identical``; the same faces with other values (largest score difference); or how they differ."""
    if f["identical"]:
        return "identical"
    if f["found"] == f["faces"] and f["confirmed"] == f["file_faces"]:
        return f"same {f['faces']} faces, scores within {_fmt(f['score_drift_max'])}"
    return f"**differ**: x86's {f['found']}/{f['faces']} found, ARM's {f['confirmed']}/{f['file_faces']} confirmed"

