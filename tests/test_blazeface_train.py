"""BlazeFace training: label landmarks mapped to the family's keypoints (ears masked), the loss's anchor
matching against MediaPipe's slot scales, learning from scratch, fine-tuning Google's weights."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from mobilekit.box_coder import box_iou
from mobilekit.config import LANDMARK_NAMES
from mobilekit.data.dataset import FaceDataset, detection_collate
from mobilekit.data.labels import read_labels
from mobilekit.families import build_criterion, family_of
from mobilekit.families.blazeface.decode import ssd_anchor_scales, ssd_anchors
from mobilekit.image_io import read_image, resize_to_input, to_nchw
from mobilekit.inference import detect_image, load_model
from mobilekit.models import create_model
from mobilekit.models.blazeface import GOOGLE_WEIGHTS
from mobilekit.training import TrainConfig, train


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from mobilekit.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("bf") / "synth", 24, seed=11, imgsz=192, val_fraction=0.25)


@pytest.fixture(scope="module", params=sorted(GOOGLE_WEIGHTS))
def google(request, shared):
    return load_model(request.param, shared / "weights" / GOOGLE_WEIGHTS[request.param])


def mediapipe_targets(model, shared, photo="group_768x1024.jpg"):
    """The faces Google's weights + MediaPipe's decode find on a photo, as one training target [K, 17] at the
    model's input size, and the input tensor."""
    image, _ = resize_to_input(read_image(shared / "images" / photo), model.deploy.input_size, model.deploy.resize)
    faces = detect_image(model, image)
    size = model.deploy.input_size[0]
    rows = np.concatenate([faces.boxes / size, faces.landmarks / size, np.ones((len(faces), 1))], axis=1)
    return torch.from_numpy(to_nchw(image)).float(), torch.tensor(rows, dtype=torch.float32)


def test_label_landmarks_become_the_familys_keypoints(synth):
    """Targets carry BlazeFace's 6 keypoints: eyes and nose from the label, the mouth centre as the mean of the
    corners, the ears 0 (not in the labels); RetinaFace-family targets keep the 5 label landmarks."""
    blaze, retina = create_model("blazeface_short").deploy, create_model("retinaface_mnet025").deploy
    mapping = family_of(blaze).label_keypoint_map(blaze)
    assert mapping.shape == (6, 5) and not mapping[4:].any()
    np.testing.assert_array_equal(family_of(retina).label_keypoint_map(retina), np.eye(5))
    item = next(i for i in read_labels(synth / "val" / "label.txt") if i.faces and i.faces[0].landmarks is not None)
    index = [i.path for i in read_labels(synth / "val" / "label.txt")].index(item.path)
    size = 128
    six = FaceDataset(synth, "val", size, mode="letterbox", keypoint_map=mapping)[index][1]
    five = FaceDataset(synth, "val", size, mode="letterbox")[index][1]
    assert six.shape[1] == 4 + 12 + 1 and five.shape[1] == 15
    label = five[:, 4:14].reshape(-1, 5, 2)
    points = six[:, 4:16].reshape(-1, 6, 2)
    eye, other_eye, nose = (LANDMARK_NAMES.index(n) for n in ("left_eye", "right_eye", "nose"))
    torch.testing.assert_close(points[:, :3], label[:, [eye, other_eye, nose]])
    torch.testing.assert_close(points[:, 3], (label[:, 3] + label[:, 4]) / 2)
    assert not points[:, 4:].any()
    torch.testing.assert_close(six[:, :4], five[:, :4])


def test_anchor_slot_scales_follow_mediapipes_calculator():
    short = create_model("blazeface_short").deploy.anchors
    scales = ssd_anchor_scales(short, (128, 128))
    assert scales.shape == (len(ssd_anchors(short, (128, 128))),)
    layer = [short.min_scale + (short.max_scale - short.min_scale) * i / 3 for i in range(4)]
    np.testing.assert_allclose(scales[:2], [layer[0], math.sqrt(layer[0] * layer[1])], rtol=1e-6)  # a 16x16 cell
    expected_8x8 = [layer[1], math.sqrt(layer[1] * layer[2]), layer[2], math.sqrt(layer[2] * layer[3]), layer[3], math.sqrt(layer[3])]
    np.testing.assert_allclose(scales[512:518], expected_8x8, rtol=1e-6)
    full = create_model("blazeface_full").deploy.anchors
    np.testing.assert_allclose(ssd_anchor_scales(full, (192, 192)), (full.min_scale + full.max_scale) / 2)


