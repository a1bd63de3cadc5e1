"""YuNet-n (its authors' weights, shipped) through mobilekit's conversions at 320 and 640: every file passes
``mobilekit parity`` (int8 judged on photos its calibration never saw, >= 97 % of PyTorch's faces), the
end-to-end package decodes YuNet in the graph, and training fine-tunes from the authors' weights (``mobilekit
train`` and ``mobilekit run --model yunet_n``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mobilekit.box_coder import box_iou
from mobilekit.converters.runtimes import TFLiteRuntime
from mobilekit.detections import PostprocessConfig
from mobilekit.families import decode_outputs
from mobilekit.image_io import read_image, resize_to_input, to_nchw
from mobilekit.inference import load_model, run_model

pytestmark = pytest.mark.slow

FILES = {"onnx", "onnx_sim", "fp32", "fp16", "int8", "int8_full"}


@pytest.mark.parametrize("size", [320, 640])
def test_every_file_passes_parity(size, yunet_exports) -> None:
    _, report = yunet_exports(size)
    artefacts = report["artefacts"]
    assert {a["variant"] for a in artefacts} == FILES
    assert all(a["passed"] for a in artefacts), [(a["file"], a["verdict"]) for a in artefacts if not a["passed"]]
    for a in artefacts:
        faces = a["faces"]
        assert faces["faces"] >= 50  # the three judging photos hold crowds
        if a["precision"] == "int8":
            assert faces["found"] / faces["faces"] >= 0.97, (a["file"], faces)
        else:
            assert faces["found"] == faces["faces"], (a["file"], faces)


@pytest.fixture(scope="module")
def e2e_package(yunet_exports, tmp_path_factory) -> Path:
    from mobilekit.flutter.package import package_export

    export_dir, _ = yunet_exports(320)
    return package_export(export_dir, tmp_path_factory.mktemp("yunet_e2e") / "yunet_n_e2e", "fp32", end_to_end=True)


def test_end_to_end_package_decodes_yunet_in_the_graph(e2e_package, shared_images) -> None:
    """``mobilekit package --end-to-end``: the graph's faces are PyTorch's (the family's decode, NMS on float
    boxes as the graph's NMS does) on photos, in score order."""
    meta = json.loads((e2e_package / "model_meta.json").read_text())
    assert meta["model"]["end_to_end"] is True and meta["decoder"]["kind"] == "end_to_end"
    runtime = TFLiteRuntime(e2e_package / "model.tflite")
    threshold = meta["decoder"]["score_threshold"]
    model = load_model("yunet_n")
    height, width = meta["input"]["shape"][1:3]
    compared = 0
    for path in shared_images:
        image = resize_to_input(read_image(path), (height, width), meta["input"]["resize"]["mode"])[0]
        outputs = run_model(model, to_nchw(image))
        cfg = PostprocessConfig(conf_threshold=threshold, nms_iou=meta["decoder"]["nms_iou"], nms_offset=0.0)
        reference = decode_outputs(model.deploy, {k: v[0].numpy() for k, v in outputs.items()}, (height, width), cfg).numpy()
        result = runtime.run(image[None])
        count = int(result["num_detections"][0])
        boxes, scores, points = result["boxes"][0, :count], result["scores"][0, :count], result["landmarks"][0, :count]
        assert np.all(np.diff(scores) <= 0) and np.all(scores > threshold)
        strong = np.flatnonzero(reference.scores >= threshold + 0.005)  # clear of the threshold (YuNet's scores crowd just above 0.9)
        if len(strong) == 0:
            continue
        assert count > 0, path.name
        iou = box_iou(reference.boxes[strong].astype(np.float64), boxes.astype(np.float64))
        for row, r in enumerate(strong):
            t = int(np.argmax(iou[row]))
            assert iou[row, t] >= 0.99, f"{path.name}: face {reference.boxes[r]} best IoU {iou[row, t]:.4f}"
            assert abs(float(reference.scores[r]) - float(scores[t])) <= 1e-3
            np.testing.assert_allclose(points[t], reference.landmarks[r], atol=0.5)
        compared += len(strong)
    assert compared >= 15


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from mobilekit.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("yunet_train") / "synth", 24, seed=7, imgsz=320, val_fraction=0.25)


def test_train_cli_fine_tunes_the_authors_weights(synth, tmp_path) -> None:
    """``mobilekit train --model yunet_n`` starts from the shipped weights (its first validation AP is the
    authors' model's, not a random network's) and a few steps keep it."""
    from mobilekit.cli import main
    from mobilekit.evaluation.ap import evaluate_dataset

    before = evaluate_dataset(load_model("yunet_n"), synth, "val", (320, 320))["ap50"]
    out = tmp_path / "run"
    main(["train", "--model", "yunet_n", "--data", str(synth), "--epochs", "1", "--batch", "6", "--imgsz", "320", "--lr", "1e-4",
          "--device", "cpu", "--no-progress", "--out", str(out)])  # fmt: skip
    after = evaluate_dataset(load_model("yunet_n", out / "best_weights.pth"), synth, "val", (320, 320))["ap50"]
    assert before > 0.3 and after >= before - 0.05, (before, after)


def test_run_fine_tunes_yunet_from_the_authors_weights(tmp_path, monkeypatch) -> None:
    """``mobilekit run --model yunet_n``: the pipeline trains from the shipped weights (no ImageNet backbone:
    YuNet has none) and its evaluation is the fine-tuned model's. Export, parity and packaging of YuNet are the
    tests above; here the steps up to evaluation run (the whole run: ~12 min on 2 cores)."""
    from mobilekit.cli import main
    from mobilekit.embedded_run import Pipeline

    steps = Pipeline.steps
    monkeypatch.setattr(Pipeline, "steps", lambda self: steps(self)[:3])  # make data, train, evaluate
    out = tmp_path / "run"
    main(["run", "--model", "yunet_n", "--out", str(out), "--images", "24", "--epochs", "1", "--device", "cpu"])
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == ["data", "train", "evaluate"] and all(s["ok"] for s in summary["steps"])
    ap = json.loads((out / "eval.json").read_text())["ap50"]
    assert ap > 0.3, ap  # a randomly initialised YuNet finds next to nothing after one epoch of 19 images
