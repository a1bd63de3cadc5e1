"""The standard TFLite Metadata in packaged models: written by mobilekit's own flatbuffer code, read back
by an independent reader, TFLite Support's ``MetadataDisplayer`` (tflite-support 0.4.4 in a venv of
its own: it pins protobuf<4), with the associated files packed in the model."""

from __future__ import annotations

import ctypes.util
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mobilekit.converters.runtimes import TFLiteRuntime
from mobilekit.converters.sidecars import sha256_file
from mobilekit.errors import MobilekitError
from mobilekit.families import family_of
from mobilekit.flutter import standard_metadata as sm
from mobilekit.flutter.embedded_json import embed_metadata, read_embedded_metadata, read_metadata_buffer
from mobilekit.flutter.package import ASSOCIATED_FILES, package_export
from mobilekit.models import create_model

BLAZEFACE = "weights/face_detection_short_range.tflite"
TFLITE_SUPPORT = "tflite-support==0.4.4"
READER = """
import hashlib, json, shutil, sys, tempfile
from tflite_support import metadata
from tensorflow_lite_support.metadata.cc.python import _pywrap_metadata_version

result = {}
for path in sys.argv[1:]:
    displayer = metadata.MetadataDisplayer.with_model_file(path)
    files = displayer.get_packed_associated_file_list()
    with tempfile.TemporaryDirectory() as scratch:  # the populator validates tensor counts and file names
        copy = shutil.copy(path, scratch)
        populator = metadata.MetadataPopulator.with_model_file(copy)
        populator.load_metadata_buffer(displayer.get_metadata_buffer())
        populator.populate()
    result[path] = {
        "metadata": json.loads(displayer.get_metadata_json()),
        "files": files,
        "sha256": {f: hashlib.sha256(displayer.get_associated_file_buffer(f)).hexdigest() for f in files},
        "min_parser_version": _pywrap_metadata_version.GetMinimumMetadataParserVersion(displayer.get_metadata_buffer()),
    }
print(json.dumps(result))
"""


# -- without the independent reader ----------------------------------------------------------------
def test_blazeface_metadata_decodes_and_encodes_byte_for_byte(shared):
    """Google's BlazeFace file: the codec reads its metadata and writes exactly the same bytes again."""
    original = read_metadata_buffer(shared / BLAZEFACE, sm.METADATA_NAME)
    document = sm.from_buffer(original)
    subgraph = document["subgraph_metadata"][0]
    image = subgraph["input_tensor_metadata"][0]
    assert image["content"]["content_properties"] == {"color_space": "RGB"}
    assert image["process_units"] == [{"options_type": "NormalizationOptions", "options": {"mean": [127.5], "std": [127.5]}}]
    assert [t["name"] for t in subgraph["output_tensor_metadata"]] == ["raw boxes/keypoints", "scores"]
    assert document["min_parser_version"] == "1.0.0"
    assert sm.to_buffer(document) == original