def test_googles_weights_fit_mediapipes_own_detections(google, shared):
    """The loss with MediaPipe's detections of Google's weights as targets is a fraction of a fresh model's:
    the matching gives Google's slots the faces they were trained for. Ear keypoints do not count; eyes do;
    a face without landmarks has no keypoint loss."""
    x, rows = mediapipe_targets(google, shared)
    assert len(rows) >= 5
    criterion = build_criterion(google, google.deploy.input_size, 2.0)
    with torch.no_grad():
        raw = google(x)
        total, parts = criterion(raw, [rows])
        fresh, _ = criterion(create_model(google.deploy.name).eval()(x), [rows])
    assert float(total) < 0.25 * float(fresh)
    assert criterion.match([rows]).positive.any(dim=0).sum() >= len(rows)
    moved_ears, moved_eye, no_landmarks = rows.clone(), rows.clone(), rows.clone()
    moved_ears[:, 12:16] += 0.1
    moved_eye[:, 4] += 0.05
    no_landmarks[:, -1] = -1.0
    with torch.no_grad():
        assert criterion(raw, [moved_ears])[1]["landmarks"] == parts["landmarks"]
        assert criterion(raw, [moved_eye])[1]["landmarks"] > parts["landmarks"]
        nothing = criterion(raw, [no_landmarks])[1]
    assert float(nothing["landmarks"]) == 0.0 and nothing["box"] == parts["box"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GOOGLE_WEIGHTS))
def test_a_few_steps_from_scratch_decrease_the_loss(name, synth):
    torch.manual_seed(0)
    model = create_model(name).train()
    deploy = model.deploy
    size = deploy.input_size[0]
    family = family_of(deploy)
    data = FaceDataset(synth, "train", size, mode=family.augmentation, keypoint_map=family.label_keypoint_map(deploy))
    images, targets, _ = detection_collate([data[i] for i in range(6)])
    criterion = build_criterion(model, (size, size), 2.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        total, _ = criterion(model(images.float()), targets)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.slow
def test_fine_tuning_googles_weights_keeps_its_faces(shared, synth, tmp_path):
    """Two epochs on synthetic faces at a low learning rate from Google's file: the weights still find the
    faces Google's file finds on a real photo, in the same places."""
    path = shared / "weights" / GOOGLE_WEIGHTS["blazeface_short"]
    config = TrainConfig(model="blazeface_short", data=str(synth), out=str(tmp_path / "run"), epochs=2, batch=4, lr=1e-4,
                         init_weights=str(path), device="cpu", progress=False, tensorboard=False)
    result = train(config)
    photo = read_image(shared / "images" / "group_768x1024.jpg")
    before = detect_image(load_model("blazeface_short", path), photo)
    after = detect_image(load_model("blazeface_short", result.best_weights), photo)
    assert len(before) >= 5
    iou = box_iou(before.boxes.astype(np.float64), after.boxes.astype(np.float64))
    assert (iou.max(axis=1) >= 0.8).sum() >= len(before) - 1


@pytest.mark.slow
def test_training_at_another_size_is_refused(synth, tmp_path):
    args = ["train", "--model", "blazeface_full", "--data", str(synth), "--imgsz", "256", "--out", str(tmp_path)]
    result = subprocess.run([sys.executable, "-m", "mobilekit", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("blazeface_full trains at its own input size 192x192 only, got --imgsz 256")


@pytest.mark.slow
def test_pseudo_labels_carry_the_landmarks_a_family_can_give(shared, tmp_path):
    """``data label`` with BlazeFace writes boxes without landmarks (one mouth centre cannot give two corners);
    RetinaFace's keypoints are the label landmarks themselves."""
    retina = create_model("retinaface_mnet025").deploy
    five = np.arange(20.0).reshape(2, 10)
    np.testing.assert_array_equal(family_of(retina).label_landmarks(retina, five), five.reshape(2, 5, 2))
    blaze = create_model("blazeface_short").deploy
    assert family_of(blaze).label_landmarks(blaze, np.zeros((2, 12))) is None
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "group.jpg").symlink_to(shared / "images" / "group_768x1024.jpg")
    args = ["data", "label", str(photos), "--model", "blazeface_short", "--weights", str(shared / "weights" / GOOGLE_WEIGHTS["blazeface_short"]), "--out", str(tmp_path / "out")]
    result = subprocess.run([sys.executable, "-m", "mobilekit", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (item,) = read_labels(tmp_path / "out" / "label.txt")
    assert len(item.faces) == 5 and all(face.landmarks is None for face in item.faces)
