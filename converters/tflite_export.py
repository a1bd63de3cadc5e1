"""ONNX -> TFLite fp32 / fp16 / int8 / int8_full, run in a child process (see ``onnx2tf_child``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mobilekit.converters.activation_ranges import DEFAULT_RANGE_ESTIMATOR
from mobilekit.converters.child_process import last_log_line, run_child_job
from mobilekit.converters.onnx_export import ExportError, module_path_from_node
from mobilekit.converters.variants import INT8_VARIANTS, TFLITE_VARIANTS, artefact_path
from mobilekit.errors import CheckFailed


def convert_to_tflite(
    onnx_path: str | Path,
    out_dir: str | Path,
    stem: str,
    variants: tuple[str, ...],
    sample: np.ndarray,
    calibration: np.ndarray | None = None,
    keep_float: tuple[str, ...] = (),
    deploy: dict | None = None,
    calib_ranges: str = DEFAULT_RANGE_ESTIMATOR,
    timeout_s: float = 1800,
) -> dict[str, dict]:
    """Convert ``onnx_path`` to each TFLite ``variant``; returns ``{variant: {"path", ...worker info}}``.

    ``sample`` (``[1, H, W, 3]`` raw RGB 0-255 float32) is the real image the converted outputs are
    matched against; ``calibration`` (``[N, H, W, 3]``, same contract) is required for int8 variants,
    which keep ``keep_float`` layers in float (see ``selective_int8``; ``auto`` needs ``deploy``, the
    model's ``DeployConfig.to_dict()``, to judge detections); their activation ranges come from the
    ``calib_ranges`` estimator (see ``activation_ranges``).
    Files appear under their final names only after every requested variant converted and loads under
    LiteRT's XNNPACK delegate (:func:`require_xnnpack_loads`: otherwise :class:`CheckFailed`, nothing written).
    """
    unknown = [v for v in variants if v not in TFLITE_VARIANTS]
    if unknown:
        raise ExportError(f"unknown TFLite variant(s) {unknown}; choose from {TFLITE_VARIANTS}")
    if any(v in INT8_VARIANTS for v in variants) and (calibration is None or len(calibration) == 0):
        raise ExportError("int8 TFLite export needs calibration images (--calib-images DIR)")
    out_dir = Path(out_dir).resolve()
    finals = {v: artefact_path(out_dir, stem, v) for v in variants}
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    probes: dict[str, dict] = {}

    def probe(result: dict, written: dict[str, Path]) -> None:
        policies = {v: int8_policy(result.get("keep_float")) for v in written if v in INT8_VARIANTS}
        probes.update(require_xnnpack_loads(written, finals, policies))

    with tempfile.TemporaryDirectory(prefix="mobilekit_tflite_") as work:
        work_dir = Path(work)
        job = {
            "onnx_path": str(Path(onnx_path).resolve()),
            "work_dir": work,
            "input_name": graph.input[0].name,
            "output_names": [o.name for o in graph.output],
            "sample_npy": _save(work_dir / "sample.npy", sample),
            "calib_npy": _save(work_dir / "calib.npy", calibration) if calibration is not None else None,
            "keep_float": list(keep_float),
            "calib_ranges": calib_ranges,
            "deploy": deploy,
        }
        onnx_name = Path(onnx_path).name
        result = run_child_job(
            "mobilekit.converters.onnx2tf_child", job, work_dir, timeout_s,
            failure=lambda result, log: ExportError(_describe_failure(result, log, onnx_name)),
            timed_out=lambda: ExportError(f"TFLite conversion of {onnx_name} took longer than {timeout_s:.0f} s"),
            finals=finals,
            check=probe,
        )  # fmt: skip
    converted = {
        v: {
            "path": finals[v],
            "onnx2tf_seconds": result["onnx2tf_seconds"],
            "calibration_seconds": result["calibration_seconds"] if v in INT8_VARIANTS else 0.0,
            "output_mapping": result["output_mapping"],
            "notes": result["notes"],
            "keep_float": result.get("keep_float") if v in INT8_VARIANTS else None,
            "calibration_ranges": result.get("calibration_ranges") if v in INT8_VARIANTS else None,
            **info,
        }
        for v, info in result["variants"].items()
    }
    for variant, info in converted.items():
        info["analysis"]["xnnpack_load"] = probes[variant]
    return converted


def int8_policy(keep_float: dict | None) -> str:
    """How an int8 file's float layers were chosen, in a few words (for errors naming the file)."""
    keep_float = keep_float or {}
    requested = keep_float.get("requested") or ["none"]
    named = ",".join(requested) if len(requested) <= 3 else f"<{len(requested)} layers>"
    return f"int8, --keep-float {named}: {len(keep_float.get('layers') or [])} layer(s) kept float"


def require_xnnpack_loads(written: dict[str, Path], finals: dict[str, Path], policies: dict[str, str]) -> dict[str, dict]:
    """Every ``written`` file (not yet under its ``finals`` name) through :func:`check_xnnpack_load`; the
    probes by key. Raises :class:`CheckFailed` naming the first file that fails (final name, its
    ``policies`` entry, the child's last line): the caller then publishes nothing."""
    probes = {}
    for key, path in written.items():
        probes[key] = check_xnnpack_load(path)
        if not probes[key]["ok"]:
            policy = f" ({policies[key]})" if policies.get(key) else ""
            raise CheckFailed(
                f"{finals[key].name}{policy} fails in LiteRT with its default XNNPACK CPU delegate, as apps run it: "
                f"{probes[key]['error']}; nothing written"
            )
    return probes


def check_xnnpack_load(path: str | Path, timeout_s: float = 300) -> dict:
    """Load and run ``path`` once with LiteRT's default XNNPACK delegate in a separate process, so that a
    runtime crash (e.g. ``double free`` inside the delegate) is reported instead of killing the caller.
    Returns ``{"ok": bool, "error": str | None}``."""
    probe = (
        "import sys, numpy as np\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        "it = Interpreter(model_path=sys.argv[1], num_threads=1)\n"
        "it.allocate_tensors()\n"
        "d = it.get_input_details()[0]\n"
        "it.set_tensor(d['index'], np.zeros(d['shape'], d['dtype']))\n"
        "it.invoke()\n"
        "print('XNNPACK_LOAD_OK')\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        proc = subprocess.run([sys.executable, "-c", probe, str(path)], env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"no answer within {timeout_s:.0f} s"}
    if "XNNPACK_LOAD_OK" in proc.stdout:
        return {"ok": True, "error": None}
    return {"ok": False, "error": f"exit status {proc.returncode}: {last_log_line(proc.stderr)}"}


def _save(path: Path, array: np.ndarray) -> str:
    np.save(path, np.ascontiguousarray(array, dtype=np.float32))
    return str(path)


def _describe_failure(result: dict | None, log: str, onnx_name: str) -> str:
    """One line naming the ONNX op and the PyTorch module it came from, when they are known."""
    node = (result or {}).get("node")
    if node is None:
        found = re.findall(r"onnx_op_name: (\S+)", log)
        node = found[-1] if found else None
    op_type = (result or {}).get("op_type") or (node.rsplit("/", 1)[-1].split("_")[0] if node else None)
    reason = (result or {}).get("error") or last_log_line(log, limit=400)
    where = ""
    if node:
        module = module_path_from_node(node)
        where = f" at ONNX node '{node}' (op {op_type}, PyTorch module '{module or '<top level>'}')"
    return f"TFLite conversion of {onnx_name} failed{where}: {reason}"
