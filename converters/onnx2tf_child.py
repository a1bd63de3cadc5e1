"""ONNX -> TFLite in a child process (TensorFlow stays out of the caller; onnx2tf's exits become errors).

Run as ``python -m mobilekit.converters.onnx2tf_child JOB.json RESULT.json``. Steps: onnx2tf writes a
SavedModel; its outputs are matched to the ONNX outputs *by value* on a real input (never by position)
and re-exposed under their ONNX names in a ``serving_default`` signature; every TFLite variant is
converted from that signature, so each file carries signature defs with the stable output names.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import time
import types
from pathlib import Path

import numpy as np

from mobilekit.converters import activation_ranges
from mobilekit.converters.child_process import serve_job
from mobilekit.converters.variants import INT8_VARIANTS, SIGNATURE_KEY, VARIANT


class WorkerError(Exception):
    def __init__(self, message: str, node: str | None = None, op_type: str | None = None) -> None:
        super().__init__(message)
        self.node, self.op_type = node, op_type


def _offline_onnx2tf(sample: np.ndarray):
    """Import onnx2tf with its sample-data download replaced by our own images and the network cut."""
    import requests

    def no_network(*args, **kwargs):
        raise RuntimeError("mobilekit blocks onnx2tf network access")

    requests.get = no_network
    requests.Session.request = no_network
    import onnx2tf
    import onnx2tf.onnx2tf as onnx2tf_core

    onnx2tf_core.download_test_image_data = lambda: sample.copy()
    return onnx2tf


@contextlib.contextmanager
def _skip_onnx2tf_tflite_files():
    """onnx2tf converts its SavedModel to its own float32 and float16 TFLite files, which mobilekit never
    uses (every variant is converted from the renamed SavedModel below): skip those two conversions."""
    import tensorflow as tf

    class SkippedConversion:
        def __init__(self) -> None:
            self.target_spec = types.SimpleNamespace()

        def convert(self) -> bytes:
            return b""

    original = tf.lite.TFLiteConverter.from_concrete_functions
    tf.lite.TFLiteConverter.from_concrete_functions = staticmethod(lambda *args, **kwargs: SkippedConversion())
    try:
        yield
    finally:
        tf.lite.TFLiteConverter.from_concrete_functions = original


def _tolerate_failed_accuracy_corrections(skipped: list[str]) -> None:
    """onnx2tf's strict mode re-checks binary ops (Add, Mul, ...) for layout mix-ups by building a
    validation model, which crashes when an operand is a constant (e.g. ``floor(y) + 1``). Skip that
    check for such an op only (recorded in ``skipped``) instead of disabling strict mode everywhere;
    the converted outputs are verified against ONNX Runtime afterwards in any case."""
    import importlib
    import pkgutil

    import onnx2tf.ops

    for info in pkgutil.iter_modules(onnx2tf.ops.__path__):
        module = importlib.import_module(f"onnx2tf.ops.{info.name}")
        original = getattr(module, "correction_process_for_accuracy_errors", None)
        if original is None or getattr(original, "_mobilekit_tolerant", False):
            continue

        def tolerant(*args, _original=original, **kwargs):
            try:
                return _original(*args, **kwargs)
            except ValueError as exc:
                node = kwargs.get("graph_node_output")
                skipped.append(f"{getattr(node, 'name', '?')}: {str(exc)[:120]}")
                return kwargs["input_tensor_1"], kwargs["input_tensor_2"]

        tolerant._mobilekit_tolerant = True
        module.correction_process_for_accuracy_errors = tolerant


def _check_supported_ops(onnx_path: str) -> None:
    import importlib.util

    import onnx

    for node in onnx.load(onnx_path, load_external_data=False).graph.node:
        if importlib.util.find_spec(f"onnx2tf.ops.{node.op_type}") is None:
            raise WorkerError(f"onnx2tf has no converter for ONNX op {node.op_type}", node.name, node.op_type)


def _onnx_reference(onnx_path: str, input_name: str, nhwc: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {input_name: np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))})))


def match_outputs_by_value(reference: dict[str, np.ndarray], candidates: dict[str, np.ndarray]) -> dict[str, tuple[str, float]]:
    """For each reference output, the candidate with the same shape and the smallest max abs error.

    Raises when two names would map to one candidate or an error is too large to be the same tensor.
    """
    mapping: dict[str, tuple[str, float]] = {}
    for name, ref in reference.items():
        scored = [
            (float(np.max(np.abs(value.astype(np.float64) - ref))), key)
            for key, value in candidates.items()
            if tuple(value.shape) == tuple(ref.shape)
        ]
        if not scored:
            shapes = {k: tuple(v.shape) for k, v in candidates.items()}
            raise WorkerError(f"no converted output has the shape {tuple(ref.shape)} of ONNX output '{name}' (converted: {shapes})")
        error, key = min(scored)
        tolerance = 1e-3 * max(1.0, float(np.max(np.abs(ref))))
        if error > tolerance:
            raise WorkerError(f"converted outputs do not reproduce ONNX output '{name}' (best max abs error {error:.3g})")
        mapping[name] = (key, error)
    keys = [key for key, _ in mapping.values()]
    if len(set(keys)) != len(keys):
        raise WorkerError(f"output mapping is ambiguous: {mapping}")
    return mapping


def split_input_mean(onnx_path: Path) -> np.ndarray | None:
    """Remove the graph's leading mean subtraction, ``Sub(input, constant [1, C, 1, 1])``, from the ONNX
    file in place and return the mean (None, file untouched, when the graph does not start with one).

    The converted model subtracts it again row by row (:func:`_named_saved_model`): the same floats,
    but one contiguous ``[N, H, W*C]`` subtraction, which XNNPACK runs about 6x faster than onnx2tf's
    per-channel broadcast over a 3-wide innermost axis (RetinaFace 640: ~1 ms of 13 at one thread).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    image = graph.input[0].name
    readers = [node for node in graph.node if image in node.input]
    if len(readers) != 1 or readers[0].op_type != "Sub" or list(readers[0].input)[:1] != [image]:
        return None
    sub = readers[0]
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    constant_nodes = {node.output[0]: node for node in graph.node if node.op_type == "Constant" and node.attribute[0].name == "value"}
    constants |= {name: numpy_helper.to_array(node.attribute[0].t) for name, node in constant_nodes.items()}
    if sub.input[1] not in constants:
        return None
    mean = constants[sub.input[1]]
    channels = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    if mean.shape != (1, channels, 1, 1) or mean.dtype != np.float32:
        return None
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == sub.output[0]:
                node.input[i] = image
    graph.node.remove(sub)
    if sub.input[1] in constant_nodes and not any(sub.input[1] in node.input for node in graph.node):
        graph.node.remove(constant_nodes[sub.input[1]])
    onnx.save(model, str(onnx_path))
    return mean.reshape(-1)


