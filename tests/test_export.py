"""mobilekit export: files, sidecars, graph checks, output names, atomic writes and clear errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from mobilekit.atomic import atomic_path
from mobilekit.config import DeployConfig
from mobilekit.converters import export_model, open_runtime, randomize_for_testing
from mobilekit.converters.export import resolve_formats
from mobilekit.converters.onnx2tf_child import WorkerError, match_outputs_by_value
from mobilekit.converters.onnx_export import ExportError, fold_batchnorms, module_path_from_node, prepare_deploy_module
from mobilekit.converters.parity import load_inputs
from mobilekit.converters.sidecars import read_sidecar, sha256_file
from mobilekit.converters.tflite_export import _describe_failure, check_xnnpack_load
from mobilekit.families import family_of
from mobilekit.image_io import list_images
from mobilekit.models import FaceDetector, create_model

OUTPUT_NAMES = ["loc", "conf", "landmarks"]
EXPECTED_FILES = [
    "retinaface_mnet025_640.onnx",
    "retinaface_mnet025_640_sim.onnx",
    "retinaface_mnet025_640_fp32.tflite",
    "retinaface_mnet025_640_fp16.tflite",
    "retinaface_mnet025_640_int8.tflite",
    "retinaface_mnet025_640_int8_full.tflite",
]


# -- the real RetinaFace export -------------------------------------------------------------------
@pytest.mark.slow
def test_export_writes_every_file_with_a_sidecar_and_nothing_partial(retinaface_export):
    export_dir, paths = retinaface_export
    assert [p.name for p in paths] == EXPECTED_FILES
    for path in paths:
        assert path.with_suffix(".json").is_file()
    leftovers = [p.name for p in export_dir.iterdir() if p.name.startswith(".") or p.suffix == ".partial"]
    assert leftovers == []


@pytest.mark.slow
def test_sidecars_describe_the_contract(retinaface_export):
    _, paths = retinaface_export
    deploy = create_model("retinaface_mnet025").deploy
    for path in paths:
        meta = read_sidecar(path)
        assert meta["artefact"]["sha256"] == sha256_file(path)
        assert meta["artefact"]["bytes"] == path.stat().st_size
        assert meta["artefact"]["export_seconds"] > 0
        assert meta["model"]["name"] == "retinaface_mnet025"
        assert meta["model"]["parameters"] == 426_608
        assert meta["model"]["random_init"] is False
        assert meta["anchors"] == deploy.anchors.to_dict()
        assert meta["deploy"] == json.loads(json.dumps(deploy.to_dict()))
        assert {"torch", "onnx", "onnx2tf", "tensorflow"} <= set(meta["versions"])
        spec = meta["input"]
        assert (spec["channel_order"], spec["value_range"]) == ("RGB", [0, 255])
        assert [o["name"] for o in meta["outputs"]] == OUTPUT_NAMES
        assert [o["shape"][1:] for o in meta["outputs"]] == [[16800, 4], [16800, 2], [16800, 10]]
        if path.suffix == ".onnx":
            assert (spec["layout"], spec["shape"], spec["dtype"]) == ("NCHW", [1, 3, 640, 640], "float32")
        else:
            expected_dtype = "uint8" if meta["artefact"]["variant"] == "int8_full" else "float32"
            assert (spec["layout"], spec["shape"], spec["dtype"]) == ("NHWC", [1, 640, 640, 3], expected_dtype)
            analysis = meta["tflite"]["analysis"]
            assert analysis["ops"].get("CONV_2D", 0) > 0
            assert isinstance(analysis["gpu_delegate_compatible"], bool)
            assert "GPU" in analysis["analyzer_report"] or "gpu" in analysis["analyzer_report"].lower()
            assert analysis["xnnpack_load"] == {"ok": True, "error": None}
            seconds = meta["tflite"]["seconds"]
            calibrated = meta["artefact"]["variant"].startswith("int8")
            assert (seconds["int8_calibration_shared"] > 0) == calibrated, seconds
    int8_calibrations = {read_sidecar(p)["tflite"]["seconds"]["int8_calibration_shared"] for p in paths if "_int8" in p.name}
    assert len(int8_calibrations) == 1  # one calibration run, shared by int8 and int8_full


def test_xnnpack_load_check_reports_a_file_that_kills_the_interpreter(tmp_path):
    """The probe runs in its own process: a file LiteRT cannot run is a recorded failure, not a crash here."""
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"TFL3" + bytes(range(256)) * 4)
    result = check_xnnpack_load(broken)
    assert result["ok"] is False and result["error"].startswith("exit status")


def test_a_file_that_fails_under_xnnpack_is_an_export_error_naming_it_and_its_policy(tmp_path):
    """What export runs on every TFLite file before publishing it: a file LiteRT's XNNPACK delegate cannot
    load is a failed check (exit status 1) naming the file, its int8 policy and the child's last line."""
    from mobilekit.converters.tflite_export import int8_policy, require_xnnpack_loads
    from mobilekit.errors import CheckFailed

    broken = tmp_path / ".m_64_int8.tflite.123.partial"
    broken.write_bytes(b"TFL3" + bytes(range(256)) * 4)
    policy = int8_policy({"requested": ["auto"], "layers": ["a"] * 64})
    with pytest.raises(CheckFailed) as failed:
        require_xnnpack_loads({"int8": broken}, {"int8": tmp_path / "m_64_int8.tflite"}, {"int8": policy})
    message = str(failed.value)
    assert message.startswith("m_64_int8.tflite (int8, --keep-float auto: 64 layer(s) kept float) fails in LiteRT with its default XNNPACK")
    assert "exit status" in message and message.endswith("nothing written")


