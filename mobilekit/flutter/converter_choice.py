"""Packaging with two converters' files of one precision: ship the one that passes parity and is faster.

A candidate is eligible when LiteRT's XNNPACK delegate loads it (the export's probe) and no parity
report in the export folder failed it; among the eligible ones the fastest wins, timed here at one
thread, interleaved, on the golden image (the parity report's own verdict is quoted when present). A
difference within :data:`NOISE` keeps onnx2tf's file, the default converter's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from mobilekit.benchmarks.timing import interleaved_medians
from mobilekit.converters.runtimes import TFLiteRuntime
from mobilekit.errors import MobilekitError

ParityLookup = Callable[[Path, str], "dict | None"]
NOISE = 0.03  # relative latency difference taken as a tie on a shared CPU
DEFAULT_CONVERTER = "onnx2tf"


def _status(export_dir: Path, path: Path, meta: dict, parity_of: ParityLookup) -> dict:
    xnnpack = meta.get("tflite", {}).get("analysis", {}).get("xnnpack_load") or {"ok": True, "error": None}
    parity = parity_of(export_dir, path.name)
    verdict = "not checked (no parity report in the export folder)" if parity is None else ("passed" if parity.get("passed") else "FAILED")
    return {
        "file": path.name,
        "converter": meta["artefact"].get("converter", "onnx2tf"),
        "xnnpack_load": xnnpack,
        "parity": verdict,
        "eligible": bool(xnnpack["ok"]) and verdict != "FAILED",
    }


def choose_converter(
    export_dir: Path, candidates: list[tuple[Path, dict]], image: np.ndarray, parity_of: ParityLookup
) -> tuple[Path, dict, dict]:
    """``(path, sidecar, choice)`` for the candidate to package; ``choice`` says why (for model_meta.json)."""
    statuses = [_status(export_dir, path, meta, parity_of) for path, meta in candidates]
    eligible = [(c, s) for c, s in zip(candidates, statuses) if s["eligible"]]
    if not eligible:
        reasons = "; ".join(f"{s['file']}: XNNPACK {'ok' if s['xnnpack_load']['ok'] else 'fails'}, parity {s['parity']}" for s in statuses)
        raise MobilekitError(f"no file of this precision can be packaged ({reasons})")
    if len(eligible) == 1:
        (path, meta), status = eligible[0]
        others = [s["file"] for s in statuses if s is not status]
        reason = f"{path.name}: the only one that loads under XNNPACK and did not fail parity (not {', '.join(others)})" if others else f"{path.name}: the only file"
        return path, meta, {"candidates": statuses, "chosen": path.name, "reason": reason}
    runners = {}
    for (path, _), status in eligible:
        runtime = TFLiteRuntime(path, num_threads=1)
        x = runtime.prepare(image[None])
        runners[status["file"]] = lambda runtime=runtime, x=x: runtime.infer(x)
    medians = interleaved_medians(runners)
    for status in statuses:
        status["median_ms_1_thread"] = medians.get(status["file"])
    fastest = min(medians, key=medians.get)
    default = next((s["file"] for _, s in eligible if s["converter"] == DEFAULT_CONVERTER), fastest)
    tie = medians[default] <= medians[fastest] * (1 + NOISE)
    chosen = default if tie else fastest
    path, meta = next(c for c, s in eligible if s["file"] == chosen)
    timings = ", ".join(f"{name} {ms:.1f} ms" for name, ms in sorted(medians.items(), key=lambda item: item[1]))
    why = "the fastest" if chosen == fastest else f"within {NOISE:.0%} of the fastest (a tie): the default converter's"
    reason = f"{chosen}: eligible (XNNPACK loads it, parity not failed) and {why} at 1 thread (interleaved medians on the golden image: {timings})"
    return path, meta, {"candidates": statuses, "chosen": chosen, "reason": reason}
