"""Usage errors through the installed console script: one message naming the problem, exit status 2,
no traceback, whichever typer/click is installed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from console_scripts import console_script

MOBILEKIT = console_script("mobilekit")

# (arguments, text the message must contain)
USAGE_ERRORS = [
    (["nosuchcmd"], "No such command 'nosuchcmd'"),
    (["predict", "--bogus"], "No such option: --bogus"),
    (["export"], "Missing argument"),
    (["predict", "photo.jpg"], "no weights for retinaface_mnet025: pass --weights PATH"),  # only yunet_n/_s come with weights
    (["predict", "photo.jpg", "--model", "retinaface_mnet025", "--weights", "w.pth", "--imgsz", "abc"], "'--imgsz'"),
    (["predict", "photo.jpg", "--weights", "w.pth", "--imgsz", "0"], "'--imgsz'"),
    (["predict", "photo.jpg", "--weights", "w.pth", "--conf", "2"], "'--conf'"),
    (["predict", "photo.jpg", "--weights", "w.pth", "--nms", "1.5"], "'--nms'"),
    (["predict", "photo.jpg", "--weights", "w.pth", "--max-det", "0"], "'--max-det'"),
    (["predict", "photo.jpg", "--weights", "w.pth", "--device", "gpu"], "'--device'"),
    (["params", "retinaface_mnet025", "--imgsz", "x"], "'--imgsz'"),
    (["export", "retinaface_mnet025", "--random-init", "--imgsz", "640,abc"], "'--imgsz'"),
    (["export", "retinaface_mnet025", "--random-init", "--opset", "11"], "'--opset'"),
    (["train", "--threads", "-1"], "'--threads'"),
    (["train", "--batch", "1"], "'--batch'"),
    (["train", "--lr", "0"], "'--lr'"),
    (["train", "--epochs", "many"], "'--epochs'"),
    (["benchmark", "exports", "--threads", "1,two"], "'--threads'"),
    (["benchmark", "exports", "--imgsz", "640,big"], "'--imgsz'"),
    (["benchmark-train", "retinaface_mnet025", "--batch", "0"], "'--batch'"),
    (["data", "synth", "--out", "d", "--images", "1"], "'--images'"),
    (["data", "synth", "--out", "d", "--images", "10", "--val-fraction", "1"], "'--val-fraction'"),
    (["parity", "exports", "--images", "p", "--threads", "0"], "'--threads'"),
    (["package", "exports", "--out", "o", "--max-det", "0"], "'--max-det'"),
    (["run", "--epochs", "0"], "'--epochs'"),
    (["eval", "--imgsz", "-5"], "'--imgsz'"),
]


def run(args: list[str], tmp_path, executable: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run((executable or [MOBILEKIT]) + args, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def assert_usage_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 6, result.stderr


@pytest.mark.parametrize(("args", "expected"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_error_is_one_message_and_status_2(args, expected, tmp_path):
    assert_usage_error(run(args, tmp_path), expected)


def test_usage_errors_need_no_separate_click_install(tmp_path):
    """typer >= 0.2x carries its own click; the handler must not import a top-level ``click``."""
    blocked = "import sys; sys.modules['click'] = None; from mobilekit.cli import main; main()"
    result = run(["predict", "photo.jpg", "--weights", "w.pth", "--conf", "2"], tmp_path, [sys.executable, "-c", blocked])
    assert_usage_error(result, "'--conf'")


@pytest.mark.slow
def test_values_valid_today_stay_valid(tmp_path):
    """``--threads 0`` (torch's default) and ``--conf 0`` parse; the command then fails for its own reason."""
    train = run(["train", "--threads", "0", "--workers", "0"], tmp_path)
    assert train.returncode == 2 and "needs --data" in train.stderr and "Traceback" not in train.stderr, train.stderr
    predict = run(["predict", "missing.jpg", "--weights", "w.pth", "--conf", "0", "--nms", "1", "--imgsz", "480x640"], tmp_path)
    assert predict.returncode == 2 and "image not found: missing.jpg" in predict.stderr, predict.stderr


@pytest.mark.slow
def test_user_errors_name_the_file(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"not an image")
    result = run(["predict", "photo.jpg", "--weights", "missing.pth", "--device", "cpu"], tmp_path)
    assert result.returncode == 2 and "missing.pth" in result.stderr and "Traceback" not in result.stderr, result.stderr
