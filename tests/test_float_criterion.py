"""The float criterion (``converters/float_criterion.py``): rounding paths read from the model's graph;
every family's correct fp32/fp16 files pass parity on photos nobody derived anything from, while a file
with one layer's weights changed by 1 % fails."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper

from mobilekit.converters.float_criterion import RoundingPath, rounding_paths
from mobilekit.converters.parity import MIN_REFERENCE_FACES, check_artefacts
from mobilekit.converters.sidecars import find_artefacts, sha256_file, sidecar_path
from mobilekit.converters.variants import VARIANT
from mobilekit.data.synth import render_synthetic_image
from mobilekit.image_io import read_image


# -- rounding paths --------------------------------------------------------------------------------
class _Branches(nn.Module):
    """Two outputs: ``short`` two convolutions deep; ``long`` through a skipped depthwise convolution
    (the path through it is the longer), a pointwise one and a linear layer."""

    deploy = SimpleNamespace(output_names=("short", "long"))

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)  # K = 27
        self.head = nn.Conv2d(4, 2, 1)  # K = 4
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)  # K = 9
        self.pointwise = nn.Conv2d(4, 8, 1)  # K = 4
        self.linear = nn.Linear(8 * 4 * 4, 5)  # K = 128

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return self.head(y), self.linear(self.pointwise(self.depthwise(y) + y).flatten(1))

    def deploy_outputs(self, raw):
        return raw


def test_rounding_paths_take_the_longest_path_through_weighted_layers():
    paths = rounding_paths(_Branches(), (4, 4))
    assert paths["short"] == RoundingPath(2, (1 + math.sqrt(27)) + (1 + 2))
    assert paths["long"].layers == 4
    assert paths["long"].rounding == pytest.approx((1 + math.sqrt(27)) + (1 + 3) + (1 + 2) + (1 + math.sqrt(128)))


def _onnx_rounding_paths(path: Path) -> dict[str, RoundingPath]:
    """The same measure read independently from an exported ONNX graph of convolutions."""
    graph = onnx.load(str(path)).graph
    weights = {init.name: init for init in graph.initializer}
    memo: dict[str, RoundingPath] = {}
    for node in graph.node:  # exported graphs are topologically sorted
        inputs = [memo.get(name, RoundingPath(0, 0.0)) for name in node.input if name]
        layers, rounding = max((p.layers for p in inputs), default=0), max((p.rounding for p in inputs), default=0.0)
        if node.op_type == "Conv":
            layers, rounding = layers + 1, rounding + 1 + math.sqrt(math.prod(weights[node.input[1]].dims[1:]))
        for output in node.output:
            memo[output] = RoundingPath(layers, rounding)
    return {output.name: memo[output.name] for output in graph.output}


def test_rounding_paths_equal_the_exported_onnx_graphs(tmp_path):
    """RetinaFace's paths from PyTorch's autograd graph are the exported ONNX graph's (batch norm folded)."""
    from mobilekit.converters import build_source_model, export_model, source_metadata

    model = build_source_model("retinaface_mnet025", None, random_seed=0)
    (onnx_path,) = export_model(model, 64, tmp_path, formats=("onnx",), source=source_metadata(None, 0))
    from_torch = rounding_paths(model, (64, 64))
    from_onnx = _onnx_rounding_paths(onnx_path)
    assert set(from_torch) == set(from_onnx) == {"loc", "conf", "landmarks"}
    for name, path in from_torch.items():
        assert path.layers == from_onnx[name].layers == 34  # 27 backbone, FPN 3, SSH 3, head 1
        assert path.rounding == pytest.approx(from_onnx[name].rounding)


# -- photos nobody derived anything from -----------------------------------------------------------
def _variants(image: np.ndarray) -> dict[str, np.ndarray]:
    """What the issue's 26 photos had: dark, backlit, grey, tilted scenes, and closer crops."""
    height, width = image.shape[:2]
    light = image.astype(np.float32) / 255
    ramp = np.linspace(0.0, 0.6, width, dtype=np.float32)[None, :, None]
    tilt = cv2.getRotationMatrix2D((width / 2, height / 2), 20, 1.0)
    return {
        "dark": (255 * 0.35 * light**2.2).astype(np.uint8),
        "backlit": (255 * np.clip(1.6 * light + ramp, 0, 1)).astype(np.uint8),
        "grey": np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2),
        "tilted": cv2.warpAffine(image, tilt, (width, height), borderMode=cv2.BORDER_REFLECT),
        "crop": image[int(0.2 * height) : int(0.75 * height), int(0.15 * width) : int(0.7 * width)],
    }


