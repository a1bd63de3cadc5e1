"""A whole benchmark run: cases -> rows with MACs, achieved GFLOP/s vs the measured matmul peak."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

from mobilekit.benchmarks.cases import Case
from mobilekit.benchmarks.hardware import machine_description, matmul_peak
from mobilekit.benchmarks.measure import MEMORY_METHOD, measure_case, measure_isolated
from mobilekit.timing import TimingConfig
from mobilekit.image_io import read_image

SCHEMA = "mobilekit.benchmark/1"


def model_macs(model_name: str, imgsz: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass (``mobilekit.profiling.count_macs``)."""
    from mobilekit.models import create_model
    from mobilekit.profiling import count_macs

    return int(sum(count_macs(create_model(model_name), imgsz).values()))


def add_compute(row: dict, macs: int, peak: dict | None) -> dict:
    """Attach MACs, achieved GFLOP/s (2 * MACs / model-only median) and its fraction of the peak."""
    row["macs"] = macs
    if row.get("status") != "ok":
        return row
    gflops = 2 * macs / (row["model_only"]["median_ms"] / 1000) / 1e9
    row["achieved_gflops"] = gflops
    if peak is not None:
        best = max(peak["numpy_gflops"], peak["torch_gflops"])
        row["peak_gflops"] = best
        row["fraction_of_peak"] = gflops / best if best > 0 else None
    return row


def run_suite(
    cases: list[Case],
    timing: TimingConfig,
    image_path: Path,
    score_threshold: float | None = None,
    isolate: bool = True,
    probe_peak: bool = True,
    on_row: Callable[[dict, dict], None] | None = None,
) -> dict:
    """Measure every case; returns the report (machine, settings, peaks, rows) as a JSON-ready dict.

    ``on_row(report, row)`` is called after each row with the report so far (for progress and partial saves).
    """
    report = {
        "schema": SCHEMA,
        "machine": machine_description(),
        "settings": {
            "timing": asdict(timing),
            "image": str(image_path),
            "postprocess": "the model family's decode settings, keeping faces at score_threshold",
            "score_threshold": score_threshold if score_threshold is not None else "each model's app threshold (deploy.score_threshold)",
            "memory_method": MEMORY_METHOD if isolate else "not measured (in-process run)",
            "model_only": "inference on a prepared input (layout/dtype/device conversion excluded)",
            "end_to_end": "resize_to_input + layout/dtype conversion + inference + decode_outputs (decode, threshold, NMS)",
            "gflops": "2 * MACs / model-only median latency; peak = best fp32 1024x1024 matmul (numpy or torch) at the same thread count",
        },
        "matmul_peak": {},
        "rows": [],
    }
    peaks = {t: matmul_peak(t) for t in sorted({c.threads for c in cases if c.device == "cpu"})} if probe_peak else {}
    report["matmul_peak"] = {str(t): p for t, p in peaks.items()}
    macs = {key: model_macs(*key) for key in dict.fromkeys((c.model, c.imgsz) for c in cases)}
    image = None if isolate else read_image(image_path)
    for case in cases:
        row = measure_isolated(case, timing, image_path, score_threshold) if isolate else measure_case(case, timing, image, score_threshold)
        row = add_compute(row, macs[(case.model, case.imgsz)], peaks.get(case.threads) if case.device == "cpu" else None)
        report["rows"].append(row)
        if on_row is not None:
            on_row(report, row)
    return report
