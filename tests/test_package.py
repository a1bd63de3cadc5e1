"""mobilekit package: the Flutter folder alone (model.tflite + anchors.json + model_meta.json), decoded
with the NumPy mirror of the Dart decoder, reproduces PyTorch's faces on real photos."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mobilekit.box_coder import box_iou
from mobilekit.config import LANDMARK_NAMES
from mobilekit.converters.runtimes import TFLiteRuntime
from mobilekit.converters.sidecars import sha256_file
from mobilekit.detections import Detections
from mobilekit.errors import MobilekitError
from mobilekit.families import decode_outputs, family_of
from mobilekit.families.retinaface.priors import prior_boxes
from mobilekit.flutter import reference_decoder as ref
from mobilekit.flutter.embedded_json import embed_metadata, read_embedded_metadata
from mobilekit.flutter.package import package_export
from mobilekit.image_io import read_image, resize_to_input, to_nchw
from mobilekit.inference import load_model, run_model
from mobilekit.models import create_model

FACE_SCORE = 0.5


@pytest.fixture(scope="module")
def torch_model(shared):
    return load_model("retinaface_mnet025", shared / "weights/retinaface_mnet025_widerface.pth")


def load_package(folder: Path):
    """What an app loads: only the packaged folder."""
    meta = json.loads((folder / "model_meta.json").read_text())
    anchors = ref.load_anchors(json.loads((folder / "anchors.json").read_text()))
    return meta, anchors, ref.DecoderSettings.from_meta(meta), TFLiteRuntime(folder / "model.tflite")


def pytorch_faces(model, image: np.ndarray) -> Detections:
    outputs = run_model(model, to_nchw(image))
    return decode_outputs(model.deploy, {k: v[0] for k, v in outputs.items()}, image.shape[:2]).numpy()


def assert_faces_match(reference: Detections, test: Detections, min_iou: float, max_score_diff: float) -> int:
    """Every reference face with score >= 0.5 has a test face at IoU >= min_iou with a close score."""
    strong = np.flatnonzero(reference.scores >= FACE_SCORE)
    assert len(test) > 0 or len(strong) == 0
    iou = box_iou(reference.boxes.astype(np.float64), test.boxes.astype(np.float64))
    for r in strong:
        t = int(np.argmax(iou[r]))
        assert iou[r, t] >= min_iou, f"face {reference.boxes[r]} (score {reference.scores[r]:.4f}) best IoU {iou[r, t]:.4f}"
        assert abs(float(reference.scores[r]) - float(test.scores[t])) <= max_score_diff
    return len(strong)


@pytest.mark.slow
def test_packaged_folder_alone_reproduces_pytorch_on_real_photos(retinaface_packages, torch_model, shared_images):
    meta, anchors, settings, runtime = load_package(retinaface_packages["fp32"])
    height, width = meta["input"]["shape"][1:3]
    resize = meta["input"]["resize"]
    checked = 0
    for path in shared_images[:3]:
        image = resize_to_input(read_image(path), (height, width), resize["mode"], resize["pad_value"])[0]
        faces = ref.detect(runtime.run(image[None]), anchors, settings).numpy()
        checked += assert_faces_match(pytorch_faces(torch_model, image), faces, min_iou=0.9, max_score_diff=1e-3)
    assert checked >= 5  # real faces were compared, not an empty set


@pytest.mark.slow
def test_fp16_package_keeps_the_faces(retinaface_packages, torch_model):
    folder = retinaface_packages["fp16"]
    meta, anchors, settings, runtime = load_package(folder)
    image = read_image(folder / "golden" / "input.png")
    faces = ref.detect(runtime.run(image[None]), anchors, settings).numpy()
    assert assert_faces_match(pytorch_faces(torch_model, image), faces, min_iou=0.9, max_score_diff=2e-2) > 0
    assert meta["model"]["variant"] == "fp16"


@pytest.mark.slow
def test_golden_files_are_what_the_packaged_model_and_decoder_give(retinaface_packages):
    folder = retinaface_packages["fp32"]
    meta, anchors, settings, runtime = load_package(folder)
    image = read_image(folder / "golden" / "input.png")
    assert image.shape == (*meta["input"]["shape"][1:3], 3)
    outputs = runtime.run(image[None])
    golden = {name: np.load(folder / rel) for name, rel in meta["golden"]["outputs"].items()}
    assert sorted(golden) == ["conf", "landmarks", "loc"]
    for name, value in golden.items():
        np.testing.assert_array_equal(value, outputs[name])
    index = json.loads((folder / meta["golden"]["index"]).read_text())
    assert index["byte_order"] == "little"
    for name, value in golden.items():  # the .bin twins Dart reads hold the same numbers
        entry = index["files"][name]
        raw = np.fromfile(folder / "golden" / entry["file"], dtype="<f4").reshape(entry["shape"])
        np.testing.assert_array_equal(raw, value)
    entry = index["files"]["input"]
    raw_input = np.fromfile(folder / "golden" / entry["file"], dtype=np.uint8).reshape(entry["shape"])
    np.testing.assert_array_equal(raw_input[0], image)
    expected = json.loads((folder / "golden" / "expected_detections.json").read_text())
    assert expected["faces"] == ref.detect(golden, anchors, settings).to_json()
    assert len(expected["faces"]) >= 3 and min(f["score"] for f in expected["faces"]) > settings.score_threshold


@pytest.mark.slow
def test_reference_decoder_equals_the_one_postprocess(retinaface_packages):
    """The mirror's decode + nms is the library's decode path, bit for bit."""
    folder = retinaface_packages["fp32"]
    meta, anchors, settings, _ = load_package(folder)
    golden = {name: np.load(folder / rel)[0] for name, rel in meta["golden"]["outputs"].items()}
    deploy = create_model("retinaface_mnet025").deploy
    lowered = dataclasses.replace(settings, score_threshold=0.02)
    mirror = ref.detect(golden, anchors, lowered)
    library = decode_outputs(deploy, golden, settings.input_hw, lowered.postprocess_config())
    assert len(mirror) > 10
    for a, b in zip((mirror.boxes, mirror.scores, mirror.landmarks), (library.boxes, library.scores, library.landmarks)):
        np.testing.assert_array_equal(a, b)


def test_letterbox_transform_and_undo_mirror_resize_to_input():
    image = np.zeros((481, 723, 3), dtype=np.uint8)
    _, expected = resize_to_input(image, (640, 640), "letterbox", 114)
    transform = ref.letterbox_transform((481, 723), (640, 640))
    assert transform == expected
    faces = Detections(np.array([[10.0, 100.0, 50.0, 160.0]], np.float32), np.array([0.9], np.float32), np.full((1, 10), 120.0, np.float32))
    back = ref.undo_letterbox(faces, transform)
    np.testing.assert_allclose(back.boxes[0, [0, 2]] * transform.scale_x + transform.pad_x, [10.0, 50.0], atol=1e-4)
    np.testing.assert_allclose(back.boxes[0, [1, 3]] * transform.scale_y + transform.pad_y, [100.0, 160.0], atol=1e-4)


@pytest.mark.slow
def test_anchors_json_holds_the_priors_in_output_row_order(retinaface_packages):
    folder = retinaface_packages["fp32"]
    doc = json.loads((folder / "anchors.json").read_text())
    meta = json.loads((folder / "model_meta.json").read_text())
    deploy = create_model("retinaface_mnet025").deploy
    priors = prior_boxes(deploy.anchors, (640, 640))
    assert doc["layout"] == "cx,cy,w,h" and doc["normalized"] is True and doc["input_size"] == [640, 640]
    assert doc["min_sizes"] == [[16, 32], [64, 128], [256, 512]] and doc["steps"] == [8, 16, 32] and doc["variances"] == [0.1, 0.2]
    np.testing.assert_array_equal(ref.load_anchors(doc), priors)
    rows = {o["name"]: o["shape"][1] for o in meta["outputs"]}
    assert rows == {"loc": len(priors), "conf": len(priors), "landmarks": len(priors)}


def test_yolo_models_get_a_grid_anchor_description():
    from mobilekit.families.yolo.decode import num_predictions

    deploy = create_model("adyolov5_face").deploy
    doc = family_of(deploy).anchors_document(deploy, (640, 640))
    assert doc["layout"] == "yolo_grid" and doc["decoded_in_graph"] is True
    assert doc["strides"] == list(deploy.anchors.strides)
    assert doc["count"] == num_predictions(deploy.anchors, (640, 640))
    assert [list(s) for s in doc["grid_sizes"]] == [[640 // s, 640 // s] for s in deploy.anchors.strides]


@pytest.mark.slow
def test_yolo_export_packages_with_its_grid_and_in_graph_decode(random_export_factory, tmp_path):
    """A random-weight export, never checked by parity: packaged with --unverified, which model_meta.json and
    the README say; its metadata names the YOLO grid and no RetinaFace prior anywhere."""
    from mobilekit.families.yolo.decode import num_predictions

    export_dir = random_export_factory("adyolov5_face")
    folder = package_export(export_dir, tmp_path / "yolo", unverified=True)
    meta = json.loads((folder / "model_meta.json").read_text())
    deploy = create_model("adyolov5_face").deploy
    doc = json.loads((folder / "anchors.json").read_text())
    assert meta["verification"] == {**meta["verification"], "verified": False, "parity": "not checked", "report": "parity.json"}
    assert meta["verification"]["reason"].startswith("Packaged with --unverified: no parity report")
    assert "Unverified: do not ship" in (folder / "README.md").read_text()
    sidecar = json.loads((export_dir / "adyolov5_face_256_fp32.json").read_text())
    for text in (json.dumps(sidecar), json.dumps(meta), json.dumps(doc)):
        assert "min_sizes" not in text and "retinaface_priors" not in text and "variances" not in text
    assert doc["layout"] == "yolo_grid" and doc["count"] == num_predictions(deploy.anchors, (256, 256))
    assert meta["decoder"]["kind"] == "yolo" and meta["decoder"]["nms_offset"] == 0.0
    assert meta["input"]["resize"] == {**meta["input"]["resize"], "mode": "letterbox", "pad_value": 114.0}
    golden = {name: np.load(folder / rel) for name, rel in meta["golden"]["outputs"].items()}
    assert list(golden) == ["predictions"] and golden["predictions"].shape == (1, doc["count"], 16)
    settings = dataclasses.replace(ref.DecoderSettings.from_meta(meta), score_threshold=0.02)
    mirror = ref.detect(golden, None, settings)
    library = decode_outputs(deploy, {"predictions": golden["predictions"][0]}, (256, 256), settings.postprocess_config())
    np.testing.assert_array_equal(mirror.boxes, library.boxes)
    assert meta["parity"]["faces"]["found"] == meta["parity"]["faces"]["faces"]
    with pytest.raises(MobilekitError, match="no end-to-end graph"):
        package_export(export_dir, tmp_path / "yolo_e2e", end_to_end=True, unverified=True)


@pytest.mark.slow
def test_model_meta_describes_the_contract(retinaface_packages, retinaface_export):
    folder = retinaface_packages["fp32"]
    meta = json.loads((folder / "model_meta.json").read_text())
    assert meta["schema_version"] == "mobilekit.flutter/1"
    assert meta["model"]["name"] == "retinaface_mnet025" and meta["model"]["parameters"] == 426_608
    assert meta["model"]["sha256"] == sha256_file(folder / "model.tflite")
    assert meta["input"]["shape"] == [1, 640, 640, 3] and meta["input"]["dtype"] == "float32"
    assert meta["input"]["channel_order"] == "RGB" and meta["input"]["value_range"] == [0, 255]
    assert meta["input"]["resize"]["mode"] == "stretch"
    assert meta["landmark_order"] == list(LANDMARK_NAMES)
    assert meta["decoder"]["score_threshold"] == 0.5 and meta["decoder"]["nms_iou"] == 0.4
    columns = {o["name"]: o["columns"] for o in meta["outputs"]}
    assert columns["loc"] == ["dx", "dy", "dw", "dh"] and columns["conf"] == ["background_prob", "face_prob"]
    assert columns["landmarks"][:2] == ["left_eye_x_offset", "left_eye_y_offset"]
    indices = sorted(o["interpreter_output_index"] for o in meta["outputs"])
    assert indices == [0, 1, 2]
    faces = meta["parity"]["faces"]
    assert faces["faces"] > 0 and faces["found"] == faces["faces"] and max(m["max_abs"] for m in meta["parity"]["tensors"].values()) < 1e-3
    assert meta["versions"]["export"]["onnx2tf"] and meta["versions"]["package"]["ai-edge-litert"]
    assert (folder / "labels.txt").read_text().split() == ["face"]
    snippet = (folder / "pubspec_snippet.yaml").read_text()
    assert "model.tflite" in snippet and "anchors.json" in snippet and "tflite_flutter" in snippet
    assert "Interpreter.fromAsset" in (folder / "README.md").read_text() and "Unverified" not in (folder / "README.md").read_text()
    assert meta["verification"]["verified"] is True and meta["verification"]["parity"] == "passed"
    assert meta["parity"]["source"] == "parity.json" and meta["parity"]["passed"] is True
    assert (folder / "lib" / "face_decoder.dart").read_text().count("List<Face> nms(") == 1
    export_dir, _ = retinaface_export
    assert not [p for p in export_dir.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_metadata_is_embedded_and_the_model_still_runs_identically(retinaface_packages, retinaface_export):
    folder = retinaface_packages["fp32"]
    meta = json.loads((folder / "model_meta.json").read_text())
    embedded = read_embedded_metadata(folder / "model.tflite")
    assert embedded["embedded_as"] == "mobilekit_meta"
    assert embedded["decoder"] == meta["decoder"] and embedded["outputs"] == meta["outputs"] and embedded["input"] == meta["input"]
    export_dir, _ = retinaface_export
    original = TFLiteRuntime(export_dir / "retinaface_mnet025_640_fp32.tflite")
    packaged = TFLiteRuntime(folder / "model.tflite")
    image = read_image(folder / "golden" / "input.png")[None]
    a, b = original.run(image), packaged.run(image)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.slow
def test_embedding_twice_replaces_the_entry(retinaface_packages, tmp_path):
    target = embed_metadata(retinaface_packages["fp32"] / "model.tflite", tmp_path / "again.tflite", {"version": 2})
    assert read_embedded_metadata(target) == {"version": 2}
    assert target.stat().st_size < (retinaface_packages["fp32"] / "model.tflite").stat().st_size


def fake_export(folder: Path) -> Path:
    """An export folder with one (fake) fp16 TFLite file and its sidecar: enough for packaging to decide
    whether it may package the file, which it does first."""
    folder.mkdir()
    model = folder / "m_64_fp16.tflite"
    model.write_bytes(b"not converted: packaging refuses before it reads the model")
    sidecar = {"schema": "mobilekit.export/1", "artefact": {"file": model.name, "format": "tflite", "variant": "fp16", "sha256": sha256_file(model)}}
    (folder / "m_64_fp16.json").write_text(json.dumps(sidecar))
    return model


def parity_entry(model: Path, passed: bool, sha256: str | None = None) -> dict:
    return {"file": model.name, "precision": "fp16", "passed": passed, "criterion": "c", "verdict": "recall 3/3" if passed else "recall 1/3",
            "tensors": {}, "faces": {"faces": 3}, "per_image": [], "sha256": sha256 or sha256_file(model)}  # fmt: skip


def test_the_verdict_is_the_reports_entry_for_that_very_file(tmp_path):
    from mobilekit.flutter.verification import verdict

    model = fake_export(tmp_path / "export")
    report = tmp_path / "export" / "parity.json"
    assert verdict(report, model).status == "not checked" and "no parity report" in verdict(report, model).reason
    report.write_text(json.dumps({"images": ["a.jpg"], "artefacts": [parity_entry(model, True)]}))
    found = verdict(report, model)
    assert found.passed and found.entry["source"] == "parity.json" and found.entry["faces"] == {"faces": 3} and "per_image" not in found.entry
    report.write_text(json.dumps({"images": ["a.jpg"], "artefacts": [parity_entry(model, True, sha256="0" * 64)]}))
    assert verdict(report, model).status == "not checked" and "sha256 differs" in verdict(report, model).reason
    report.write_text(json.dumps({"images": ["a.jpg"], "artefacts": [parity_entry(model, False)]}))
    assert verdict(report, model).status == "FAILED" and "recall 1/3" in verdict(report, model).reason
    report.write_text(json.dumps({"artefacts": []}))
    assert "does not cover m_64_fp16.tflite" in verdict(report, model).reason
    report.write_text("{\"artefacts\": [")
    with pytest.raises(MobilekitError, match="parity.json is not readable JSON"):
        verdict(report, model)


@pytest.mark.slow
def test_what_parity_passes_in_the_export_folder_is_packaged_as_verified(tiny_export, tmp_path, capsys):
    """The contract end to end: ``mobilekit parity EXPORT_DIR`` leaves EXPORT_DIR/parity.json (with each
    file's sha256), ``mobilekit package EXPORT_DIR`` finds it there and packages the file as verified."""
    import cv2

    from mobilekit.cli import main

    export_dir = tmp_path / "export"
    shutil.copytree(tiny_export, export_dir)
    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "grey.jpg"), np.full((96, 128, 3), 128, np.uint8))
    main(["parity", str(export_dir), "--images", str(tmp_path / "photos")])
    report = json.loads((export_dir / "parity.json").read_text())
    assert {a["file"]: a["sha256"] for a in report["artefacts"]} == {p.name: sha256_file(p) for p in export_dir.glob("*.*") if p.suffix in (".onnx", ".tflite")}
    main(["package", str(export_dir), "--out", str(tmp_path / "pkg")])
    meta = json.loads((tmp_path / "pkg" / "model_meta.json").read_text())
    assert meta["verification"] == {
        "verified": True, "parity": "passed", "report": "parity.json",
        "reason": f"parity report parity.json passes retinaface_mnet025_64_fp32.tflite: {meta['parity']['verdict']}",
    }  # fmt: skip
    assert meta["parity"]["source"] == "parity.json" and "unverified" not in capsys.readouterr().err