def _named_saved_model(saved_dir: Path, out_dir: Path, input_name: str, input_shape: list[int], reference, sample, mean: np.ndarray | None = None):
    """Re-expose onnx2tf's SavedModel with outputs named like the ONNX graph (and the input ``mean``
    subtracted row by row in front, when :func:`split_input_mean` took it out); returns the value check."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_dir))
    function = loaded.signatures[SIGNATURE_KEY]
    tf_inputs = list(function.structured_input_signature[1])
    if len(tf_inputs) != 1:
        raise WorkerError(f"expected one input in the converted model, got {tf_inputs}")
    n, h, w, c = input_shape
    row_mean = None if mean is None else np.tile(mean.astype(np.float32), w)

    def subtract_mean(images):
        return images if row_mean is None else tf.reshape(tf.reshape(images, [n, h, w * c]) - row_mean, input_shape)

    raw = {k: v.numpy() for k, v in function(**{tf_inputs[0]: subtract_mean(tf.constant(sample))}).items()}
    mapping = match_outputs_by_value(reference, raw)

    class Named(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.loaded = loaded

        @tf.function(input_signature=[tf.TensorSpec(input_shape, tf.float32, name=input_name)])
        def serve(self, images):
            outputs = self.loaded.signatures[SIGNATURE_KEY](**{tf_inputs[0]: subtract_mean(images)})
            return {name: tf.identity(outputs[key], name=name) for name, (key, _) in mapping.items()}

    module = Named()
    tf.saved_model.save(module, str(out_dir), signatures={SIGNATURE_KEY: module.serve})
    return {name: {"onnx2tf_output": key, "max_abs_error_vs_onnx": err} for name, (key, err) in mapping.items()}


def _converter(saved_dir: Path):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(saved_dir), signature_keys=[SIGNATURE_KEY])


def calibrate(saved_dir: Path, calib: np.ndarray, input_name: str) -> bytes:
    """The float model with every activation's range recorded on ``calib`` by TensorFlow's calibrator
    (min and max over all photos; ``activation_ranges.estimate_ranges`` may re-estimate them): run once,
    shared by the int8 variants (the converter would otherwise calibrate again for each of them)."""
    import tensorflow as tf

    def representative():
        for image in calib:
            yield {input_name: image[None].astype(np.float32)}

    converter = _converter(saved_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True  # what TFLite's QuantizationDebugger uses
    return converter.convert()


def convert_variant(saved_dir: Path, variant: str, calibrated: bytes | None, float_layers: list[str] = ()) -> bytes:
    """One TFLite variant; int8 ones quantise the shared ``calibrated`` model exactly as the converter's
    own post-training path does (its MLIR quantiser with the same options), leaving ``float_layers``
    (output tensor names) in float."""
    import tensorflow as tf

    if variant in INT8_VARIANTS:
        if calibrated is None:
            raise WorkerError(f"{variant} needs calibration images")
        from tensorflow.lite.python.convert import mlir_quantize

        io_type = tf.uint8 if VARIANT[variant].input_dtype == "uint8" else tf.float32
        return mlir_quantize(calibrated, input_data_type=io_type, output_data_type=io_type, denylisted_nodes=list(float_layers) or None)
    converter = _converter(saved_dir)
    if variant == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant != "fp32":
        raise WorkerError(f"unknown TFLite variant {variant}")
    return converter.convert()


def _resolve(calibrated: bytes, specs: list[str]) -> list[str]:
    from mobilekit.converters import selective_int8

    try:
        return selective_int8.resolve_layers(calibrated, specs) if specs else []
    except selective_int8.KeepFloatError as exc:
        raise WorkerError(str(exc)) from None


def _keep_float(job: dict, calibrated: bytes, calib: np.ndarray) -> dict:
    """The layers the int8 variants keep in float (see ``selective_int8``), and how they were chosen.
    ``auto`` and ``speed`` choose layers on top of the model's declared ones (``int8_keep_float``)."""
    from mobilekit.converters import selective_int8

    requested = list(job.get("keep_float") or [])
    if requested not in (["auto"], ["speed"]):
        return {"requested": requested, "layers": _resolve(calibrated, requested)}
    declared = _resolve(calibrated, list(job["deploy"].get("int8_keep_float") or []))
    if requested == ["speed"]:
        return _speed_policy(job, calibrated, calib, declared)
    ranked = [name for name in selective_int8.rank_layers(calibrated, calib) if name not in declared]
    meets, trials = _detection_target(job, calibrated, calib)
    layers = declared + selective_int8.auto_layers(ranked, lambda extra: meets(declared + extra))
    return {
        "requested": requested, "declared": declared, "layers": layers, "ranked_by": "quantisation debugger: RMSE / scale per layer",
        "trials": trials, "met": bool(trials and trials[-1]["met"]),
    }  # fmt: skip