def package_meta(dtype: str) -> dict:
    """A minimal model_meta.json for :func:`sm.describe`."""
    quantization = {"quantization": {"scale": 1.0, "zero_point": 0}} if dtype == "uint8" else {}
    outputs = [
        {"name": "scores", "interpreter_output_index": 1, "meaning": "face scores", "columns": [], "dtype": dtype, **quantization},
        {"name": "boxes", "interpreter_output_index": 0, "meaning": "face boxes", "columns": ["x1", "y1", "x2", "y2"], "dtype": "float32"},
    ]
    return {
        "model": {"name": "m", "variant": "int8_full" if dtype == "uint8" else "fp32", "weights_sha256": "ab" * 32},
        "input": {"name": "images", "shape": [1, 96, 128, 3], "dtype": dtype, "resize": {"mode": "letterbox", "pad_value": 114.0}, **quantization},
        "outputs": outputs,
        "decoder": {"kind": "retinaface", "anchors_file": "anchors.json"},
        "landmark_order": ["left_eye"],
    }


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_a_described_package_round_trips(dtype):
    document = sm.describe(package_meta(dtype), "scores")
    assert sm.from_buffer(sm.to_buffer(document)) == document
    image = document["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert image["process_units"][0]["options"] == {"mean": [0.0], "std": [1.0]}  # raw pixels, also for uint8
    assert image["content"]["content_properties"] == {"color_space": "RGB", "default_size": {"width": 128, "height": 96}}
    assert image["stats"] == {"max": [255.0], "min": [0.0]}
    assert ("uint8 raw pixel values 0-255 as they are" in image["description"]) == (dtype == "uint8")
    outputs = document["subgraph_metadata"][0]["output_tensor_metadata"]
    assert [t["name"] for t in outputs] == ["boxes", "scores"]  # interpreter order
    assert [f["name"] for f in outputs[1]["associated_files"]] == ["labels.txt"] and "associated_files" not in outputs[0]


def test_codec_errors_are_clear(tmp_path, shared):
    with pytest.raises(MobilekitError, match="score output 'logits' is not among"):
        sm.describe(package_meta("float32"), "logits")
    with pytest.raises(MobilekitError, match="ImageSize has no field"):
        sm.to_buffer({"subgraph_metadata": [{"input_tensor_metadata": [{"content": {"content_properties_type": "ImageProperties",
                      "content_properties": {"default_size": {"depth": 3}}}}]}]})  # fmt: skip
    with pytest.raises(MobilekitError, match="'BGR' is not a member of ColorSpaceType"):
        sm.to_buffer({"subgraph_metadata": [{"input_tensor_metadata": [{"content": {"content_properties_type": "ImageProperties",
                      "content_properties": {"color_space": "BGR"}}}]}]})  # fmt: skip
    with pytest.raises(MobilekitError, match="no 'M001' identifier"):
        sm.from_buffer(b"\x08\x00\x00\x00TFL3\x00\x00\x00\x00")
    plain = embed_metadata(shared / BLAZEFACE, tmp_path / "plain.tflite", {"k": 1})
    bad = embed_metadata(plain, tmp_path / "bad.tflite", {"k": 1}, {sm.METADATA_NAME: b"\x08\x00\x00\x00TFL3\x00\x00\x00\x00"})
    with pytest.raises(MobilekitError, match=r"bad\.tflite: 'TFLITE_METADATA': not a TFLite Metadata flatbuffer"):
        sm.read_standard_metadata(bad)
    (tmp_path / "none.tflite").write_bytes(plain.read_bytes().replace(b"TFLITE_METADATA", b"OTHER_METADATA_"))
    with pytest.raises(MobilekitError, match=r"none\.tflite has no embedded 'TFLITE_METADATA'"):
        sm.read_standard_metadata(tmp_path / "none.tflite")


def test_associated_files_are_appended_last_and_the_model_still_loads(shared, tmp_path):
    """The zip after the flatbuffer: zip readers find it, the interpreter and the metadata readers ignore it;
    embedding again rewrites the flatbuffer and drops it (so packaging appends it last)."""
    model = embed_metadata(shared / BLAZEFACE, tmp_path / "model.tflite", {"k": 1})
    flatbuffer = model.read_bytes()
    files = {"anchors.json": b'{"anchors": []}', "labels.txt": b"face\n"}
    sm.append_associated_files(model, files)
    assert model.read_bytes().startswith(flatbuffer)
    assert sm.read_associated_files(model) == files
    assert read_embedded_metadata(model) == {"k": 1}
    assert sm.read_standard_metadata(model)["name"] == "Short Range Face Detection"
    image = np.random.default_rng(0).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    for value, expected in zip(run_interpreter(model, image), run_interpreter(shared / BLAZEFACE, image), strict=True):
        np.testing.assert_array_equal(value, expected)
    again = embed_metadata(model, tmp_path / "again.tflite", {"k": 2})
    assert sm.read_associated_files(again) == {}
    assert sm.read_associated_files(shared / BLAZEFACE) == {}


def run_interpreter(path: Path, image: np.ndarray) -> list[np.ndarray]:
    """LiteRT's interpreter on a file without signatures (BlazeFace): outputs in interpreter order."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


# -- packaged models, read by TFLite Support --------------------------------------------------------
@pytest.fixture(scope="session")
def tflite_support_python(tmp_path_factory) -> Path:
    """The Python of a fresh venv with tflite-support 0.4.4 (it needs Debian's libusb-1.0-0)."""
    if ctypes.util.find_library("usb-1.0") is None:
        pytest.fail("libusb-1.0 is missing; tflite-support's metadata module links it: apt-get install -y libusb-1.0-0")
    venv = tmp_path_factory.mktemp("tflite_support") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", TFLITE_SUPPORT], capture_output=True, text=True)
    assert install.returncode == 0, f"pip install {TFLITE_SUPPORT} failed:\n{install.stderr[-3000:]}"
    return python


def read_with_tflite_support(python: Path, models: list[Path]) -> dict:
    """What TFLite Support reads from ``models``: metadata JSON, packed files (sha256), min parser version."""
    run = subprocess.run([str(python), "-c", READER, *map(str, models)], capture_output=True, text=True)
    assert run.returncode == 0, f"TFLite Support could not read the metadata:\n{run.stderr[-3000:]}"
    return {Path(path): found for path, found in json.loads(run.stdout).items()}


@pytest.fixture(scope="module")
def featherface_package(random_export_factory, tmp_path_factory) -> Path:
    return package_export(random_export_factory("featherface_v1"), tmp_path_factory.mktemp("featherface") / "featherface_v1", unverified=True)


@pytest.mark.slow
def test_tflite_support_reads_the_packaged_metadata_and_files(tflite_support_python, retinaface_packages, featherface_package, blazeface_packages):
    folders = {"retinaface_mnet025": retinaface_packages["fp32"], "featherface_v1": featherface_package, "blazeface_short": blazeface_packages("blazeface_short")}
    found = read_with_tflite_support(tflite_support_python, [folder / "model.tflite" for folder in folders.values()])
    for name, folder in folders.items():
        model = folder / "model.tflite"
        read = found[model]
        meta = json.loads((folder / "model_meta.json").read_text())
        deploy = create_model(name).deploy
        assert read["metadata"] == sm.read_standard_metadata(model)  # mobilekit's reader and TFLite Support's agree
        assert read["metadata"] == sm.describe(meta, family_of(deploy).score_output)
        assert read["min_parser_version"] == read["metadata"]["min_parser_version"] == "1.0.0"
        subgraph = read["metadata"]["subgraph_metadata"][0]
        (image,) = subgraph["input_tensor_metadata"]
        assert image["process_units"] == [{"options_type": "NormalizationOptions", "options": {"mean": [0.0], "std": [1.0]}}]
        height, width = meta["input"]["shape"][1:3]
        assert image["content"]["content_properties"] == {"color_space": "RGB", "default_size": {"width": width, "height": height}}
        runtime = TFLiteRuntime(model)
        tensor_names = {runtime.output_details[n]["index"]: n for n in runtime.output_names}
        interpreter_order = [tensor_names[d["index"]] for d in runtime.interpreter.get_output_details()]
        outputs = subgraph["output_tensor_metadata"]
        assert [t["name"] for t in outputs] == interpreter_order and set(interpreter_order) == set(family_of(deploy).output_meanings)
        labelled = {t["name"]: t["associated_files"] for t in outputs if "associated_files" in t}
        score = family_of(deploy).score_output
        assert labelled == {score: [{"name": "labels.txt", "description": labelled[score][0]["description"], "type": "TENSOR_AXIS_LABELS"}]}
        assert read["files"] == list(ASSOCIATED_FILES)
        assert read["sha256"] == {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in ASSOCIATED_FILES}
        assert meta["model"]["sha256"] == sha256_file(model)
        assert read_embedded_metadata(model)["decoder"] == meta["decoder"]


@pytest.mark.slow
def test_the_int8_full_package_says_its_uint8_input_is_raw_pixels(retinaface_export, retinaface_parity, tmp_path):
    export_dir, _ = retinaface_export
    folder = package_export(export_dir, tmp_path / "int8_full", "int8_full")
    meta = json.loads((folder / "model_meta.json").read_text())
    image = sm.read_standard_metadata(folder / "model.tflite")["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert meta["input"]["dtype"] == "uint8"
    assert image["process_units"][0]["options"] == {"mean": [0.0], "std": [1.0]}
    scale, zero_point = meta["input"]["quantization"]["scale"], meta["input"]["quantization"]["zero_point"]
    assert f"uint8 raw pixel values 0-255 as they are (input quantisation scale {scale:g}, zero point {zero_point})" in image["description"]
    assert sm.read_associated_files(folder / "model.tflite") == {f: (folder / f).read_bytes() for f in ASSOCIATED_FILES}
