"""End-to-end TFLite (decode + NMS in the graph): RGB pixels in, faces out, matching PyTorch's decode."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mobilekit.box_coder import box_iou
from mobilekit.converters.runtimes import TFLiteRuntime
from mobilekit.detections import PostprocessConfig
from mobilekit.errors import MobilekitError
from mobilekit.families import decode_outputs
from mobilekit.flutter import reference_decoder as ref
from mobilekit.flutter.embedded_json import read_embedded_metadata
from mobilekit.flutter.end_to_end import OUTPUT_NAMES, build_end_to_end, measure_overhead
from mobilekit.flutter.package import package_export
from mobilekit.flutter.standard_metadata import read_standard_metadata
from mobilekit.image_io import read_image, resize_to_input, to_nchw
from mobilekit.inference import load_model, run_model
from mobilekit.models import create_model

FACE_SCORE = 0.5


@pytest.fixture(scope="module")
def e2e_package(retinaface_export, retinaface_parity, tmp_path_factory) -> Path:
    export_dir, _ = retinaface_export
    return package_export(export_dir, tmp_path_factory.mktemp("e2e") / "retinaface_e2e", "fp32", end_to_end=True)


@pytest.mark.slow
def test_end_to_end_model_matches_pytorch_decode_and_nms_on_real_photos(e2e_package, shared, shared_images):
    meta = json.loads((e2e_package / "model_meta.json").read_text())
    runtime = TFLiteRuntime(e2e_package / "model.tflite")
    settings = ref.DecoderSettings.from_meta(meta)
    model = load_model("retinaface_mnet025", shared / "weights/retinaface_mnet025_widerface.pth")
    height, width = meta["input"]["shape"][1:3]
    compared = 0
    for path in shared_images:
        image = resize_to_input(read_image(path), (height, width), meta["input"]["resize"]["mode"])[0]
        outputs = run_model(model, to_nchw(image))
        reference = decode_outputs(model.deploy, {k: v[0] for k, v in outputs.items()}, (height, width), PostprocessConfig(nms_offset=0.0)).numpy()
        faces = ref.detect(runtime.run(image[None]), None, settings).numpy()
        strong = np.flatnonzero(reference.scores >= FACE_SCORE)
        assert len(faces) >= len(strong) or len(faces) == settings.max_detections
        iou = box_iou(reference.boxes[strong].astype(np.float64), faces.boxes.astype(np.float64)) if len(faces) else np.zeros((len(strong), 0))
        for row, r in enumerate(strong):
            t = int(np.argmax(iou[row]))
            assert iou[row, t] >= 0.99, f"{path.name}: face {reference.boxes[r]} best IoU {iou[row, t]:.4f}"
            assert abs(float(reference.scores[r]) - float(faces.scores[t])) <= 1e-3
            np.testing.assert_allclose(faces.landmarks[t], reference.landmarks[r], atol=0.5)
        assert np.all(np.diff(faces.scores) <= 0) and np.all(faces.scores > settings.score_threshold)
        compared += len(strong)
    assert compared >= 20


@pytest.mark.slow
def test_end_to_end_outputs_are_fixed_size_and_padded(e2e_package):
    meta = json.loads((e2e_package / "model_meta.json").read_text())
    assert meta["model"]["end_to_end"] is True and meta["decoder"]["kind"] == "end_to_end"
    assert meta["decoder"]["nms_offset"] == 0.0 and meta["export"]["end_to_end"]["ops"]["NON_MAX_SUPPRESSION_V5"] == 1
    k = meta["decoder"]["max_detections"]
    shapes = {o["name"]: o["shape"] for o in meta["outputs"]}
    assert sorted(shapes) == sorted(OUTPUT_NAMES)
    assert shapes == {"boxes": [1, k, 4], "scores": [1, k], "landmarks": [1, k, 10], "num_detections": [1]}
    golden = {name: np.load(e2e_package / rel) for name, rel in meta["golden"]["outputs"].items()}
    count = int(golden["num_detections"][0])
    assert 0 < count < k
    assert not golden["boxes"][0, count:].any() and not golden["scores"][0, count:].any()
    expected = json.loads((e2e_package / "golden" / "expected_detections.json").read_text())
    assert len(expected["faces"]) == count
    assert read_embedded_metadata(e2e_package / "model.tflite")["decoder"] == meta["decoder"]
    standard = read_standard_metadata(e2e_package / "model.tflite")["subgraph_metadata"][0]["output_tensor_metadata"]
    assert [t["name"] for t in standard] == [o["name"] for o in sorted(meta["outputs"], key=lambda o: o["interpreter_output_index"])]
    assert [t["name"] for t in standard if "associated_files" in t] == ["scores"]  # labels.txt names the class it scores
    assert meta["parity"]["faces"]["found"] == meta["parity"]["faces"]["faces"]


@pytest.mark.slow
def test_overhead_measurement_reports_both_latencies(e2e_package, retinaface_export):
    export_dir, _ = retinaface_export
    image = read_image(e2e_package / "golden" / "input.png")[None]
    result = measure_overhead(export_dir / "retinaface_mnet025_640_fp32.tflite", e2e_package / "model.tflite", image, runs=2)
    assert result["plain_ms"] > 0 and result["end_to_end_ms"] > 0 and math.isfinite(result["overhead_ms"])


def test_end_to_end_rejects_what_it_cannot_build(tmp_path):
    sample = np.zeros((1, 64, 64, 3), np.float32)
    yolo = create_model("adyolov5_face").deploy
    with pytest.raises(MobilekitError, match="no end-to-end graph"):
        build_end_to_end(tmp_path / "m.onnx", yolo, (64, 64), tmp_path / "e.tflite", sample)
    retina = create_model("retinaface_mnet025").deploy
    with pytest.raises(MobilekitError, match="fp32 or fp16"):
        build_end_to_end(tmp_path / "m.onnx", retina, (64, 64), tmp_path / "e.tflite", sample, precision="int8")
    with pytest.raises(MobilekitError, match="m.onnx"):
        build_end_to_end(tmp_path / "m.onnx", retina, (64, 64), tmp_path / "e.tflite", sample)
