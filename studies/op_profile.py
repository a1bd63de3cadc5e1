"""Where the time goes: one model per op in TFLite (XNNPACK) and ONNX Runtime, grouped alike.

TFLite's Python interpreter has no per-op profiler, so TFLite is timed by prefixes: the model cut after
its first k ops (the tensors still needed by later ops become the cut's outputs), every prefix timed in
alternation with the others; an op's time is the difference between the prefixes that end before and
after it. ONNX Runtime reports each node's kernel time itself (``enable_profiling``). Both are grouped by
(output resolution, kind of layer): conv 3x3 / 1x1, depthwise, separate activation, layout reorder,
and the rest; an explicit PAD before a convolution counts as that convolution (XNNPACK folds it in). ONNX Runtime fuses activations into its convolutions (``FusedConv``); XNNPACK
fuses clamps but runs LeakyReLU as its own pass, which the ``activation`` rows show.

    python -m studies.op_profile MODEL.tflite MODEL_sim.onnx --threads 1,2 --out DIR

writes ``DIR/op_profile_<stem>.json`` and ``.md``. Figures depend on the CPU; the JSON names it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mobilekit.benchmarks.arguments import Parser, existing_file, positive_int, thread_counts
from mobilekit.benchmarks.hardware import machine_description
from mobilekit.benchmarks.markdown import table, write_report
from mobilekit.timing import interleaved_medians
from mobilekit.converters.runtimes import OnnxRuntime, onnxruntime_options, outside_delegate


# The same kind of layer under each runtime's op names (convolutions are told apart by their filters).
TFLITE_KINDS = {"LEAKY_RELU": "activation", "RELU": "activation", "PRELU": "activation", "PAD": "pad", "CONCATENATION": "concat",
                "RESIZE_NEAREST_NEIGHBOR": "resize", "RESIZE_BILINEAR": "resize", "RESHAPE": "reshape/transpose", "TRANSPOSE": "reshape/transpose"}
ONNX_KINDS = {"LeakyRelu": "activation", "Relu": "activation", "PRelu": "activation", "Pad": "pad", "Concat": "concat", "Upsample": "resize",
              "Resize": "resize", "Reshape": "reshape/transpose", "Transpose": "reshape/transpose", "ReorderInput": "layout reorder",
              "ReorderOutput": "layout reorder"}


@dataclass
class OpTime:
    """One op or node: its index in execution order, type, output shape, group key and milliseconds."""

    index: int
    op_type: str
    output_shape: list[int]
    group: str
    ms: float = 0.0


# -- TFLite ------------------------------------------------------------------------------------------
def tflite_ops(model: bytes, by_stage: bool = False) -> list[OpTime]:
    """Every op of the model's first subgraph in execution order, grouped (no times yet): by kind and
    resolution, or with ``by_stage`` by :func:`_stage` (gather, index arithmetic, XNNPACK, outside)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    flat = schema.ModelT.InitFromPackedBuf(model, 0)
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    outside = outside_delegate(Interpreter(model_content=model))[0] if by_stage else set()
    graph = flat.subgraphs[0]
    ops = []
    for index, op in enumerate(graph.operators):
        code = flat.operatorCodes[op.opcodeIndex]
        op_type = codes[max(code.builtinCode, code.deprecatedBuiltinCode)]
        output = graph.tensors[op.outputs[0]]
        shape = [int(d) for d in graph.tensors[op.outputs[0] if op_type != "PAD" else op.inputs[0]].shape]
        if by_stage:
            ops.append(OpTime(index, op_type, shape, _stage(op_type, types[output.type], "XNNPACK" if index not in outside else "outside XNNPACK")))
            continue
        kernel = None
        if op_type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            filter_shape = graph.tensors[op.inputs[1]].shape  # [O, kh, kw, I] / [1, kh, kw, O]
            kernel = (int(filter_shape[1]), int(filter_shape[2]))
        ops.append(OpTime(index, op_type, shape, _group(_tflite_kind(op_type, kernel), shape, channels_last=True)))
    return ops


STAGES = ("gather", "index arithmetic", "rest")


def _stage(op_type: str, output_dtype: str, where: str) -> str:
    """Coarse classes for graphs too long to time op by op (FeatherFace V1's deformable layers):
    row gathers, the index arithmetic that feeds them (integer or boolean results, floor, cast), the rest."""
    if op_type.upper() == "GATHER":
        return "gather"
    if output_dtype in ("int32", "int64", "bool") or op_type.upper() in ("FLOOR", "CAST"):
        return "index arithmetic"
    return f"rest ({where})"


def _tflite_kind(op_type: str, kernel: tuple[int, int] | None) -> str:
    if op_type == "DEPTHWISE_CONV_2D":
        return f"depthwise {kernel[0]}x{kernel[1]}"
    if op_type == "CONV_2D":
        return f"conv {kernel[0]}x{kernel[1]}"
    return TFLITE_KINDS.get(op_type, op_type.lower())