def _speed_policy(job: dict, calibrated: bytes, calib: np.ndarray, declared: list[str]) -> dict:
    """``--keep-float speed``: time every float prefix (with the ``declared`` layers) here (1 thread,
    XNNPACK, interleaved) and keep the fastest that meets the detection target (see
    ``selective_int8.speed_layers``)."""
    from tensorflow.lite.python.convert import mlir_quantize

    from mobilekit.converters import selective_int8
    from mobilekit.converters.runtimes import TFLiteRuntime
    from mobilekit.timing import interleaved_medians

    candidates = {count: declared + [n for n in prefix if n not in declared] for count, prefix in selective_int8.speed_candidates(calibrated).items()}
    runners = {}
    for count, layers in candidates.items():
        path = Path(job["work_dir"]) / f"speed_{count}.tflite"
        path.write_bytes(mlir_quantize(calibrated, denylisted_nodes=layers or None))
        runtime = TFLiteRuntime(path, 1)
        x = runtime.prepare(calib[:1])
        runners[count] = lambda runtime=runtime, x=x: runtime.infer(x)
    latency = interleaved_medians(runners)
    meets, trials = _detection_target(job, calibrated, calib)
    chosen = selective_int8.speed_layers(candidates, latency, meets)
    return {
        "requested": ["speed"],
        "declared": declared,
        "prefix": chosen,
        "layers": candidates[chosen],
        "chosen_by": "fastest float prefix at 1 thread under XNNPACK on the exporting machine that meets the detection target",
        "latency_ms_1_thread": {str(c): round(ms, 3) for c, ms in latency.items()},
        "trials": trials,
        "met": bool(trials and trials[-1]["met"]),
    }


