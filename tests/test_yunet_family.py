"""YuNet as a family (``mobilekit.families.yunet.family``): registration, the shipped authors' weights that
``yunet_n`` / ``yunet_s`` stand for, ``anchors.json``'s points, the end-to-end decode, the training criterion,
and ``mobilekit predict`` / ``eval`` with ``--model yunet_n`` at 320 and 640 (the slow conversions, parity,
packaging and training are in ``tests/test_yunet_export.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mobilekit.models import create_model, released_weights
from mobilekit.models.yunet import YuNet, load_authors_weights

from mobilekit.checkpoint import read_state_dict
from mobilekit.cli import main
from mobilekit.detections import PostprocessConfig
from mobilekit.families import (
    FAMILIES,
    build_criterion,
    decode_outputs,
    deploy_from_dict,
    family_of,
)
from mobilekit.families.yunet.family import YuNetFamily
from mobilekit.families.yunet.points import PointConfig, grid_points
from mobilekit.image_io import read_image, resize_to_input, to_nchw
from mobilekit.inference import detect_image, load_model, run_model
from mobilekit.package_data import SHIPPED, YUNET_LICENCE, YUNET_WEIGHTS, shipped_path
from tools.make_yunet_weights import shipped_state

PHOTO = "crowd_624x1024.jpg"


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from mobilekit.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("yunet") / "synth", 8, seed=5, imgsz=320, val_fraction=0.5)


def test_yunet_is_a_registered_family_and_its_deploy_config_round_trips() -> None:
    deploy = create_model("yunet_n").deploy
    family = family_of(deploy)
    assert isinstance(family, YuNetFamily) and FAMILIES["yunet"] is family
    assert family.anchors_of(deploy) == PointConfig() == family.default_anchors()
    assert deploy_from_dict(json.loads(json.dumps(deploy.to_dict()))) == deploy
    assert set(family.output_meanings) == set(deploy.output_names) == {"cls", "obj", "bbox", "kps"}
    assert family.score_output in deploy.output_names and family.end_to_end
    columns = {name: family.output_columns(name, deploy) for name in deploy.output_names}
    assert [len(columns[n]) for n in deploy.output_names] == [1, 1, 4, 10]
    np.testing.assert_array_equal(family.label_keypoint_map(deploy), np.eye(5))


@pytest.mark.parametrize("variant", ["n", "s"])
def test_shipped_weights_are_the_authors_tensors_and_the_models_default(variant, shared) -> None:
    name = f"yunet_{variant}"
    assert YUNET_WEIGHTS[variant] in SHIPPED and YUNET_LICENCE in SHIPPED
    assert "Apache License" in shipped_path(YUNET_LICENCE).read_text()
    shipped = read_state_dict(released_weights(name))
    expected = shipped_state(shared / "weights" / f"{name}.pth", variant)
    assert list(shipped) == list(expected)
    assert all(shipped[k].dtype == expected[k].dtype and torch.equal(shipped[k], expected[k]) for k in expected)
    assert all(v.dtype in (torch.float32, torch.int64) for v in shipped.values())
    assert released_weights(name).stat().st_size < 400_000
    # create_model builds the network randomly initialised; every command given no weights uses the released ones
    authors = load_authors_weights(YuNet(variant), shared / "weights" / f"{name}.pth")
    state = load_model(name).state_dict()
    assert all(torch.equal(state[k], v) for k, v in authors.state_dict().items())
    assert not torch.equal(create_model(name).state_dict()["backbone.model0.conv1.weight"], state["backbone.model0.conv1.weight"])
    assert released_weights("retinaface_mnet025") is None


def test_anchors_document_decodes_as_the_family_does(shared) -> None:
    """The app's generic anchors (normalised cx, cy, w, h of every point) with ``cx + dx * w`` etc. give the
    family's decode."""
    model = load_model("yunet_n")
    family, deploy, size = family_of(model.deploy), model.deploy, (320, 320)
    document = family.anchors_document(deploy, size)
    anchors = np.asarray(document["anchors"], dtype=np.float64)
    assert document["layout"] == "cx,cy,w,h" and document["normalized"] and document["count"] == len(anchors) == 2100
    np.testing.assert_allclose(anchors * [320, 320, 320, 320], grid_points(deploy.anchors, size), atol=1e-4)
    image = resize_to_input(read_image(shared / "images" / PHOTO), size, deploy.resize)[0]
    outputs = {k: v[0].numpy().astype(np.float64) for k, v in run_model(model, to_nchw(image)).items()}
    faces = decode_outputs(deploy, outputs, size, PostprocessConfig(conf_threshold=0.5, nms_iou=deploy.nms_iou, nms_offset=0.0)).numpy()
    assert len(faces) >= 3
    scores = np.sqrt(outputs["cls"][:, 0] * outputs["obj"][:, 0])
    for box, score in zip(faces.boxes, faces.scores):
        row = int(np.argmin(np.abs(scores - score)))
        a, (dx, dy, dw, dh) = anchors[row], outputs["bbox"][row]
        cx, cy, w, h = a[0] + dx * a[2], a[1] + dy * a[3], np.exp(dw) * a[2], np.exp(dh) * a[3]
        np.testing.assert_allclose([(cx - w / 2) * 320, (cy - h / 2) * 320, (cx + w / 2) * 320, (cy + h / 2) * 320], box, atol=1e-3)


