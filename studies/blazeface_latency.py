"""Google's own BlazeFace files against mobilekit's TFLite files, model-only latency, interleaved.

On a shared machine a file timed alone minutes after another is not comparable: here every file gets one
batch of ``calls`` invocations per round, the order reversed every other round, and the median over rounds
is reported, so load changes hit every file alike (compare ratios, not absolute times). XNNPACK (LiteRT's
default), ``num_threads`` fixed. Google's files take RGB / 127.5 - 1, mobilekit's raw RGB 0-255.

    python -m studies.blazeface_latency exports/*/*_fp32.tflite --shared ../shared --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mobilekit.atomic import write_json_atomic
from mobilekit.models.blazeface import GOOGLE_WEIGHTS


def interpreter(path: Path, threads: int, google: bool):
    """A ready interpreter fed a fixed random photo-range input."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(str(path), num_threads=threads)
    runner.allocate_tensors()
    detail = runner.get_input_details()[0]
    pixels = np.random.default_rng(0).uniform(0, 255, detail["shape"]).astype(np.float32)
    runner.set_tensor(detail["index"], pixels / 127.5 - 1.0 if google else pixels)
    return runner


def interleaved_ms(files: dict[str, tuple[Path, bool]], threads: int, rounds: int, calls: int) -> dict[str, float]:
    """Median over ``rounds`` of the mean ms per call of each file."""
    runners = {label: interpreter(path, threads, google) for label, (path, google) in files.items()}
    for runner in runners.values():
        for _ in range(calls):
            runner.invoke()
    samples: dict[str, list[float]] = {label: [] for label in runners}
    for index in range(rounds):
        order = list(runners.items()) if index % 2 == 0 else list(reversed(runners.items()))
        for label, runner in order:
            start = time.perf_counter()
            for _ in range(calls):
                runner.invoke()
            samples[label].append((time.perf_counter() - start) / calls * 1000)
    return {label: float(np.median(values)) for label, values in samples.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="mobilekit TFLite files (raw RGB 0-255 input)")
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    files = {f"google {name}": (args.shared / "weights" / weights, True) for name, weights in GOOGLE_WEIGHTS.items()}
    files.update({path.name: (path, False) for path in args.files})
    report = {int(t): interleaved_ms(files, int(t), args.rounds, args.calls) for t in args.threads.split(",")}
    if args.json:
        write_json_atomic(args.json, {"rounds": args.rounds, "calls": args.calls, "median_ms": report})
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