@pytest.mark.slow
def test_onnx_files_pass_the_checker_with_batchnorm_folded(retinaface_export):
    export_dir, _ = retinaface_export
    for name in EXPECTED_FILES[:2]:
        model = onnx.load(str(export_dir / name))
        onnx.checker.check_model(model, full_check=True)
        ops = {node.op_type for node in model.graph.node}
        assert "BatchNormalization" not in ops
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        assert [o.name for o in model.graph.output] == OUTPUT_NAMES
        assert read_sidecar(export_dir / name)["onnx"]["batchnorm_nodes"] == []


@pytest.mark.slow
def test_tflite_outputs_are_read_by_name_and_match_onnx_by_name(retinaface_export, shared):
    """Every TFLite file exposes loc/conf/landmarks through its signature; fp32 values equal ONNX's
    output *of the same name* (the mapping is verified by value, not by position)."""
    export_dir, _ = retinaface_export
    deploy = create_model("retinaface_mnet025").deploy
    image = load_inputs(list_images(shared / "images")[:1], deploy, (640, 640))
    reference = open_runtime(export_dir / "retinaface_mnet025_640.onnx").run(image)
    for name in EXPECTED_FILES[2:]:
        runtime = open_runtime(export_dir / name, xnnpack=False)
        assert sorted(runtime.output_names) == sorted(OUTPUT_NAMES)
        outputs = runtime.run(image)
        assert {k: v.shape for k, v in outputs.items()} == {k: v.shape for k, v in reference.items()}
        assert all(v.dtype == np.float32 for v in outputs.values())
    fp32 = open_runtime(export_dir / "retinaface_mnet025_640_fp32.tflite", xnnpack=False).run(image)
    for key in OUTPUT_NAMES:
        assert np.abs(fp32[key] - reference[key]).max() <= 1e-4, key
    mapping = read_sidecar(export_dir / "retinaface_mnet025_640_fp32.tflite")["tflite"]["output_mapping"]
    assert sorted(mapping) == sorted(OUTPUT_NAMES)
    assert len({m["onnx2tf_output"] for m in mapping.values()}) == 3


# -- every registered model, randomly initialised ------------------------------------------------
MODELS = sorted(__import__("mobilekit.models", fromlist=["list_models"]).list_models())


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_registered_model_exports_with_random_weights(name, random_export_factory):
    export_dir = random_export_factory(name)
    files = sorted(p.name for p in export_dir.glob(f"{name}_256*") if p.suffix != ".json")
    assert files == [f"{name}_256.onnx", f"{name}_256_fp32.tflite", f"{name}_256_sim.onnx"]
    meta = read_sidecar(export_dir / f"{name}_256_fp32.tflite")
    assert meta["model"]["random_init"] is True and "RANDOMLY INITIALISED" in meta["model"]["warning"]
    assert read_sidecar(export_dir / f"{name}_256.onnx")["onnx"]["batchnorm_nodes"] == []
    deploy = create_model(name).deploy
    assert meta["anchors"] == family_of(deploy).anchors(deploy)  # ADYOLOv5-Face: its grid, not RetinaFace priors
    assert [o["meaning"] for o in meta["outputs"]] == [family_of(deploy).output_meanings[n] for n in deploy.output_names]