@pytest.mark.parametrize("passed", [None, False])
def test_cli_refuses_a_file_without_a_passing_parity_report(tmp_path, capsys, passed):
    """No report, or one that fails the file: exit status 1, one line naming the file and the report, nothing written."""
    from mobilekit.cli import main

    model = fake_export(tmp_path / "export")
    if passed is not None:
        (model.parent / "parity.json").write_text(json.dumps({"artefacts": [parity_entry(model, passed)]}))
    with pytest.raises(SystemExit) as exc:
        main(["package", str(model.parent), "--out", str(tmp_path / "out"), "--precision", "fp16"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and len(err.strip().splitlines()) == 1, err
    assert "m_64_fp16.tflite is not packaged" in err and str(model.parent / "parity.json") in err and "--unverified" in err
    assert ("fails m_64_fp16.tflite: recall 1/3" if passed is False else "no parity report") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_reading_metadata_from_files_without_it_names_the_file(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(MobilekitError, match="junk.tflite"):
        read_embedded_metadata(junk)
    with pytest.raises(MobilekitError, match="missing.tflite"):
        read_embedded_metadata(tmp_path / "missing.tflite")


@pytest.mark.slow
def test_bad_export_folders_are_clear_errors(retinaface_export, tmp_path):
    export_dir, _ = retinaface_export
    with pytest.raises(MobilekitError, match="not found"):
        package_export(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(MobilekitError, match="unknown precision"):
        package_export(export_dir, tmp_path / "out", "fp8")
    orphan_dir = tmp_path / "orphan"
    orphan_dir.mkdir()
    shutil.copy(export_dir / "retinaface_mnet025_640_fp32.tflite", orphan_dir)
    with pytest.raises(MobilekitError, match=r"retinaface_mnet025_640_fp32\.tflite has no metadata sidecar"):
        package_export(orphan_dir, tmp_path / "out")
    with pytest.raises(MobilekitError, match="no TFLite fp16"):
        package_export(orphan_dir, tmp_path / "out", "fp16")
    (orphan_dir / "retinaface_mnet025_640_fp32.json").write_text("{not json")
    with pytest.raises(MobilekitError, match=r"fp32\.tflite has an unreadable metadata sidecar retinaface_mnet025_640_fp32\.json"):
        package_export(orphan_dir, tmp_path / "out")
    shutil.copy(export_dir / "retinaface_mnet025_640_fp32.json", orphan_dir)
    model = orphan_dir / "retinaface_mnet025_640_fp32.tflite"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # a half-copied file
    with pytest.raises(MobilekitError, match=r"fp32\.tflite is not the file its sidecar retinaface_mnet025_640_fp32\.json describes"):
        package_export(orphan_dir, tmp_path / "out", unverified=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_file_that_fails_under_xnnpack_is_not_packaged(retinaface_export, tmp_path):
    """The export's XNNPACK load probe failed (recorded by exports made before such files were refused):
    packaging refuses, naming it, even with --unverified."""
    export_dir, _ = retinaface_export
    copy_dir = tmp_path / "export"
    copy_dir.mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copy(export_dir / f"retinaface_mnet025_640_fp32{suffix}", copy_dir)
    sidecar = copy_dir / "retinaface_mnet025_640_fp32.json"
    meta = json.loads(sidecar.read_text())
    meta["tflite"]["analysis"]["xnnpack_load"] = {"ok": False, "error": "exit status -6: double free or corruption (!prev)"}
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(MobilekitError, match=r"retinaface_mnet025_640_fp32\.tflite fails in LiteRT with its default XNNPACK"):
        package_export(copy_dir, tmp_path / "out", unverified=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_failed_package_leaves_the_previous_folder_untouched(retinaface_export, retinaface_parity, tmp_path):
    export_dir, _ = retinaface_export
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "keep.txt").write_text("previous package")
    with pytest.raises(MobilekitError, match="missing.jpg"):
        package_export(export_dir, out, golden_image=tmp_path / "missing.jpg")
    assert (out / "keep.txt").read_text() == "previous package"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


@pytest.mark.slow
def test_cli_packages_and_reports_user_errors(retinaface_export, retinaface_parity, tmp_path, capsys):
    from mobilekit.cli import main

    export_dir, _ = retinaface_export
    with pytest.raises(SystemExit) as exc:
        main(["package", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and "export folder not found" in capsys.readouterr().err
    main(["package", str(export_dir), "--out", str(tmp_path / "out"), "--precision", "int8"])
    meta = json.loads((tmp_path / "out" / "model_meta.json").read_text())
    assert meta["model"]["variant"] == "int8" and read_embedded_metadata(tmp_path / "out" / "model.tflite")["model"]["variant"] == "int8"


@pytest.mark.slow
def test_packaged_dart_parses(retinaface_packages):
    from test_dart import syntax_errors

    files = [path for folder in retinaface_packages.values() for path in sorted(folder.rglob("*.dart"))]
    assert files
    for path in files:
        assert not syntax_errors(path.read_bytes()), f"{path}: {syntax_errors(path.read_bytes())}"


@pytest.mark.slow
def test_golden_camera_frames_decode_to_pytorchs_faces(retinaface_packages, torch_model, shared):
    """An NV21 frame from a sensor turned 90 degrees and a mirrored BGRA frame of a real photo: the stored
    frame rebuilds the stored model input with camera_input, and the faces in preview pixels are
    PyTorch's on the upright photo (every face >= 0.5 at IoU >= 0.9)."""
    from mobilekit.flutter import camera_input
    from mobilekit.inference import detect_image

    folder = retinaface_packages["fp32"]
    meta, anchors, settings, runtime = load_package(folder)
    index = json.loads((folder / meta["golden"]["index"]).read_text())
    photo = read_image(shared / "images" / meta["golden"]["source_image"])
    photo = photo[: photo.shape[0] // 2 * 2, : photo.shape[1] // 2 * 2]
    input_hw = tuple(meta["input"]["shape"][1:3])
    reference = detect_image(torch_model, photo, input_hw)
    assert int((reference.scores >= FACE_SCORE).sum()) >= 3
    for name, entry in index["camera_frames"].items():
        spec, data = entry["frame"], (folder / "golden" / entry["frame"]["file"]).read_bytes()
        offsets = np.cumsum([0] + [p["bytes"] for p in spec["planes"]])
        planes = tuple(camera_input.Plane(data[a:b], p["row_stride"], p["pixel_stride"]) for a, b, p in zip(offsets, offsets[1:], spec["planes"]))
        frame = camera_input.CameraFrame(spec["format"], spec["width"], spec["height"], planes, spec["rotation"], spec["mirror"])
        model_input = camera_input.camera_to_input(frame, input_hw, meta["input"]["resize"]["mode"], meta["input"]["resize"]["pad_value"])
        stored = np.fromfile(folder / "golden" / entry["input"]["file"], dtype=entry["input"]["dtype"]).reshape(entry["input"]["shape"])
        np.testing.assert_array_equal(model_input, stored)
        faces = ref.detect(runtime.run(model_input), anchors, settings)
        preview = ref.undo_letterbox(faces, camera_input.camera_transform(frame, input_hw, meta["input"]["resize"]["mode"]))
        assert preview.to_json() == entry["faces"]["faces"], name
        assert_faces_match(reference, preview, min_iou=0.9, max_score_diff=0.2)


@pytest.mark.slow
def test_dart_takes_its_constants_from_model_meta(retinaface_packages):
    """The Dart decoder reads every decoder setting from model_meta.json (variances, thresholds, NMS
    convention, top-k) and hard-codes no other float than 0, 0.5 and 1 (pixel centres, clamps);
    the output names it reads for this kind are the package's."""
    import re

    import tree_sitter
    import tree_sitter_dart

    folder = retinaface_packages["fp32"]
    meta = json.loads((folder / "model_meta.json").read_text())
    source = b"\n".join(path.read_bytes() for path in sorted((folder / "lib").glob("*decoder.dart")))
    text = source.decode()
    read = set(re.findall(r"meta\['decoder'\]\['(\w+)'\]", text))
    assert read == {"kind", "variances", "score_threshold", "nms_iou", "nms_offset", "pre_nms_top_k", "max_detections", "score_clipping"}
    assert read <= set(meta["decoder"])
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_dart.language()))
    floats, stack = set(), [parser.parse(source).root_node]
    while stack:
        node = stack.pop()
        if node.type == "decimal_floating_point_literal":
            floats.add(float(source[node.start_byte : node.end_byte]))
        stack.extend(node.children)
    assert floats <= {0.0, 0.5, 1.0}, floats
    names = {o["name"] for o in meta["outputs"]}
    assert names == {"loc", "conf", "landmarks"} and names <= set(re.findall(r"outputs\['(\w+)'\]", text))
    assert meta["landmark_order"] == ["left_eye", "right_eye", "nose", "left_mouth_corner", "right_mouth_corner"]
    assert "model_meta.json's landmark_order" in text  # the Dart side names no landmark itself


@pytest.mark.slow
@pytest.mark.parametrize("name", ["blazeface_short", "blazeface_full"])
def test_blazeface_package_alone_finds_mediapipes_faces(name, blazeface_packages, shared):
    """The packaged folder (model.tflite, anchors.json, model_meta.json) decoded by the NumPy mirror of the
    Dart decoder finds, on the shared photos, the faces MediaPipe itself finds (in photo pixels), and its
    golden detections are what that decoder gives on the golden outputs."""
    from tests.test_blazeface import MEDIAPIPE_TOLERANCE

    folder = blazeface_packages(name)
    meta, anchors, settings, runtime = load_package(folder)
    assert meta["decoder"]["kind"] == "blazeface" and len(anchors) == {"blazeface_short": 896, "blazeface_full": 2304}[name]
    assert meta["landmark_order"] == ["right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion"]
    golden = {name: np.load(folder / rel) for name, rel in meta["golden"]["outputs"].items()}
    expected = json.loads((folder / "golden" / "expected_detections.json").read_text())["faces"]
    assert expected == ref.detect(golden, anchors, settings).to_json() and len(expected) >= 5
    reference = json.loads((Path(__file__).parent / "data" / "mediapipe_face_detection.json").read_text())
    tol = MEDIAPIPE_TOLERANCE[name]
    resize = meta["input"]["resize"]
    for photo, faces in reference["models"][name].items():
        image = read_image(shared / "images" / photo)
        height, width = meta["input"]["shape"][1:3]
        transform = ref.letterbox_transform(image.shape[:2], (height, width), resize["mode"])
        found = ref.undo_letterbox(ref.detect(runtime.run(resize_to_input(image, (height, width), resize["mode"], resize["pad_value"])[0][None]), anchors, settings).numpy(), transform)
        assert len(found) == len(faces), photo
        if faces:
            iou = box_iou(np.array([f["box_xyxy"] for f in faces]), found.boxes.astype(np.float64))
            assert iou.max(1).min() >= tol["iou"], photo