def truncated_model(model: bytes, ops: int) -> bytes:
    """The model cut after its first ``ops`` ops; its outputs are the tensors later ops still read."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    flat = schema.ModelT.InitFromPackedBuf(model, 0)
    graph = flat.subgraphs[0]
    kept, dropped = graph.operators[:ops], graph.operators[ops:]
    produced = [t for op in kept for t in op.outputs]
    needed = {int(t) for op in dropped for t in op.inputs} | {int(t) for t in graph.outputs}
    graph.outputs = [int(t) for t in produced if int(t) in needed] or [int(produced[-1])]
    graph.operators = kept
    flat.signatureDefs = None
    builder = flatbuffers.Builder(0)
    builder.Finish(flat.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflite_profile(path: Path, threads: int, rounds: int, calls: int, beside: dict | None = None, by_stage: bool = False) -> tuple[list[OpTime], dict[str, float]]:
    """Per-op milliseconds of ``path`` under XNNPACK: differences of interleaved prefix medians, and
    the medians of the ``beside`` callables timed in the same alternation."""
    from ai_edge_litert.interpreter import Interpreter

    model = path.read_bytes()
    ops = tflite_ops(model, by_stage)
    runners = {}
    for count in cut_points(ops):
        interpreter = Interpreter(model_content=truncated_model(model, count) if count < len(ops) else model, num_threads=threads)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], _input(detail["shape"], detail["dtype"]))
        runners[count] = interpreter.invoke
    medians = interleaved_medians(runners | (beside or {}), rounds=rounds, calls=calls)
    previous = 0.0
    for op in ops:  # a run of ops between two cuts is timed as one and counted on its last op
        if op.index + 1 in runners:
            op.ms = medians[op.index + 1] - previous
            previous = medians[op.index + 1]
    return ops, {name: medians[name] for name in beside or {}}


def cut_points(ops: list[OpTime]) -> list[int]:
    """Prefix lengths to time: every boundary between ops of different groups (every op when grouped by
    kind and resolution), except right after a PAD, which XNNPACK folds into the convolution that reads
    it only while the padded tensor stays internal (the pair is timed together, counted as the conv)."""
    cuts = [op.index + 1 for op, after in zip(ops, ops[1:]) if op.op_type != "PAD" and (after.group != op.group or not op.group.startswith(STAGES))]
    return cuts + [len(ops)]


# -- ONNX Runtime ------------------------------------------------------------------------------------
def _onnxruntime_call(path: Path, threads: int):
    runtime = OnnxRuntime(path, num_threads=threads)
    x = _input(runtime.session.get_inputs()[0].shape, np.float32)
    return lambda: runtime.infer(x)


def onnxruntime_profile(path: Path, threads: int, runs: int, scratch: Path, by_stage: bool = False) -> list[OpTime]:
    """Per-node median kernel milliseconds of ``path`` from ONNX Runtime's own profiler."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), onnxruntime_options(threads, scratch / "ort_profile"), providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    x = _input(model_input.shape, np.float32)
    for _ in range(5 + runs):
        session.run(None, {model_input.name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, list] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[event["name"]].append(event)
    nodes = []
    for index, (name, calls) in enumerate(sorted(per_node.items(), key=lambda item: int(item[1][0]["args"]["node_index"]))):
        args = calls[0]["args"]
        shape = [int(d) for d in next(iter(args["output_type_shape"][0].values()))]
        weight = [int(d) for d in next(iter(args["input_type_shape"][1].values()))] if len(args["input_type_shape"]) > 1 else []
        durations = [c["dur"] / 1000.0 for c in calls[5:]]  # the first five calls are warm-up
        dtype = next(iter(args["output_type_shape"][0]))
        group = _stage(args["op_name"], dtype, "ONNX Runtime") if by_stage else _group(_onnx_kind(args["op_name"], weight), shape, channels_last=False)
        nodes.append(OpTime(index, args["op_name"], shape, group, float(np.median(durations))))
    return nodes


def _onnx_kind(op_type: str, weight: list[int]) -> str:
    if op_type in ("Conv", "FusedConv") and len(weight) == 4:
        return f"{'depthwise' if weight[1] == 1 and weight[2] > 1 else 'conv'} {weight[2]}x{weight[3]}"
    return ONNX_KINDS.get(op_type, op_type.lower())


# -- both ----------------------------------------------------------------------------------------------
def _group(kind: str, shape: list[int], channels_last: bool) -> str:
    """``"<kind> @ <H>px"`` for feature maps, ``"<kind> (flat)"`` for tensors of lower rank (the heads'
    reshaped outputs, the input seen as rows)."""
    if len(shape) == 4:
        return f"{kind} @ {shape[1] if channels_last else shape[2]}px"
    return f"{kind} (flat)"


def _input(shape, dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.uniform(0, 255, [int(d) for d in shape]).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, [int(d) for d in shape], endpoint=True).astype(dtype)


def grouped(ops: list[OpTime]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for op in ops:
        totals[op.group] += op.ms
    return dict(totals)


def profile(tflite: Path, onnx: Path | None, threads: list[int], rounds: int, calls: int, scratch: Path, by_stage: bool = False) -> dict:
    result = {"machine": machine_description(), "load_average_at_start": os.getloadavg(), "tflite": str(tflite), "onnx": str(onnx) if onnx else None,
              "grouping": "stage" if by_stage else "kind @ resolution", "threads": {}}  # fmt: skip
    for count in threads:
        start = time.perf_counter()
        beside = {"onnxruntime": _onnxruntime_call(onnx, count)} if onnx is not None else {}
        tflite_ops_ms, beside_ms = tflite_profile(tflite, count, rounds, calls, beside, by_stage)
        row = {"tflite_ops": [asdict(op) for op in tflite_ops_ms], "tflite_total_ms": sum(op.ms for op in tflite_ops_ms)}
        if onnx is not None:
            row["onnxruntime_session_ms"] = beside_ms["onnxruntime"]
            ort_nodes = onnxruntime_profile(onnx, count, rounds * calls, scratch, by_stage)
            row |= {"onnxruntime_nodes": [asdict(op) for op in ort_nodes], "onnxruntime_kernel_total_ms": sum(op.ms for op in ort_nodes)}
        row["groups"] = {"tflite": grouped(tflite_ops_ms), "onnxruntime": grouped(ort_nodes) if onnx is not None else {}}
        row["seconds"] = time.perf_counter() - start
        result["threads"][str(count)] = row
    return result


def _split(group: str) -> tuple[str, str]:
    """``"conv 1x1 @ 80px"`` -> ``("conv 1x1", "80px")``; ``"concat (flat)"`` -> ``("concat", "flat")``."""
    kind, _, where = group.partition(" @ ")
    return (kind, where) if where else (kind.removesuffix(" (flat)"), "flat")


def _table(title: str, tflite: dict[str, float], onnxruntime: dict[str, float], order) -> list[str]:
    rows = []
    for key in sorted(set(tflite) | set(onnxruntime), key=order):
        a, b = tflite.get(key, 0.0), onnxruntime.get(key, 0.0)
        rows.append([key, f"{a:.2f}", f"{b:.2f}", f"{a - b:+.2f}"])
    return table([title, "TFLite ms", "ORT ms", "TFLite - ORT"], rows) + [""]


def _regroup(groups: dict[str, float], part: int) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for group, ms in groups.items():
        totals[_split(group)[part]] += ms
    return dict(totals)


def _resolution_order(where: str) -> tuple[int, str]:
    return (-int(where.removesuffix("px")), where) if where.endswith("px") else (1, where)


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = [f"# Per-op profile: {Path(result['tflite']).name}", "",
             f"{machine.get('cpu_model', '')}, {machine.get('usable_cores')} cores; load average at start {result['load_average_at_start'][0]:.2f}; "
             f"{machine.get('date_utc', '')}. TFLite by interleaved prefixes (see op_profile.py), ONNX Runtime by its profiler.", ""]  # fmt: skip
    for count, row in result["threads"].items():
        tfl, onx = row["groups"]["tflite"], row["groups"]["onnxruntime"]
        lines += [f"## {count} thread(s): TFLite {row['tflite_total_ms']:.2f} ms, ONNX Runtime {row.get('onnxruntime_session_ms', float('nan')):.2f} ms "
                  f"(interleaved; its kernels sum to {row.get('onnxruntime_kernel_total_ms', float('nan')):.2f} ms)", ""]  # fmt: skip
        if result["grouping"] == "stage":
            lines += _table("stage", tfl, onx, lambda g: -(tfl.get(g, 0) + onx.get(g, 0)))
            continue
        lines += _table("resolution", _regroup(tfl, 1), _regroup(onx, 1), _resolution_order)
        by_kind_tfl, by_kind_onx = _regroup(tfl, 0), _regroup(onx, 0)
        lines += _table("kind", by_kind_tfl, by_kind_onx, lambda k: -(by_kind_tfl.get(k, 0) + by_kind_onx.get(k, 0)))
        lines += _table("kind @ resolution", tfl, onx, lambda g: (_resolution_order(_split(g)[1]), _split(g)[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="op_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("tflite", type=existing_file(".tflite"))
    parser.add_argument("onnx", type=existing_file(".onnx"), nargs="?")
    parser.add_argument("--threads", type=thread_counts, default=[1, 2])
    parser.add_argument("--rounds", type=positive_int, default=10)
    parser.add_argument("--calls", type=positive_int, default=5)
    parser.add_argument("--by-stage", action="store_true", help="group as gather / index arithmetic / rest (long graphs)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mobilekit_op_profile_") as scratch:
        result = profile(args.tflite, args.onnx, args.threads, args.rounds, args.calls, Path(scratch), args.by_stage)
    write_report(args.out, f"op_profile_{args.tflite.stem}", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