# -- pieces --------------------------------------------------------------------------------------
def test_prepared_module_equals_the_original_model_on_randomised_weights():
    torch.manual_seed(0)
    model = randomize_for_testing(create_model("retinaface_mnet025"), seed=3)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn.running_mean.abs().min() > 0 and not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    deploy_module = prepare_deploy_module(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deploy_module.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the original must stay untouched"
    x = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        expected = model.deploy_outputs(model(x))
        got = deploy_module(x)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, atol=2e-4, rtol=1e-4)


def test_randomize_for_testing_is_deterministic():
    a = randomize_for_testing(create_model("retinaface_mnet025"), seed=5)
    b = randomize_for_testing(create_model("retinaface_mnet025"), seed=5)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        if "running" in ka or "bn" in ka.lower():
            assert torch.equal(va, vb), ka


def test_fold_batchnorms_into_convs_or_channel_affines():
    block = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4)
    )
    randomize_for_testing(block, seed=1)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = block(x)
        assert fold_batchnorms(block) == {"into_conv": 2, "into_affine": 1}
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())


def test_module_path_from_onnx_node_name():
    assert module_path_from_node("/model/body/stage1/stage1.0/stage1.0.0/Conv") == "body.stage1.0.0"
    assert module_path_from_node("/model/ssh1/conv3X3/conv3X3.0/Conv") == "ssh1.conv3X3.0"
    assert module_path_from_node("/model/Sub") == ""


def test_output_mapping_is_found_by_value_not_position():
    rng = np.random.default_rng(0)
    reference = {"loc": rng.normal(size=(1, 10, 4)), "conf": rng.uniform(size=(1, 10, 2)), "landmarks": rng.normal(size=(1, 10, 4))}
    # onnx2tf-style names in a shuffled order; two outputs even share a shape.
    candidates = {"output_0": reference["landmarks"] + 1e-6, "output_1": reference["loc"], "output_2": reference["conf"]}
    mapping = match_outputs_by_value(reference, candidates)
    assert {k: v[0] for k, v in mapping.items()} == {"loc": "output_1", "conf": "output_2", "landmarks": "output_0"}
    with pytest.raises(WorkerError, match="do not reproduce"):
        match_outputs_by_value(reference, {"output_0": reference["loc"] + 1, "output_1": reference["conf"], "output_2": reference["landmarks"]})


def test_converter_failure_names_the_onnx_node_and_module():
    log = "ERROR: The trace log is below.\nERROR: onnx_op_name: /model/ssh1/conv3X3/conv3X3.0/Conv\nValueError: boom\n"
    message = _describe_failure(None, log, "m.onnx")
    assert "/model/ssh1/conv3X3/conv3X3.0/Conv" in message and "ssh1.conv3X3.0" in message
    message = _describe_failure({"ok": False, "error": "onnx2tf has no converter for ONNX op Foo", "node": "/model/head/Foo", "op_type": "Foo"}, "", "m.onnx")
    assert "op Foo" in message and "'head'" in message


