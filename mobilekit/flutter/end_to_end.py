"""End-to-end TFLite: RGB pixels in, at most K faces out, with decode and NMS inside the graph.

The network part comes from the export's ONNX file through the same onnx2tf route and by-value
output naming as ``mobilekit export`` (``converters.onnx2tf_child.saved_model``); this module appends the
family's decode in TensorFlow (``DetectorFamily.end_to_end_constants`` / ``end_to_end_decode``, e.g. the
RetinaFace box coding against its priors as a constant), the score threshold and TFLite's built-in
``NON_MAX_SUPPRESSION_V5``. Outputs, by name in
the ``serving_default`` signature (TF Object Detection API convention):

* ``boxes`` [1, K, 4] x1, y1, x2, y2 in model-input pixels, best first; rows past the count are 0
* ``scores`` [1, K]; ``landmarks`` [1, K, 2L] the family's L keypoints x, y interleaved (``landmark_order``)
* ``num_detections`` [1] float32: how many rows are valid

NMS convention: TensorFlow's NMS measures areas as ``x2 - x1`` (no +1 pixel), i.e. PyTorch's decode
with ``nms_offset=0``; the reference RetinaFace NMS (``nms_offset=1``) can keep or drop a
different box in rare near-threshold overlaps.

TensorFlow runs in a child process (``python -m mobilekit.flutter.end_to_end JOB RESULT``), like
the export: the caller never imports it and onnx2tf's exits become errors.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mobilekit.config import DeployConfig
from mobilekit.converters.child_process import last_log_line, run_child_job, serve_job
from mobilekit.converters.variants import SIGNATURE_KEY
from mobilekit.errors import MobilekitError
from mobilekit.families import family_of

OUTPUT_NAMES = ("boxes", "scores", "landmarks", "num_detections")
END_TO_END_PRECISIONS = ("fp32", "fp16")
DEFAULT_MAX_DETECTIONS = 100
SCORE_OUTPUT = "scores"


def output_meanings(deploy: DeployConfig) -> dict[str, str]:
    """What each end-to-end output holds, with ``deploy``'s keypoint count."""
    count = len(family_of(deploy).keypoints(deploy))
    return {
        "boxes": "[1, K, 4] face boxes x1, y1, x2, y2 in model-input pixels, best first; rows >= num_detections are zero",
        "scores": "[1, K] face scores (0-1), descending; rows >= num_detections are zero",
        "landmarks": f"[1, K, {2 * count}] {count} keypoints x, y interleaved in model-input pixels (order: landmark_order)",
        "num_detections": "[1] float32: number of valid rows (TF Object Detection API convention)",
    }


def output_columns(name: str, deploy: DeployConfig) -> list[str]:
    """Columns of the end-to-end outputs' last axis: positions in model-input pixels (not prior offsets)."""
    return {"boxes": ["x1", "y1", "x2", "y2"], "landmarks": family_of(deploy).keypoint_columns(deploy)}.get(name, [])


class EndToEndError(MobilekitError):
    """The end-to-end model could not be built."""


def check_supported(deploy: DeployConfig, precision: str) -> None:
    """Raise unless an end-to-end model can be built for ``deploy`` at ``precision``."""
    if not family_of(deploy).end_to_end:
        raise EndToEndError(f"--end-to-end is not available for {deploy.name}: its family {deploy.decoder!r} declares no end-to-end graph")
    if precision not in END_TO_END_PRECISIONS:
        raise EndToEndError(f"--end-to-end supports precision {' or '.join(END_TO_END_PRECISIONS)}, not {precision!r}")


def network_onnx(export_dir: str | Path, tflite_meta: dict, scratch: str | Path) -> Path:
    """The ONNX graph the export converted to TFLite (``tflite.converted_from``): taken from the export
    folder, or re-simplified from the plain ONNX there, always as a private copy in ``scratch``
    (onnx2tf rewrites its input file; the export's files and their sha256 must not change)."""
    import shutil

    from mobilekit.converters.onnx_export import simplify_onnx

    export_dir = Path(export_dir)
    converted_from = tflite_meta.get("tflite", {}).get("converted_from")
    if converted_from and (export_dir / converted_from).is_file():
        return Path(shutil.copy2(export_dir / converted_from, Path(scratch) / converted_from))
    from mobilekit.converters.sidecars import artefact_stem

    plain = export_dir / f"{artefact_stem(tflite_meta['model']['name'], tuple(tflite_meta['input_hw']))}.onnx"
    if not plain.is_file():
        raise EndToEndError(f"--end-to-end needs the exported ONNX ({plain.name}) in {export_dir}: export it with ONNX")
    if converted_from and converted_from.endswith("_sim.onnx"):
        simplified = Path(scratch) / converted_from
        if simplify_onnx(plain, simplified)[0]:
            return simplified
    return Path(shutil.copy2(plain, Path(scratch) / plain.name))