@pytest.mark.slow
def test_end_to_end_decode_in_tensorflow_equals_the_familys(shared) -> None:
    tf = pytest.importorskip("tensorflow")
    model = load_model("yunet_n")
    family, deploy, size = family_of(model.deploy), model.deploy, (320, 320)
    image = resize_to_input(read_image(shared / "images" / PHOTO), size, deploy.resize)[0]
    outputs = {k: v.numpy() for k, v in run_model(model, to_nchw(image)).items()}
    constants = family.end_to_end_constants(deploy, size)
    boxes, scores, points = (t.numpy() for t in family.end_to_end_decode(tf, {k: tf.constant(v) for k, v in outputs.items()}, constants, size))
    faces = decode_outputs(deploy, {k: v[0] for k, v in outputs.items()}, size, PostprocessConfig(conf_threshold=0.5, nms_iou=1.0, nms_offset=0.0, max_detections=10_000)).numpy()
    keep = np.flatnonzero(scores > 0.5)
    order = keep[np.argsort(-scores[keep], kind="stable")]
    assert len(order) == len(faces) > 0
    np.testing.assert_allclose(scores[order], faces.scores, atol=1e-6)
    np.testing.assert_allclose(boxes[order], faces.boxes, atol=1e-3)
    np.testing.assert_allclose(points[order], faces.landmarks, atol=1e-3)


def test_criterion_is_yunets_loss_and_learns_from_a_batch(synth) -> None:
    from mobilekit.data.dataset import FaceDataset, detection_collate
    from mobilekit.families.yunet.loss import YuNetLoss

    model = load_model("yunet_n").train()
    criterion = build_criterion(model, (320, 320))
    assert isinstance(criterion, YuNetLoss) and bool(criterion.coordinate_mask.all())
    family = family_of(model.deploy)
    data = FaceDataset(synth, "train", 320, augment=False, mode=family.augmentation, keypoint_map=family.label_keypoint_map(model.deploy))
    images, targets, _ = detection_collate([data[0], data[1]])
    total, parts = criterion(model(images.float()), targets)
    assert torch.isfinite(total) and set(parts) == {"box", "cls", "obj", "landmarks"}
    total.backward()
    assert model.backbone.model0.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [320, 640])
def test_predict_cli_uses_the_authors_weights_by_default(size, shared, tmp_path) -> None:
    out = tmp_path / "faces.json"
    main(["predict", str(shared / "images" / PHOTO), "--model", "yunet_n", "--imgsz", str(size), "--conf", "0.5", "--json", str(out), "--device", "cpu"])
    faces = json.loads(out.read_text())[0]["faces"]
    authors = load_authors_weights(YuNet("n"), shared / "weights" / "yunet_n.pth").eval()
    model = load_model("yunet_n")
    expected = detect_image(authors, read_image(shared / "images" / PHOTO), (size, size), family_of(model.deploy).postprocess(model.deploy, conf_threshold=0.5))
    assert len(faces) == len(expected) >= 3
    np.testing.assert_allclose([f["score"] for f in faces], expected.scores, atol=1e-5)


def test_predict_cli_still_needs_weights_for_models_without_released_ones(shared) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(shared / "images" / PHOTO), "--model", "retinaface_mnet025"])
    assert exc.value.code == 2


@pytest.mark.parametrize("size", [320, 640])
def test_eval_cli_on_a_labelled_set(size, synth, tmp_path) -> None:
    out = tmp_path / "ap.json"
    main(["eval", "--model", "yunet_n", "--data", str(synth), "--imgsz", str(size), "--json", str(out), "--device", "cpu"])
    metrics = json.loads(out.read_text())
    assert metrics["images"] == 4 and metrics["faces"] > 0
    assert metrics["weights"].endswith("yunet_n.pt") and 0.0 < metrics["ap50"] <= 1.0


def test_training_starts_from_the_authors_weights_unless_told_otherwise(synth, tmp_path) -> None:
    from mobilekit.training import TrainConfig
    from mobilekit.training.loop import Trainer

    released = read_state_dict(released_weights("yunet_n"))

    def first_weights(**kw) -> dict:
        cfg = TrainConfig(model="yunet_n", data=str(synth), out=str(tmp_path / "t"), epochs=1, batch=2, imgsz=320, device="cpu",
                          progress=False, tensorboard=False, **kw)  # fmt: skip
        return Trainer(cfg).model.state_dict()

    default = first_weights()
    assert all(torch.equal(default[k], v) for k, v in released.items())
    scratch = first_weights(from_scratch=True)
    assert not torch.equal(scratch["backbone.model0.conv1.weight"], released["backbone.model0.conv1.weight"])
