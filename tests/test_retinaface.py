"""RetinaFace-MobileNet-0.25: architecture, checkpoints, reproduction of the reference."""

from __future__ import annotations

import pytest
import torch

from mobilekit.checkpoint import CheckpointError, atomic_save, load_backbone, load_weights
from mobilekit.inference import load_model
from mobilekit.models import create_model
from mobilekit.profiling import cost_breakdown
from tests.reference_checks import assert_folding_is_exact, assert_reproduces_detections, assert_reproduces_raw_outputs


@pytest.fixture(scope="module")
def retinaface(shared):
    return load_model("retinaface_mnet025", shared / "weights" / "retinaface_mnet025_widerface.pth")


def test_parameter_count_is_exact():
    rows = cost_breakdown(create_model("retinaface_mnet025"), (640, 640))
    assert rows[-1].params == 426_608
    assert sum(r.params for r in rows[:-1]) == 426_608


def test_reproduces_reference_raw_outputs(retinaface, shared):
    assert_reproduces_raw_outputs(retinaface, shared, "retinaface_mnet025")


def test_reproduces_reference_detections(retinaface, shared):
    assert_reproduces_detections(retinaface, shared, "retinaface_mnet025")


def test_module_prefixed_checkpoint_loads(shared, tmp_path):
    state = torch.load(shared / "weights" / "retinaface_mnet025_widerface.pth", map_location="cpu", weights_only=True)
    atomic_save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pth")
    model = create_model("retinaface_mnet025")
    assert load_weights(model, tmp_path / "ddp.pth").ok


def test_wrong_architecture_checkpoint_lists_the_differences(shared):
    with pytest.raises(CheckpointError) as err:
        load_weights(create_model("retinaface_mnet025"), shared / "weights" / "featherface_v1_widerface.pth")
    message = str(err.value)
    assert "missing from the file" in message and "unexpected in the file" in message and "shape mismatch" in message
    assert "featherface_v1_widerface.pth" in message


def test_truncated_and_foreign_files_fail_clearly(shared, tmp_path):
    data = (shared / "weights" / "retinaface_mnet025_widerface.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.pth").write_text("not a checkpoint")
    for name in ("cut.pth", "text.pth", "absent.pth"):
        with pytest.raises(CheckpointError, match=name):
            load_weights(create_model("retinaface_mnet025"), tmp_path / name)


def test_checkpoint_with_code_is_refused(tmp_path):
    torch.save({"state_dict": {}, "payload": object()}, tmp_path / "pickled.pth")  # not weights-only loadable
    with pytest.raises(CheckpointError, match="pickled.pth"):
        load_weights(create_model("retinaface_mnet025"), tmp_path / "pickled.pth")


def test_imagenet_backbone_loads_strictly(shared):
    model = create_model("retinaface_mnet025")
    report = load_backbone(model, shared / "weights" / "mobilenetv1_025_imagenet.tar")
    assert report.ok and len(report.loaded) == len(model.body.state_dict())
    reference = torch.load(shared / "weights" / "mobilenetv1_025_imagenet.tar", map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.body.stage3[1][3].weight, reference["module.stage3.1.3.weight"])


def test_eval_batch_independent_and_train_step_at_batch_one():
    torch.manual_seed(0)
    model = create_model("retinaface_mnet025")
    x = torch.rand(8, 3, 64, 96) * 255
    model.train()
    loc, conf, lms = model(x[:1])
    (loc.square().mean() + conf.square().mean() + lms.square().mean()).backward()
    model.eval()
    with torch.no_grad():
        batched = model(x)
        single = model(x[3:4])
    for a, b in zip(batched, single):
        assert torch.allclose(a[3:4], b, atol=1e-5)


def test_folding_preprocessing_is_exact(retinaface):
    assert_folding_is_exact(retinaface)