@pytest.fixture(scope="module")
def held_out_photos(shared_images, tmp_path_factory) -> Path:
    """Each shared photo as one variant, in turn (dark, backlit, grey, tilted, cropped, ...), the group photo
    tilted as well (BlazeFace short range's near faces), and two synthetic images: PNG files in a fresh folder."""
    folder = tmp_path_factory.mktemp("held_out_photos")
    kinds = list(_variants(np.zeros((8, 8, 3), np.uint8)))
    for index, path in enumerate(shared_images):
        variants = _variants(read_image(path))
        for kind in {kinds[index % len(kinds)], *(["tilted"] if path.stem.startswith("group") else [])}:
            cv2.imwrite(str(folder / f"{path.stem}_{kind}.png"), cv2.cvtColor(variants[kind], cv2.COLOR_RGB2BGR))
    for seed in range(2):
        image, _ = render_synthetic_image(np.random.default_rng([26, seed]), 640)
        cv2.imwrite(str(folder / f"synthetic_{seed}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder


def _export_dir(request, case: str) -> Path:
    """The session export of ``case`` (real weights where the shared folder has them, else random)."""
    if case in ("retinaface_mnet025", "retinaface_mnet025_litert"):
        return request.getfixturevalue("retinaface_export" if case == "retinaface_mnet025" else "retinaface_litert_export")[0]
    if case == "featherface_v1":
        return request.getfixturevalue("featherface_export")
    if case.startswith("blazeface"):
        return request.getfixturevalue("blazeface_exports")(case)[1]
    return request.getfixturevalue("random_export_factory")(case)


def _float_files(export_dir: Path, folder: Path) -> Path:
    """``folder`` with links to ``export_dir``'s fp32 and fp16 files and their sidecars (int8 is not at stake here)."""
    for path, meta in find_artefacts(export_dir):
        if VARIANT[meta["artefact"]["variant"]].precision != "int8":
            for linked in (path, sidecar_path(path)):
                (folder / linked.name).symlink_to(linked)
    return folder


CASES = [
    "retinaface_mnet025", "retinaface_mnet025_litert", "featherface_v1", "featherface_v1_cbam", "featherface_v2",
    "adyolov5_face", "blazeface_short", "blazeface_full",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_correct_float_files_pass_on_photos_nobody_tuned_on(case, request, held_out_photos, tmp_path):
    """Every fp32 file (ONNX, simplified ONNX, TFLite under XNNPACK, either converter) within its model's
    float bound, and every fp16 file keeping every face, on held-out photos; the built-in kernels too."""
    report = check_artefacts(_float_files(_export_dir(request, case), tmp_path), held_out_photos)
    judged = report["artefacts"]
    assert judged and all(a["passed"] for a in judged), [(a["file"], a["verdict"]) for a in judged if not a["passed"]]
    bounds = next(iter(report["thresholds"].values()))["float_bounds"]
    for artefact in judged:
        print(f"{artefact['file']}: {artefact['verdict']}")
        if artefact["precision"] == "fp32":
            builtin = (artefact["builtin"] or {}).get("tensors", {})
            assert all(m["relative"] <= bounds[group] for group, m in builtin.items()), builtin
        else:
            assert artefact["faces"]["faces"] >= MIN_REFERENCE_FACES


@pytest.mark.slow
def test_litert_files_pass_on_the_shared_photos(retinaface_litert_export, shared):
    report = check_artefacts(retinaface_litert_export[0], shared / "images")
    assert {a["variant"] for a in report["artefacts"]} == {"fp32_litert", "fp16_litert"}
    assert all(a["passed"] for a in report["artefacts"]), [a["verdict"] for a in report["artefacts"]]


# -- a file with one layer changed by 1 % ----------------------------------------------------------
def _copy_changed(source: Path, folder: Path, change) -> Path:
    """``source`` and its sidecar copied into ``folder``, ``change(path)`` applied to the copy, and the sidecar
    made to describe the changed file (as a faulty converter would have written it)."""
    target = folder / source.name
    shutil.copy(source, target)
    shutil.copy(sidecar_path(source), sidecar_path(target))
    change(target)
    meta = json.loads(sidecar_path(target).read_text())
    meta["artefact"].update(sha256=sha256_file(target), bytes=target.stat().st_size)
    sidecar_path(target).write_text(json.dumps(meta))
    return target


def _scale_middle_tflite_convolution(path: Path) -> None:
    """The convolution in the middle of the graph's execution order gets its float32 weights times 1.01."""
    from mobilekit.models.tflite_weights import TfliteGraph

    graph = TfliteGraph(path)
    convolutions = [op for name, op in zip(graph.op_names, graph.graph.operators) if name == "CONV_2D"]
    tensor = graph.stored_tensor(int(convolutions[len(convolutions) // 2].inputs[1]))
    stored = bytes(graph.model.buffers[tensor.buffer].data)
    data = path.read_bytes()
    assert data.count(stored) == 1
    scaled = (np.frombuffer(stored, np.float32) * np.float32(1.01)).astype(np.float32).tobytes()
    path.write_bytes(data.replace(stored, scaled))


@pytest.mark.slow
def test_parity_fails_a_tflite_file_with_one_layer_changed_by_1_percent(featherface_export, shared, tmp_path):
    """FeatherFace V1's fp32 TFLite (the issue's model and file kind), one middle convolution scaled by
    1.01: the float criterion fails it on two shared photos."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("crowd_624x1024.jpg", "group_768x1024.jpg"):
        (photos / name).symlink_to(shared / "images" / name)
    changed = _copy_changed(featherface_export / "featherface_v1_640_fp32.tflite", tmp_path, _scale_middle_tflite_convolution)
    (artefact,) = check_artefacts(tmp_path, photos)["artefacts"]
    print(changed.name, artefact["verdict"])
    assert artefact["file"] == changed.name and not artefact["passed"] and "of its bound" in artefact["verdict"]


@pytest.mark.slow
def test_parity_fails_on_a_tampered_onnx(retinaface_export, shared, tmp_path, capsys):
    """A 1% change to one convolution is caught by the fp32 float criterion, and the CLI exits 1."""
    from mobilekit.cli import main

    def scale_first_wide_convolution(path: Path) -> None:
        model = onnx.load(str(path))
        weight = next(init for init in model.graph.initializer if len(init.dims) == 4 and init.dims[0] >= 16)
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.01, weight.name))
        onnx.save(model, str(path))

    _copy_changed(retinaface_export[0] / "retinaface_mnet025_640.onnx", tmp_path, scale_first_wide_convolution)
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(shared / "images" / "crowd_624x1024.jpg", images)
    with pytest.raises(SystemExit) as exc:
        main(["parity", str(tmp_path), "--images", str(images)])
    assert exc.value.code == 1
    assert "parity failed" in capsys.readouterr().err