def test_atomic_output_leaves_no_file_when_interrupted(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a model")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_resolve_formats():
    assert resolve_formats() == ("onnx", "onnx_sim", "fp32", "fp16")
    assert resolve_formats(onnx=True) == ("onnx",)
    assert resolve_formats(tflite=True) == ("onnx", "onnx_sim", "fp32", "fp16")
    assert resolve_formats(int8=True) == ("onnx", "onnx_sim", "fp32", "fp16", "int8", "int8_full")


class _Unexportable(FaceDetector):
    """A detector whose head uses an op the ONNX exporter does not know (aten::digamma)."""

    def __init__(self) -> None:
        super().__init__(DeployConfig(name="unexportable"))
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.head = _Digamma()

    def first_conv(self) -> nn.Conv2d:
        return self.stem

    def forward_normalized(self, x):
        y = self.head(self.stem(x)).flatten(2).transpose(1, 2)
        return y[..., :4], y[..., :2], torch.cat([y, y, y[..., :2]], -1)


class _Digamma(nn.Module):
    def forward(self, x):
        return torch.digamma(x.abs() + 1)


def test_unexportable_op_is_named_with_its_module(tmp_path):
    with pytest.raises(ExportError, match=r"aten::digamma.*'head'"):
        export_model(_Unexportable().eval(), 64, tmp_path, formats=("onnx",))
    assert not any(p.suffix in (".onnx", ".json") for p in tmp_path.iterdir())


# -- CLI: bad input fails clearly (exit 2, one line) ----------------------------------------------
def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from mobilekit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err


@pytest.mark.slow
def test_cli_rejects_bad_inputs(tmp_path, capsys, shared):
    weights = str(shared / "weights/retinaface_mnet025_widerface.pth")
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = {
        "multiples of 32": ["export", "retinaface_mnet025", "--weights", weights, "--imgsz", "600", "--onnx", "--out", str(tmp_path / "o")],
        "calibration folder not found": ["export", "retinaface_mnet025", "--weights", weights, "--int8", "--calib-images", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
        "contains no images": ["export", "retinaface_mnet025", "--weights", weights, "--int8", "--calib-images", str(empty), "--out", str(tmp_path / "o")],
        "needs --calib-images": ["export", "retinaface_mnet025", "--weights", weights, "--int8", "--out", str(tmp_path / "o")],
        "not writable": ["export", "retinaface_mnet025", "--weights", weights, "--onnx", "--out", str(a_file / "sub")],
        "--random-init": ["export", "retinaface_mnet025", "--onnx", "--out", str(tmp_path / "o")],
        "unknown model": ["export", "no_such_model", "--random-init", "--out", str(tmp_path / "o")],
        "weights file not found": ["export", "retinaface_mnet025", "--weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o")],
        "opset": ["export", "retinaface_mnet025", "--weights", weights, "--onnx", "--opset", "13", "--out", str(tmp_path / "o")],
        "--keep-float is only used with --int8": ["export", "retinaface_mnet025", "--weights", weights, "--tflite", "--keep-float", "heads", "--out", str(tmp_path / "o")],
        "--calib-ranges is only used with --int8": ["export", "retinaface_mnet025", "--weights", weights, "--tflite", "--calib-ranges", "minmax", "--out", str(tmp_path / "o")],
        "--calib-ranges 'median' is not one of mean, minmax": [
            "export", "retinaface_mnet025", "--weights", weights, "--int8", "--calib-images", str(shared / "images"), "--calib-ranges", "median", "--out", str(tmp_path / "o"),
        ],
    }
    for expected, argv in cases.items():
        code, err = _cli(argv, capsys)
        assert code == 2, (expected, err)
        assert expected in err, (expected, err)
        assert "Traceback" not in err
    assert not list((tmp_path / "o").glob("*.onnx")) if (tmp_path / "o").exists() else True


def test_cli_export_random_init_onnx_only(tmp_path, capsys):
    from mobilekit.cli import main

    main(["export", "retinaface_mnet025", "--random-init", "--seed", "2", "--imgsz", "96,128", "--onnx", "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["retinaface_mnet025_96x128.json", "retinaface_mnet025_96x128.onnx"]
    meta = read_sidecar(tmp_path / "retinaface_mnet025_96x128.onnx")
    assert meta["model"]["random_init"] is True and meta["model"]["random_seed"] == 2
    assert meta["input"]["shape"] == [1, 3, 96, 128]
    assert [o["shape"] for o in meta["outputs"]] == [[1, 504, 4], [1, 504, 2], [1, 504, 10]]


def test_dynamic_onnx_runs_at_other_sizes(tmp_path):
    from mobilekit.converters import TorchRuntime, build_source_model, source_metadata

    model = build_source_model("retinaface_mnet025", None, random_seed=4)
    (path,) = export_model(model, (96, 128), tmp_path, formats=("onnx",), dynamic=True, source=source_metadata(None, 4))
    assert read_sidecar(path)["input"]["shape"] == [1, 3, "height", "width"]
    image = np.random.default_rng(0).integers(0, 256, size=(1, 64, 160, 3), dtype=np.uint8)
    got, expected = open_runtime(path).run(image), TorchRuntime(model).run(image)
    for name in OUTPUT_NAMES:
        assert got[name].shape == expected[name].shape
        assert np.abs(got[name] - expected[name]).max() <= 1e-4, name


def test_keep_float_values_parse_and_bad_combinations_are_named():
    from mobilekit.converters.selective_int8 import parse_keep_float
    from mobilekit.errors import MobilekitError

    assert parse_keep_float("auto") == ("auto",)
    assert parse_keep_float("none") == ()
    assert parse_keep_float("heads, FULLY_CONNECTED,heads") == ("heads", "FULLY_CONNECTED")
    assert parse_keep_float("speed") == ("speed",)
    for bad in ("auto,heads", "none,CONV_2D", "speed,heads", " , "):
        with pytest.raises(MobilekitError, match="--keep-float"):
            parse_keep_float(bad)


@pytest.mark.slow
def test_keep_float_names_resolve_on_a_real_graph(retinaface_export):
    """``heads`` are the last convolutions before the outputs (3 heads x 3 levels for RetinaFace), an op type
    takes every op of it, and a name that matches nothing is refused, naming it."""
    from mobilekit.converters.selective_int8 import KeepFloatError, head_layers, resolve_layers

    model = (retinaface_export[0] / "retinaface_mnet025_640_fp32.tflite").read_bytes()
    heads = head_layers(model)
    assert len(heads) == 9
    assert resolve_layers(model, ["heads"]) == heads
    convs = resolve_layers(model, ["CONV_2D"])
    assert set(heads) <= set(convs) and len(convs) > len(heads)
    assert resolve_layers(model, [heads[0], "heads"]) == [heads[0]] + [h for h in heads if h != heads[0]]
    with pytest.raises(KeepFloatError, match="'backbone.nope' matches no layer"):
        resolve_layers(model, ["backbone.nope"])


@pytest.mark.slow
def test_stem_is_the_graph_prefix_down_to_stride_4(retinaface_export):
    """``stem``: the ops from the input in execution order while their images are at stride <= 4; the
    next op's image is coarser (RetinaFace's first stride-8 depthwise convolution)."""
    from ai_edge_litert.interpreter import Interpreter

    from mobilekit.converters.selective_int8 import resolve_layers

    model = (retinaface_export[0] / "retinaface_mnet025_640_fp32.tflite").read_bytes()
    interpreter = Interpreter(model_content=model)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    outputs = [tensors[int(op["outputs"][0])] for op in interpreter._get_ops_details()]
    stem = resolve_layers(model, ["stem"])
    assert stem == [t["name"] for t in outputs[: len(stem)]]
    heights = [int(t["shape"][1]) for t in outputs[: len(stem) + 1] if len(t["shape"]) == 4]
    assert min(heights[:-1]) == 640 // 4 and heights[-1] == 640 // 8
    assert "CONV_2D" in {op["op_name"] for op in interpreter._get_ops_details()[: len(stem)]}


@pytest.mark.slow
def test_keep_float_auto_measures_the_detections_on_the_calibration_photos(shared, calibration_half, tmp_path):
    """``auto`` ranks layers with TF's quantisation debugger, then quantises with 0, 1, 2, 4 ... of the worst
    in float, on top of the model's declared float layers (RetinaFace: its stem), until the int8 faces on
    the calibration photos meet the model's target; the trials are recorded and the chosen layers are the
    ones left in float in the file."""
    from mobilekit.converters import build_source_model, source_metadata
    from mobilekit.converters.sidecars import read_sidecar

    weights = shared / "weights/retinaface_mnet025_widerface.pth"
    model = build_source_model("retinaface_mnet025", weights)
    (path,) = export_model(model, 320, tmp_path, formats=("int8",), calib_images=calibration_half, source=source_metadata(weights, None), keep_float=("auto",))
    kept = read_sidecar(path)["tflite"]["keep_float"]
    trials = kept["trials"]
    declared = kept["declared"]
    assert kept["requested"] == ["auto"] and trials and kept["met"] == trials[-1]["met"]
    assert declared and kept["layers"][: len(declared)] == declared  # the stem stays float whatever auto chooses
    assert [t["float_layers"] - len(declared) for t in trials] == [0, 1, 2, 4, 8, 16, 32, 64][: len(trials)]
    assert all(not t["met"] for t in trials[:-1])  # the fewest layers that meet the target
    assert len(kept["layers"]) == trials[-1]["float_layers"]
    for trial in trials:
        assert 0.0 <= trial["recall"] <= 1.0 and 0.0 <= trial["precision"] <= 1.0


def test_speed_policy_takes_the_fastest_prefix_that_keeps_the_faces() -> None:
    from mobilekit.converters.selective_int8 import speed_layers

    candidates = {0: [], 4: ["a", "b", "c", "d"], 11: list("abcdefghijk")}
    tried: list[int] = []

    def meets(layers: list[str]) -> bool:
        tried.append(len(layers))
        return len(layers) != 11  # the fastest file loses faces

    assert speed_layers(candidates, {0: 13.1, 4: 11.0, 11: 10.3}, meets) == 4 and tried == [11, 4]
    assert speed_layers(candidates, {0: 9.0, 4: 11.0, 11: 10.3}, meets) == 0
    assert speed_layers(candidates, {0: 13.0, 4: 12.0, 11: 10.3}, lambda layers: False) == 0


@pytest.mark.slow
def test_keep_float_speed_times_float_prefixes_and_keeps_the_faces(shared, calibration_half, tmp_path):
    """``speed`` times every float prefix of the int8 graph here (1 thread, XNNPACK, interleaved) and keeps
    the fastest one whose detections meet the target: the sidecar lists the timings, and the layers kept
    float are the first ops of the graph, with the model's declared float layers."""
    from mobilekit.converters import build_source_model, source_metadata
    from mobilekit.converters.selective_int8 import SPEED_PREFIXES
    from mobilekit.converters.sidecars import read_sidecar

    weights = shared / "weights/retinaface_mnet025_widerface.pth"
    model = build_source_model("retinaface_mnet025", weights)
    (path,) = export_model(model, 320, tmp_path, formats=("int8",), calib_images=calibration_half, source=source_metadata(weights, None), keep_float=("speed",))
    kept = read_sidecar(path)["tflite"]["keep_float"]
    latency = {int(k): v for k, v in kept["latency_ms_1_thread"].items()}
    assert sorted(latency) == list(SPEED_PREFIXES) and all(ms > 0 for ms in latency.values())
    assert kept["met"] and kept["prefix"] in latency and kept["declared"] and set(kept["declared"]) <= set(kept["layers"])
    faster = [c for c, ms in latency.items() if ms < latency[kept["prefix"]]]
    assert len(kept["trials"]) == len(faster) + 1 and all(not t["met"] for t in kept["trials"][:-1])


def _graph_with_input_sub(tmp_path, mean_shape=(1, 3, 1, 1), constant_node=False):
    from onnx import TensorProto, helper, numpy_helper

    mean = numpy_helper.from_array(np.arange(np.prod(mean_shape), dtype=np.float32).reshape(mean_shape) + 100, "mean")
    weight = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "weight")
    nodes = [helper.make_node("Sub", ["images", "mean"], ["centred"]), helper.make_node("Conv", ["centred", "weight"], ["out"])]
    if constant_node:  # as torch.onnx.export writes it
        nodes.insert(0, helper.make_node("Constant", [], ["mean"], value=mean))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 4, 4])],
        [weight] if constant_node else [mean, weight],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("constant_node", [False, True])
