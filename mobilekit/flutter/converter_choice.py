"""Packaging with two converters' files of one precision: ship the one that passes parity and is faster.

A candidate is eligible when LiteRT's XNNPACK delegate loads it (the export's probe) and the parity
report passes it (with ``--unverified``, when none passes: every one that loads); among the eligible ones
the fastest wins, timed here at one thread, interleaved, on the golden image. A difference within
:data:`NOISE` keeps onnx2tf's file, the default converter's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilekit.timing import interleaved_medians
from mobilekit.converters.runtimes import TFLiteRuntime
from mobilekit.errors import CheckFailed
from mobilekit.flutter.verification import Verdict

NOISE = 0.03  # relative latency difference taken as a tie on a shared CPU
DEFAULT_CONVERTER = "onnx2tf"


def _status(path: Path, meta: dict, found: Verdict) -> dict:
    xnnpack = meta.get("tflite", {}).get("analysis", {}).get("xnnpack_load") or {"ok": True, "error": None}
    return {
        "file": path.name,
        "converter": meta["artefact"].get("converter", "onnx2tf"),
        "xnnpack_load": xnnpack,
        "parity": found.status,
        "parity_reason": found.shipped_reason,
        "eligible": bool(xnnpack["ok"]) and found.passed,
    }


def choose_converter(
    candidates: list[tuple[Path, dict]], image: np.ndarray, verdicts: dict[str, Verdict], unverified: bool = False
) -> tuple[Path, dict, dict]:
    """``(path, sidecar, choice)`` for the candidate to package (``verdicts``: the parity verdict per file
    name); ``choice`` says why (for model_meta.json). Raises :class:`CheckFailed` when none is eligible."""
    statuses = [_status(path, meta, verdicts[path.name]) for path, meta in candidates]
    if unverified and not any(s["eligible"] for s in statuses):
        for status in statuses:
            status["eligible"] = bool(status["xnnpack_load"]["ok"])
    eligible = [(c, s) for c, s in zip(candidates, statuses) if s["eligible"]]
    if not eligible:
        reasons = "; ".join(f"{s['file']}: XNNPACK {'ok' if s['xnnpack_load']['ok'] else 'fails'}, {verdicts[s['file']].reason}" for s in statuses)
        raise CheckFailed(f"no file of this precision can be packaged ({reasons}){'' if unverified else '; --unverified packages one that did not pass parity'}")
    if len(eligible) == 1:
        (path, meta), status = eligible[0]
        others = [s["file"] for s in statuses if s is not status]
        reason = f"{path.name}: the only eligible one (loads under XNNPACK, {status['parity']} parity; not {', '.join(others)})" if others else f"{path.name}: the only file"
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
    reason = f"{chosen}: eligible (XNNPACK loads it, {verdicts[chosen].status} parity) and {why} at 1 thread (interleaved medians on the golden image: {timings})"
    return path, meta, {"candidates": statuses, "chosen": chosen, "reason": reason}
