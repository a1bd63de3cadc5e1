"""The CPU-latency studies (studies/, not shipped): per-op profile (TFLite prefixes, ONNX Runtime profiler) and the
int8 policy comparison. They measure; these tests check what they measure is the model, never a speed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from studies import int8_calibration, int8_policies, op_profile

pytestmark = pytest.mark.slow


def _tflite(export_dir):
    return next(export_dir.glob("*_fp32.tflite"))


def test_a_cut_model_outputs_the_full_models_intermediate_tensors(random_export_factory):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model = _tflite(random_export_factory("retinaface_mnet025")).read_bytes()
    builtin = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    full = Interpreter(model_content=model, experimental_op_resolver_type=builtin, experimental_preserve_all_tensors=True)
    full.allocate_tensors()
    detail = full.get_input_details()[0]
    x = np.random.default_rng(0).uniform(0, 255, detail["shape"]).astype(np.float32)
    full.set_tensor(detail["index"], x)
    full.invoke()
    ops = full._get_ops_details()
    for count in (3, len(ops) // 2, len(ops) - 1):
        cut = Interpreter(model_content=op_profile.truncated_model(model, count), experimental_op_resolver_type=builtin)
        cut.allocate_tensors()
        cut.set_tensor(cut.get_input_details()[0]["index"], x)
        cut.invoke()
        outputs = cut.get_output_details()
        still_needed = {int(t) for op in ops[count:] for t in op["inputs"]} | {d["index"] for d in full.get_output_details()}
        assert outputs and all(d["index"] in still_needed for d in outputs)  # what later ops or the caller still read
        assert ops[count - 1]["outputs"][0] in [d["index"] for d in outputs] or count == len(ops) - 1
        for d in outputs:
            np.testing.assert_array_equal(cut.get_tensor(d["index"]), full.get_tensor(d["index"]))


def test_profile_times_every_op_and_groups_both_runtimes_alike(random_export_factory, tmp_path):
    export_dir = random_export_factory("retinaface_mnet025")
    tflite, onnx = _tflite(export_dir), next(export_dir.glob("*_sim.onnx"))
    assert op_profile.main([str(tflite), str(onnx), "--threads", "1", "--rounds", "1", "--calls", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / f"op_profile_{tflite.stem}.json").read_text())
    assert (tmp_path / f"op_profile_{tflite.stem}.md").read_text() == op_profile.markdown(result)
    row = result["threads"]["1"]
    ops = row["tflite_ops"]
    assert [op["index"] for op in ops] == list(range(len(ops)))
    assert all(op["ms"] == 0.0 for op in ops if op["op_type"] == "PAD")  # timed with the conv that reads it
    assert row["tflite_total_ms"] > 0 and row["onnxruntime_session_ms"] > 0
    tflite_groups, ort_groups = set(row["groups"]["tflite"]), set(row["groups"]["onnxruntime"])
    convs = {g for g in tflite_groups if g.startswith(("conv", "depthwise"))}
    assert {"conv 3x3 @ 128px", "depthwise 3x3 @ 128px", "conv 1x1 @ 16px"} <= convs <= ort_groups
    assert "activation @ 128px" in tflite_groups  # LeakyReLU: its own op in TFLite, fused into ORT's conv
    markdown = op_profile.markdown(result)
    assert "| conv 3x3 @ 128px |" in markdown and "TFLite - ORT" in markdown


def test_profile_by_stage_separates_the_deformable_index_arithmetic(random_export_factory, tmp_path):
    export_dir = random_export_factory("featherface_v1")
    ops = op_profile.tflite_ops(_tflite(export_dir).read_bytes(), by_stage=True)
    stages = {op.op_type: op.group for op in ops}
    assert stages["GATHER"] == "gather" and stages["FLOOR"] == "index arithmetic" and stages["CAST"] == "index arithmetic"
    assert stages["CONV_2D"] == "rest (XNNPACK)"
    assert len(op_profile.cut_points(ops)) < len(ops) / 4  # one timed prefix per run of a stage


def test_int8_policy_table_reports_what_parity_reports(retinaface_export, retinaface_parity, shared):
    export_dir, _ = retinaface_export
    result = int8_policies.run({"declared": export_dir}, shared / "weights/retinaface_mnet025_widerface.pth", shared / "images", [1], rounds=1, calls=1)
    assert set(result["latency_ms"]["1"]) == {"onnxruntime", "fp32", "int8 (declared)"}
    faces = result["faces_held_out"]["int8 (declared)"]
    (reported,) = [a for a in retinaface_parity["report"]["artefacts"] if a["variant"] == "int8"]
    assert (faces["found"], faces["faces"]) == (reported["faces"]["found"], reported["faces"]["faces"])
    assert faces["images"] == 3  # judged on the half of the photos the calibration did not see
    assert "| int8 (declared) |" in int8_policies.markdown(result)


def test_int8_calibration_judges_like_parity(retinaface_parity, shared):
    """The calibration benchmark's int8 file, calibrated on the same half of the photos with the default
    ranges and the model's declared float layers, finds the faces parity counts for the exported int8
    file; the fully int8 case keeps no op float."""
    from mobilekit.models import create_model

    declared = ",".join(create_model("retinaface_mnet025").deploy.int8_keep_float)
    result = int8_calibration.run(
        "retinaface_mnet025", shared / "weights/retinaface_mnet025_widerface.pth", shared / "images", 640,
        ["mean", "minmax"], ["none", declared], [1], splits=[(0, 2, 4)], rounds=1,
    )  # fmt: skip
    (split,) = result["splits"]
    assert split["calibration"] == sorted(p.name for p in (shared / "images").glob("*.jpg"))[::2]
    (reported,) = [a for a in retinaface_parity["report"]["artefacts"] if a["variant"] == "int8"]
    benchmark = split["cases"][f"mean / {declared}"]
    assert (benchmark["found"], benchmark["faces"]) == (reported["faces"]["found"], reported["faces"]["faces"])
    assert split["cases"]["mean / none"]["float_layers"] == 0 < benchmark["float_layers"]
    assert set(result["latency_ms"]["1"]) == {"fp32"} | {f"int8 {c}" for c in split["cases"]}
    assert f"| mean / {declared} |" in int8_calibration.markdown(result)
