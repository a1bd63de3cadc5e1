"""FeatherFace V2: size, outputs matching V1/RetinaFace priors, training and eval behaviour, loading,
preprocessing folding, and detection through the shared decode path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mobilekit.checkpoint import load_backbone, read_state_dict
from mobilekit.families.retinaface.priors import num_priors
from mobilekit.image_io import read_image
from mobilekit.inference import detect_image
from mobilekit.models import create_model
from mobilekit.models.featherface_v2 import FeatherFaceV2
from mobilekit.models.layers import SSH
from mobilekit.profiling import cost_breakdown, count_params

V2_PARAMS = 259_480




@pytest.fixture(scope="module")
def model() -> FeatherFaceV2:
    torch.manual_seed(0)
    return create_model("featherface_v2").eval()


def test_exact_parameter_count_is_within_two_percent_of_the_256k_plan(model):
    assert count_params(model) == V2_PARAMS
    assert abs(V2_PARAMS - 256_000) / 256_000 <= 0.02
    rows = {r.name: r.params for r in cost_breakdown(model, (64, 64))}
    assert rows["backbone (MobileNetV1-0.25)"] == 213_072
    assert rows["total"] == V2_PARAMS


def test_outputs_have_v1_layout_on_retinaface_priors(model):
    x = torch.rand(2, 3, 96, 160) * 255
    with torch.no_grad():
        loc, conf, landmarks = model(x)
        deployed = model.deploy_outputs((loc, conf, landmarks))
    n = num_priors(model.deploy.anchors, (96, 160))
    assert loc.shape == (2, n, 4) and conf.shape == (2, n, 2) and landmarks.shape == (2, n, 10)
    assert model.deploy.name == "featherface_v2" and model.deploy.decoder == "retinaface"
    assert model.deploy.output_names == ("loc", "conf", "landmarks")
    torch.testing.assert_close(deployed[1].sum(-1), torch.ones(2, n))  # softmax applied on export
    torch.testing.assert_close(deployed[1], torch.softmax(conf, dim=-1))


def test_heads_are_shared_by_the_three_levels(model):
    heads = [model.ClassHead, model.BboxHead, model.LandmarkHead]
    assert [h.conv1x1.out_channels for h in heads] == [4, 8, 20]  # 2 anchors per location
    assert len(model.ssh) == 3 and all(isinstance(s, SSH) for s in model.ssh)
    assert all(m.groups == 4 for s in model.ssh for m in s.modules() if isinstance(m, torch.nn.Conv2d))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.cbam.modules())


def test_trains_at_batch_size_one():
    torch.manual_seed(1)
    net = create_model("featherface_v2").train()
    loc, conf, landmarks = net(torch.rand(1, 3, 64, 64) * 255)
    (loc.square().mean() + conf.square().mean() + landmarks.square().mean()).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_eval_is_identical_at_batch_one_and_eight(model):
    x = torch.rand(8, 3, 64, 96, generator=torch.Generator().manual_seed(2)) * 255
    with torch.no_grad():
        batched = model(x)
        single = model(x[3:4])
    for a, b in zip(batched, single):
        torch.testing.assert_close(a[3:4], b, atol=1e-5, rtol=0)


def test_loads_the_imagenet_backbone(shared):
    net = create_model("featherface_v2")
    report = load_backbone(net, shared / "weights" / "mobilenetv1_025_imagenet.tar")
    assert report.ok
    state = read_state_dict(shared / "weights" / "mobilenetv1_025_imagenet.tar")
    torch.testing.assert_close(net.body.stage3[1][3].weight, state["stage3.1.3.weight"], atol=0, rtol=0)


def test_folding_input_preprocessing_keeps_the_outputs():
    torch.manual_seed(3)
    net = create_model("featherface_v2").eval()
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        before = net(x)
        assert net.first_conv() is net.body.stage1[0][0]
        net.fold_input_preprocessing()
        after = net(x)
    assert net.channel_permutation is None
    for a, b in zip(before, after):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_detect_image_runs_through_the_shared_decode(model, shared_images):
    image = read_image(shared_images[0])
    dets = detect_image(model, image, imgsz=(160, 160))
    assert dets.boxes.shape[1:] == (4,) and dets.landmarks.shape[1:] == (10,) and len(dets.scores) == len(dets)
    assert np.all(np.diff(dets.scores) <= 0)


@pytest.mark.slow
def test_int8_keeps_the_channel_attention_float_and_runs_under_xnnpack(calibration_half, shared, tmp_path):
    """The declared keep-float layers (CBAM's FULLY_CONNECTED) make the int8 file load in LiteRT's default
    XNNPACK delegate, where the fully int8 graph crashes (double free); parity runs it there (random weights)."""
    from mobilekit.converters import build_source_model, export_model, source_metadata
    from mobilekit.converters.parity import check_artefacts
    from mobilekit.converters.sidecars import read_sidecar

    model = build_source_model("featherface_v2", None, random_seed=0)
    (path,) = export_model(model, 256, tmp_path, formats=("int8",), calib_images=calibration_half, source=source_metadata(None, 0))
    meta = read_sidecar(path)
    kept = meta["tflite"]["keep_float"]
    assert kept["requested"] == ["FULLY_CONNECTED"] and len(kept["layers"]) == 12
    assert meta["tflite"]["analysis"]["xnnpack_load"] == {"ok": True, "error": None}
    assert meta["calibration"]["files"] == sorted(p.name for p in calibration_half.iterdir())
    report = check_artefacts(tmp_path, shared / "images")
    (int8,) = report["artefacts"]
    assert int8["error"] is None and int8["kernels"].startswith("XNNPACK"), int8
    assert int8["faces"]["images"] == 3 and int8["calibration_faces"]["images"] == 3
    assert min(m["cosine"] for m in int8["tensors"].values()) > 0.99, int8["tensors"]
