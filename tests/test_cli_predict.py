"""``mobilekit predict`` and ``mobilekit params`` end to end, including bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobilekit", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def weights(shared):
    return str(shared / "weights" / "retinaface_mnet025_widerface.pth")


def test_predict_writes_json_and_drawings(shared, weights, tmp_path):
    image = shared / "images" / "two_people_720x1280.jpg"
    result = run_cli("predict", str(image), "--weights", weights, "--json", str(tmp_path / "out.json"), "--save-dir", str(tmp_path / "drawn"))
    assert result.returncode == 0, result.stderr
    payload = json.loads((tmp_path / "out.json").read_text())
    assert payload[0]["image"] == image.name and (payload[0]["width"], payload[0]["height"]) == (1280, 720)
    faces = payload[0]["faces"]
    assert sum(f["score"] >= 0.5 for f in faces) >= 2
    assert [f["score"] for f in faces] == sorted((f["score"] for f in faces), reverse=True)
    assert len(faces[0]["box_xyxy"]) == 4 and len(faces[0]["landmarks_xy"]) == 10
    drawn = cv2.imread(str(tmp_path / "drawn" / "two_people_720x1280_faces.jpg"))
    assert drawn.shape == (720, 1280, 3)


@pytest.mark.slow
def test_predict_writes_widerface_layout_that_the_evaluator_reads(shared, weights, tmp_path):
    from mobilekit.evaluation.widerface import read_prediction_file

    event = tmp_path / "images" / "0--Parade"
    event.mkdir(parents=True)
    (event / "0_Parade_test.jpg").write_bytes((shared / "images" / "two_people_720x1280.jpg").read_bytes())
    result = run_cli("predict", str(tmp_path / "images"), "--weights", weights, "--widerface-out", str(tmp_path / "preds"), "--json", str(tmp_path / "o.json"))
    assert result.returncode == 0, result.stderr
    rows = read_prediction_file(tmp_path / "preds" / "0--Parade" / "0_Parade_test.txt")
    faces = json.loads((tmp_path / "o.json").read_text())[0]["faces"]
    assert len(rows) == len(faces)
    x1, y1, x2, y2 = faces[0]["box_xyxy"]
    np.testing.assert_allclose(rows[0, :4], [x1, y1, x2 - x1 + 1, y2 - y1 + 1], atol=0.06)


@pytest.mark.slow
def test_predict_converts_grayscale_and_rgba(shared, weights, tmp_path):
    bgr = cv2.imread(str(shared / "images" / "two_people_720x1280.jpg"))
    cv2.imwrite(str(tmp_path / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    result = run_cli("predict", str(tmp_path / "gray.png"), str(tmp_path / "rgba.png"), "--weights", weights, "--imgsz", "360,640", "--json", str(tmp_path / "o.json"))
    assert result.returncode == 0, result.stderr
    payload = json.loads((tmp_path / "o.json").read_text())
    rgba_faces = [f for f in payload[1]["faces"] if f["score"] >= 0.5]
    assert len(rgba_faces) >= 2
    # Boxes come back in the original image's pixels even though inference ran at 360x640.
    assert max(f["box_xyxy"][2] for f in rgba_faces) > 640


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "image not found"),
        ("not_image", "not a readable image"),
        ("unknown_model", "unknown model 'nope'"),
        ("wrong_checkpoint", "does not fit retinaface_mnet025"),
    ],
)
@pytest.mark.slow
def test_predict_bad_input_is_one_clear_error(case, expected, shared, weights, tmp_path):
    image = str(shared / "images" / "two_people_720x1280.jpg")
    args = ["predict", image, "--weights", weights]
    if case == "missing":
        args[1] = str(tmp_path / "absent.jpg")
    elif case == "not_image":
        (tmp_path / "notes.jpg").write_text("hello")
        args[1] = str(tmp_path / "notes.jpg")
    elif case == "unknown_model":
        args += ["--model", "nope"]
    else:
        args[3] = str(shared / "weights" / "featherface_v1_widerface.pth")
    result = run_cli(*args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_params_table_and_json(tmp_path):
    result = run_cli("params", "retinaface_mnet025", "--imgsz", "640", "--json", str(tmp_path / "p.json"))
    assert result.returncode == 0, result.stderr
    payload = json.loads((tmp_path / "p.json").read_text())
    assert payload["total_params"] == 426_608
    assert sum(c["params"] for c in payload["components"]) == 426_608
    # MACs scale with pixels: a 320x320 input costs about a quarter.
    small = run_cli("params", "retinaface_mnet025", "--imgsz", "320", "--json", str(tmp_path / "s.json"))
    assert small.returncode == 0
    ratio = payload["total_macs"] / json.loads((tmp_path / "s.json").read_text())["total_macs"]
    assert 3.9 < ratio < 4.1
