"""One conversion step in a child Python process: the parent's half and the worker's half.

The parent writes ``job.json`` into a scratch folder, runs ``python -m MODULE JOB.json RESULT.json`` and
reads ``result.json`` (``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``). TensorFlow, jax and the
converters' global state stay out of the caller, and a converter that crashes or calls ``exit`` becomes
an error naming the file. Files the job writes go to partial paths (``targets``) and are moved to their
final names only when the whole job succeeded and the parent's ``check`` of them passed; otherwise they
are deleted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from mobilekit.atomic import partial_path

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}


def run_child_job(
    module: str,
    job: dict,
    work_dir: Path,
    timeout_s: float,
    failure: Callable[[dict | None, str], Exception],
    timed_out: Callable[[], Exception],
    finals: dict[str, Path] | None = None,
    extra_env: dict[str, str] | None = None,
    check: Callable[[dict, dict[str, Path]], None] | None = None,
) -> dict:
    """Run ``module``'s worker on ``job`` in ``work_dir``; returns the worker's result dict.

    ``finals`` (``{key: final path}``) are written by the worker to ``job["targets"][key]`` (partial
    paths) and renamed into place only when the result is ok. ``failure(result or None, log)`` and
    ``timed_out()`` build the exception raised otherwise (``result`` is None when the child died before
    writing one; ``log`` is its stdout and stderr). ``check(result, {key: partial path})`` runs before
    the renames: what it raises leaves no file behind (e.g. a file that crashes the runtime it is for).
    """
    targets = {key: partial_path(path) for key, path in (finals or {}).items()}
    if finals is not None:
        job = {**job, "targets": {key: str(path) for key, path in targets.items()}}
    job_path, result_path = work_dir / "job.json", work_dir / "result.json"
    job_path.write_text(json.dumps(job))
    env = dict(os.environ, **QUIET_ENV, **(extra_env or {}))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", module, str(job_path), str(result_path)],
            cwd=work_dir, env=env, capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
        if result is None or not result.get("ok"):
            raise failure(result, proc.stdout + proc.stderr)
        if check is not None:
            check(result, targets)
        for key, target in targets.items():
            os.replace(target, finals[key])
        return result
    except subprocess.TimeoutExpired:
        raise timed_out() from None
    finally:
        for target in targets.values():
            if target.exists():
                target.unlink()


def serve_job(run_job: Callable[[dict], dict], details: Callable[[Exception], dict] = lambda exc: {}) -> int:
    """The worker's ``__main__``: read ``argv[1]`` (the job), write ``argv[2]`` (the result).

    Any exception becomes ``{"ok": false, "error": "Type: message", "traceback": ...}``, updated with
    ``details(exc)`` (e.g. the ONNX node or operator a converter stopped at).
    """
    job_path, result_path = sys.argv[1], sys.argv[2]
    job = json.loads(Path(job_path).read_text())
    try:
        result = {"ok": True, **run_job(job)}
    except Exception as exc:  # reported to the parent, which turns it into one line
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:], **details(exc)}
    Path(result_path).write_text(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


def last_log_line(log: str, limit: int = 300) -> str:
    """The line of a child's output that says what went wrong: the last one naming an error, else the
    last non-empty one (LiteRT's ``INFO:`` lines skipped), cut to ``limit`` characters."""
    lines = [line.strip() for line in log.splitlines() if line.strip() and not line.startswith("INFO:")]
    errors = [line for line in lines if re.search(r"Error|ERROR|error:", line)]
    return (errors or lines or ["no output"])[-1][:limit]
