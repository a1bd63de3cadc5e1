"""The child-process job every converter runs in: files appear only on success, failures are one error."""

from __future__ import annotations

import pytest

from mobilekit.converters.child_process import run_child_job

# A worker module written into the job's folder (the child's working directory, so ``-m`` finds it).
WORKER = """
import os, sys, time
from pathlib import Path
from mobilekit.converters.child_process import serve_job

def run(job):
    Path(job["targets"]["model"]).write_text("converted")
    if job["mode"] == "raise":
        raise ValueError("no kernel for layer head.0")
    if job["mode"] == "die":
        print("Fatal Python error: Aborted", file=sys.stderr, flush=True)
        os._exit(134)
    if job["mode"] == "hang":
        time.sleep(60)
    return {"layers": 3}

sys.exit(serve_job(run, lambda exc: {"layer": "head.0"}))
"""


class JobFailed(Exception):
    pass


def _run(tmp_path, mode: str, timeout_s: float = 60, check=None):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    (work / "fake_worker.py").write_text(WORKER)
    final = out / "model.tflite"
    result = run_child_job(
        "fake_worker", {"mode": mode}, work, timeout_s,
        failure=lambda result, log: JobFailed(result, log),
        timed_out=lambda: JobFailed("timeout"),
        finals={"model": final},
        check=check,
    )  # fmt: skip
    return result, final


@pytest.mark.slow
def test_the_parents_check_sees_the_file_before_it_is_published_and_can_refuse_it(tmp_path):
    seen = []

    def refuse(result: dict, written: dict) -> None:
        seen.append((result["layers"], written["model"].read_text(), (tmp_path / "out" / "model.tflite").exists()))
        raise JobFailed("crashes the delegate")

    with pytest.raises(JobFailed, match="crashes the delegate"):
        _run(tmp_path, "ok", check=refuse)
    assert seen == [(3, "converted", False)]
    assert list((tmp_path / "out").iterdir()) == []


def test_success_moves_the_file_into_place(tmp_path):
    result, final = _run(tmp_path, "ok")
    assert result == {"ok": True, "layers": 3}
    assert final.read_text() == "converted"
    assert [p.name for p in final.parent.iterdir()] == ["model.tflite"]


def test_worker_exception_reaches_the_parent_and_leaves_no_file(tmp_path):
    with pytest.raises(JobFailed) as failed:
        _run(tmp_path, "raise")
    result, _ = failed.value.args
    assert result["ok"] is False and result["error"] == "ValueError: no kernel for layer head.0"
    assert result["layer"] == "head.0" and "Traceback" in result["traceback"]
    assert list((tmp_path / "out").iterdir()) == []


def test_a_crashed_child_is_a_failure_with_its_log(tmp_path):
    with pytest.raises(JobFailed) as failed:
        _run(tmp_path, "die")
    result, log = failed.value.args
    assert result is None and "Fatal Python error" in log
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_a_hung_child_times_out_and_leaves_no_file(tmp_path):
    with pytest.raises(JobFailed, match="timeout"):
        _run(tmp_path, "hang", timeout_s=5)
    assert list((tmp_path / "out").iterdir()) == []


def test_the_reported_line_is_the_last_error_else_the_last_line():
    from mobilekit.converters.child_process import last_log_line

    log = "INFO: Created TensorFlow Lite XNNPACK delegate\nValueError: bad shape\nexiting\n"
    assert last_log_line(log) == "ValueError: bad shape"
    assert last_log_line("INFO: only info\nstep 3 of 5\n") == "step 3 of 5"
    assert last_log_line("") == "no output"
    assert last_log_line("RuntimeError: " + "x" * 500, limit=40) == ("RuntimeError: " + "x" * 500)[:40]