def build_end_to_end(
    onnx_path: str | Path,
    deploy: DeployConfig,
    input_hw: tuple[int, int],
    target: str | Path,
    sample: np.ndarray,
    precision: str = "fp32",
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    score_threshold: float | None = None,
    nms_iou: float | None = None,
    timeout_s: float = 1800,
) -> dict:
    """Write the end-to-end TFLite of ``onnx_path`` to ``target``; returns what was baked in.

    ``sample`` is one real image ``[1, H, W, 3]`` (raw RGB 0-255) that the converted network's
    outputs are matched against ONNX Runtime's. Thresholds default to ``deploy``'s.
    """
    check_supported(deploy, precision)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EndToEndError(f"ONNX file for the end-to-end model not found: {onnx_path}")
    settings = {
        "precision": precision,
        "max_detections": int(max_detections),
        "score_threshold": float(deploy.score_threshold if score_threshold is None else score_threshold),
        "nms_iou": float(deploy.nms_iou if nms_iou is None else nms_iou),
        "nms_offset": 0.0,
        "input_hw": list(input_hw),
    }
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    with tempfile.TemporaryDirectory(prefix="mobilekit_e2e_") as work:
        work_dir = Path(work)
        np.savez(work_dir / "constants.npz", **family_of(deploy).end_to_end_constants(deploy, input_hw))
        np.save(work_dir / "sample.npy", np.ascontiguousarray(sample, dtype=np.float32))
        job = {
            **settings,
            "family": deploy.decoder,
            "onnx_path": str(onnx_path.resolve()),
            "input_name": graph.input[0].name,
            "work_dir": work,
            "target": str(Path(target).resolve()),
        }
        result = run_child_job(
            "mobilekit.flutter.end_to_end", job, work_dir, timeout_s,
            failure=lambda result, log: EndToEndError(f"end-to-end conversion of {onnx_path.name} failed: {_reason(result, log)}"),
            timed_out=lambda: EndToEndError(f"end-to-end conversion of {onnx_path.name} took longer than {timeout_s:.0f} s"),
        )  # fmt: skip
    return {**settings, "seconds": result["seconds"], "ops": result["ops"], "output_mapping": result["output_mapping"]}


def measure_overhead(plain_tflite: str | Path, end_to_end_tflite: str | Path, image: np.ndarray, runs: int = 20, num_threads: int = 2) -> dict:
    """Median latency (ms) of the plain and the end-to-end model on ``image`` [1, H, W, 3], and the
    extra time decode + NMS add inside the graph. Runs alternate between the two models so that load
    from other processes hits both alike. For benchmarks and reports; no thresholds."""
    from mobilekit.converters.runtimes import TFLiteRuntime

    runtimes = {"plain": TFLiteRuntime(plain_tflite, num_threads), "end_to_end": TFLiteRuntime(end_to_end_tflite, num_threads)}
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    for runtime in runtimes.values():
        runtime.run(image)
    for _ in range(runs):
        for name, runtime in runtimes.items():
            start = time.perf_counter()
            runtime.run(image)
            times[name].append((time.perf_counter() - start) * 1000)
    plain, e2e = float(np.median(times["plain"])), float(np.median(times["end_to_end"]))
    return {"plain_ms": plain, "end_to_end_ms": e2e, "overhead_ms": e2e - plain, "runs": runs, "threads": num_threads}


# -- child process ---------------------------------------------------------------------------------
def _end_to_end_module(tf, network, family, constants: dict[str, np.ndarray], job: dict):
    """A ``tf.Module`` whose ``serve`` runs ``network`` then the family's decode, threshold and NMS."""
    height, width = job["input_hw"]
    k = job["max_detections"]
    input_name = job["input_name"]

    class EndToEnd(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name=input_name)])
        def serve(self, images):
            outputs = self.network.signatures[SIGNATURE_KEY](**{input_name: images})
            boxes, scores, points = family.end_to_end_decode(tf, outputs, constants, (height, width))
            selected, selected_scores, count = tf.raw_ops.NonMaxSuppressionV5(
                boxes=boxes, scores=scores, max_output_size=k, iou_threshold=job["nms_iou"],
                score_threshold=job["score_threshold"], soft_nms_sigma=0.0, pad_to_max_output_size=True,
            )
            valid = tf.cast(tf.range(k) < count, tf.float32)
            return {
                "boxes": tf.identity((tf.gather(boxes, selected) * valid[:, None])[None], name="boxes"),
                "scores": tf.identity((selected_scores * valid)[None], name="scores"),
                "landmarks": tf.identity((tf.gather(points, selected) * valid[:, None])[None], name="landmarks"),
                "num_detections": tf.identity(tf.cast(tf.reshape(count, [1]), tf.float32), name="num_detections"),
            }

    return EndToEnd()


def _run_job(job: dict) -> dict:
    from mobilekit.converters import onnx2tf_child
    from mobilekit.families import FAMILIES

    work = Path(job["work_dir"])
    sample = np.load(work / "sample.npy")
    start = time.perf_counter()
    named, network_result = onnx2tf_child.saved_model(job, sample)

    import tensorflow as tf

    with np.load(work / "constants.npz") as stored:
        constants = {name: stored[name] for name in stored.files}
    module = _end_to_end_module(tf, tf.saved_model.load(str(named)), FAMILIES[job["family"]], constants, job)
    e2e_dir = work / "end_to_end"
    tf.saved_model.save(module, str(e2e_dir), signatures={SIGNATURE_KEY: module.serve})
    Path(job["target"]).write_bytes(onnx2tf_child.convert_variant(e2e_dir, job["precision"], None))
    io_spec = onnx2tf_child.signature_io(job["target"])
    if sorted(io_spec["outputs"]) != sorted(OUTPUT_NAMES):
        raise RuntimeError(f"end-to-end signature outputs {sorted(io_spec['outputs'])} != {sorted(OUTPUT_NAMES)}")
    ops = onnx2tf_child.op_counts(job["target"])
    return {"seconds": time.perf_counter() - start, "ops": ops, "output_mapping": network_result["output_mapping"]}


def _reason(result: dict | None, log: str) -> str:
    return (result or {}).get("error") or last_log_line(log)


if __name__ == "__main__":
    sys.exit(serve_job(_run_job))
