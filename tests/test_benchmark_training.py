"""``mobilekit benchmark-train``: real training steps, consistent numbers, memory per case, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from mobilekit.benchmarks.training import TrainCase, measure_training, synthetic_batch
from mobilekit.cli import main
from mobilekit.errors import MobilekitError


def test_training_steps_update_the_model_and_report_consistent_numbers():
    row = measure_training(TrainCase("featherface_v2", 64, 2), steps=2, warmup=1)
    step = row["step_ms"]
    assert row["status"] == "ok" and step["runs"] == 2
    assert 0 < step["min_ms"] <= step["median_ms"] <= step["max_ms"]
    assert row["images_per_s"] == pytest.approx(2 * 1e3 / step["mean_ms"])
    assert torch.isfinite(torch.tensor(row["loss"])) and row["loss"] > 0


def test_synthetic_batch_has_three_faces_with_landmarks_inside_each_box():
    images, targets = synthetic_batch(3, 64)
    assert images.shape == (3, 3, 64, 64) and 0 <= images.min() and images.max() <= 255
    for target in targets:
        assert target.shape == (3, 15)
        x, y = target[:, 4:14:2], target[:, 5:14:2]
        assert ((x >= target[:, :1]) & (x <= target[:, 2:3]) & (y >= target[:, 1:2]) & (y <= target[:, 3:4])).all()


@pytest.mark.slow
def test_cli_measures_each_batch_in_its_own_process(tmp_path):
    out = tmp_path / "train.json"
    main(["benchmark-train", "featherface_v2", "--imgsz", "64", "--batch", "1,2", "--steps", "1", "--warmup", "0", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batch"], r["status"]) for r in rows] == [(1, "ok"), (2, "ok")]
    assert all(r["memory"]["peak_mb"] > 0 and r["images_per_s"] > 0 for r in rows)


def test_cuda_request_without_a_gpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(MobilekitError, match="cuda"):
        measure_training(TrainCase("featherface_v2", 64, 1, device="cuda"))
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark-train", "no_such_model", "--json", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2


def test_unwritable_json_folder_is_refused_before_any_measurement(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark-train", "featherface_v2", "--imgsz", "64", "--json", str(blocker / "out.json")])
    assert exit_info.value.code == 2
    assert blocker.read_text() == "not a folder"