def _detection_target(job: dict, calibrated: bytes, calib: np.ndarray):
    """``meets(layers)``: the int8 model with ``layers`` in float meets the model's int8 parity target
    (recall and precision against the float graph) on the calibration photos; and the trial log."""
    from tensorflow.lite.python.convert import mlir_quantize

    from mobilekit.converters.parity import int8_faces_summary
    from mobilekit.converters.runtimes import TFLiteRuntime
    from mobilekit.families import deploy_from_dict, family_of

    deploy = deploy_from_dict(job["deploy"])
    tolerance = family_of(deploy).parity_tolerance(deploy)
    reference = [_onnx_reference(job["onnx_path"], job["input_name"], image[None]) for image in calib]
    trials: list[dict] = []

    def meets(layers: list[str]) -> bool:
        path = Path(job["work_dir"]) / "auto_int8.tflite"
        path.write_bytes(mlir_quantize(calibrated, denylisted_nodes=list(layers) or None))
        summary = int8_faces_summary(deploy, TFLiteRuntime(path, 2, xnnpack=False), calib, reference)
        recall, precision = (1.0 if v is None else v for v in (summary["recall"], summary["precision"]))
        met = recall >= tolerance.int8_min_recall and precision >= tolerance.int8_min_precision
        trials.append({"float_layers": len(layers), "recall": recall, "precision": precision, "met": met})
        return met

    return meets, trials


def op_counts(path: str) -> dict[str, int]:
    """How many times each TFLite operator occurs in the file, by name."""
    from ai_edge_litert.interpreter import Interpreter

    ops: dict[str, int] = {}
    for op in Interpreter(model_path=path)._get_ops_details():
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    return dict(sorted(ops.items()))


def analyze_tflite(path: str) -> dict:
    """Op list (from the interpreter) and TensorFlow's analyzer report with GPU-delegate compatibility."""
    import tensorflow as tf

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tf.lite.experimental.Analyzer.analyze(model_path=path, gpu_compatibility=True)
    report = buffer.getvalue()
    warnings = [line.strip() for line in report.splitlines() if "GPU COMPATIBILITY WARNING" in line or "not supported by GPU" in line]
    return {
        "ops": op_counts(path),
        "gpu_delegate_compatible": not warnings and "compatible with GPU delegate" in report,
        "gpu_compatibility_warnings": warnings,
        "analyzer_report": report.replace(path, Path(path).name),
    }