def test_input_mean_is_split_off_for_onnx2tf(tmp_path, constant_node):
    from mobilekit.converters.onnx2tf_child import split_input_mean

    path = _graph_with_input_sub(tmp_path, constant_node=constant_node)
    mean = split_input_mean(path)
    np.testing.assert_array_equal(mean, [100, 101, 102])
    graph = onnx.load(str(path)).graph
    assert [(n.op_type, list(n.input)) for n in graph.node] == [("Conv", ["images", "weight"])]
    # Not a per-channel mean (a full-image constant): the file is left as it was.
    other = _graph_with_input_sub(tmp_path, mean_shape=(1, 3, 4, 4))
    before = other.read_bytes()
    assert split_input_mean(other) is None and other.read_bytes() == before


@pytest.mark.slow
def test_tflite_subtracts_the_input_mean_row_by_row(retinaface_export):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    export_dir, _ = retinaface_export
    path = export_dir / "retinaface_mnet025_640_fp32.tflite"
    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    ops = interpreter._get_ops_details()
    shapes = {t["index"]: list(t["shape"]) for t in interpreter.get_tensor_details()}
    assert [op["op_name"] for op in ops[:4]] == ["RESHAPE", "SUB", "RESHAPE", "PAD"]
    assert shapes[ops[1]["outputs"][0]] == [1, 640, 640 * 3]
    assert any("row by row" in note for note in read_sidecar(path)["tflite"]["converter_notes"])