def signature_io(path: str) -> dict:
    """Inputs/outputs of the ``serving_default`` signature: name, shape, dtype, quantization."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner(SIGNATURE_KEY)

    def describe(details: dict) -> dict:
        return {
            name: {"shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name, "quantization": [float(d["quantization"][0]), int(d["quantization"][1])]}
            for name, d in details.items()
        }

    return {"inputs": describe(runner.get_input_details()), "outputs": describe(runner.get_output_details())}


def saved_model(job: dict, sample: np.ndarray) -> tuple[Path, dict]:
    """onnx2tf's SavedModel of ``job["onnx_path"]`` with outputs named like the ONNX graph, in
    ``job["work_dir"]/named_saved_model``; and the start of the job's result (timings, output check, notes)."""
    work = Path(job["work_dir"])
    _check_supported_ops(job["onnx_path"])
    onnx2tf = _offline_onnx2tf(sample)
    notes: list[str] = []
    skipped_corrections: list[str] = []
    _tolerate_failed_accuracy_corrections(skipped_corrections)
    start = time.perf_counter()
    # Strict mode (onnx2tf's per-op accuracy correction) first; it chokes on constant sub-graphs, so
    # retry without it. Either way the outputs are verified against ONNX Runtime below.
    for disable_strict_mode in (False, True):
        private_copy = work / "onnx2tf_input.onnx"  # onnx2tf rewrites its input file (node renaming)
        shutil.copyfile(job["onnx_path"], private_copy)
        mean = split_input_mean(private_copy)
        shutil.rmtree(work / "onnx2tf", ignore_errors=True)
        try:
            with _skip_onnx2tf_tflite_files():
                onnx2tf.convert(
                    input_onnx_file_path=str(private_copy),
                    output_folder_path=str(work / "onnx2tf"),
                    output_signaturedefs=True,
                    not_use_onnxsim=True,
                    disable_strict_mode=disable_strict_mode,
                    verbosity="error",
                )
            break
        except (SystemExit, Exception) as exc:
            if disable_strict_mode:
                raise WorkerError(f"onnx2tf failed: {type(exc).__name__}: {exc}") from None
            notes.append(f"onnx2tf strict mode failed ({type(exc).__name__}: {str(exc)[:200]}); converted with disable_strict_mode=True")
    onnx2tf_seconds = time.perf_counter() - start
    if skipped_corrections:
        notes.append(f"onnx2tf strict-mode layout check skipped for {len(skipped_corrections)} op(s) with constant operands: {skipped_corrections[:5]}")
    reference = _onnx_reference(job["onnx_path"], job["input_name"], sample)
    named_dir = work / "named_saved_model"
    output_check = _named_saved_model(work / "onnx2tf", named_dir, job["input_name"], list(sample.shape), reference, sample, mean)
    if mean is not None:
        notes.append("input mean subtracted row by row in front of onnx2tf's graph (same floats; XNNPACK's per-channel broadcast is slow)")
    return named_dir, {"onnx2tf_seconds": onnx2tf_seconds, "calibration_seconds": 0.0, "output_mapping": output_check, "notes": notes, "variants": {}}


def run_job(job: dict) -> dict:
    calib = np.load(job["calib_npy"]) if job.get("calib_npy") else None
    sample = calib[:1] if calib is not None else np.load(job["sample_npy"])
    named_dir, result = saved_model(job, sample)
    calibrated, float_layers = None, []
    if calib is not None and any(v in INT8_VARIANTS for v in job["targets"]):
        start = time.perf_counter()
        calibrated = activation_ranges.estimate_ranges(calibrate(named_dir, calib, job["input_name"]), calib, job["calib_ranges"])
        result["calibration_ranges"] = job["calib_ranges"]
        result["keep_float"] = _keep_float(job, calibrated, calib)
        float_layers = result["keep_float"]["layers"]
        result["calibration_seconds"] = time.perf_counter() - start
    for variant, target in job["targets"].items():
        start = time.perf_counter()
        Path(target).write_bytes(convert_variant(named_dir, variant, calibrated, float_layers))
        seconds = time.perf_counter() - start
        io_spec = signature_io(target)
        if sorted(io_spec["outputs"]) != sorted(job["output_names"]):
            raise WorkerError(f"{variant}: signature outputs {sorted(io_spec['outputs'])} != {job['output_names']}")
        result["variants"][variant] = {"convert_seconds": seconds, "io": io_spec, "analysis": analyze_tflite(target)}
    return result


def failure_details(exc: Exception) -> dict:
    """The ONNX node and op type onnx2tf stopped at, for the parent's one-line error."""
    return {"error": str(exc), "node": exc.node, "op_type": exc.op_type} if isinstance(exc, WorkerError) else {}


if __name__ == "__main__":
    sys.exit(serve_job(run_job, failure_details))
