"""Training data: label.txt parsing, the dataset and its augmentation, the synthetic generator, CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mobilekit.cli import main
from mobilekit.data.augment import FaceArrays, choose_crop, letterbox_augment, mirror, retinaface_augment
from mobilekit.data.dataset import FaceDataset, SkippedImage, detection_collate, face_arrays
from mobilekit.data.labels import Face, LabeledImage, LabelError, read_labels, write_labels
from mobilekit.data.synth import MIN_FACE_PX, make_synthetic_dataset, render_synthetic_image

LANDMARKS = np.array([[30, 40], [50, 40], [40, 50], [32, 60], [48, 60]], dtype=np.float32)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), 40, seed=1, imgsz=256)


def _write_image(path: Path, height: int = 100, width: int = 120) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))


def test_labels_round_trip(tmp_path):
    items = [
        LabeledImage("a/one.jpg", [Face((20.0, 30.0, 40.5, 50.25), LANDMARKS, 0.5), Face((1.0, 2.0, 3.0, 4.0))]),
        LabeledImage("two.png", []),
    ]
    label_file = tmp_path / "split" / "label.txt"
    write_labels(label_file, items)
    back = read_labels(label_file)
    assert [i.path for i in back] == ["a/one.jpg", "two.png"]
    assert back[0].faces[0].box_xywh == (20.0, 30.0, 40.5, 50.25)
    np.testing.assert_allclose(back[0].faces[0].landmarks, LANDMARKS)
    assert back[0].faces[0].blur == 0.5
    assert back[0].faces[1].landmarks is None
    assert back[1].faces == []
    assert "-1 -1 -1" in label_file.read_text()
    assert [p.name for p in label_file.parent.iterdir()] == ["label.txt"]  # no temporary file left


@pytest.mark.parametrize(
    "bad_line, message",
    [("1 2 3", "got 3"), ("1 2 3 x", "expected numbers"), ("1 2 -3 4", "negative box size")],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    label_file = tmp_path / "label.txt"
    label_file.write_text(f"# a.jpg\n1 2 3 4\n\n{bad_line}\n")
    with pytest.raises(LabelError, match=rf"label\.txt:4: .*{message}"):
        read_labels(label_file)


def test_image_line_with_size_and_spaces(tmp_path):
    label_file = tmp_path / "label.txt"
    label_file.write_text("# 0--Parade/a.jpg 1024 768\n1 2 3 4\n# my photos/b c.jpg\n")
    assert [i.path for i in read_labels(label_file)] == ["0--Parade/a.jpg", "my photos/b c.jpg"]


def test_face_line_before_image_line(tmp_path):
    label_file = tmp_path / "label.txt"
    label_file.write_text("1 2 3 4\n")
    with pytest.raises(LabelError, match=r"label\.txt:1: face line before"):
        read_labels(label_file)


def test_box_only_lines_train_boxes_without_landmarks(tmp_path):
    (tmp_path / "label.txt").write_text("# a.jpg\n10 20 30 40\n")
    _write_image(tmp_path / "images" / "a.jpg", 100, 200)
    ds = FaceDataset(tmp_path / "label.txt", imgsz=64)
    assert ds.items[0].faces[0].landmarks is None
    image, target = ds[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    np.testing.assert_allclose(target[0, :4], [10 / 200, 20 / 100, 40 / 200, 60 / 100], rtol=1e-6)
    assert target[0, 14] == -1.0 and torch.all(target[0, 4:14] == 0)


def test_missing_image_is_skipped_and_counted(tmp_path):
    items = [LabeledImage("ok.jpg", [Face((10, 10, 30, 30), LANDMARKS, 0.0)]), LabeledImage("gone.jpg", [])]
    write_labels(tmp_path / "train" / "label.txt", items)
    _write_image(tmp_path / "train" / "images" / "ok.jpg")
    ds = FaceDataset(tmp_path, split="train", imgsz=64, augment=True)
    with pytest.warns(UserWarning, match="gone.jpg"):
        skipped = ds[1]
    assert isinstance(skipped, SkippedImage) and ds.skipped == 1
    with pytest.warns(UserWarning):
        for workers in (0, 1):
            batches = list(DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=detection_collate))
            images, targets, n_skipped = batches[0]
            assert images.shape == (1, 3, 64, 64) and len(targets) == 1 and n_skipped == 1
    images, targets, n_skipped = detection_collate([skipped])
    assert images.shape == (0, 3, 64, 64) and targets == [] and n_skipped == 1


def test_unknown_split_names_the_expected_files(tmp_path):
    with pytest.raises(Exception, match="val/label.txt"):
        FaceDataset(tmp_path, split="val")


def _faces(boxes, landmarks, has=None) -> FaceArrays:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    has = np.ones(len(boxes), np.float32) if has is None else np.asarray(has, np.float32)
    return FaceArrays(boxes, np.asarray(landmarks, np.float32).reshape(-1, 5, 2), has)


def test_mirror_swaps_left_and_right_landmarks():
    image = np.zeros((100, 120, 3), np.uint8)
    image[:, :10] = 255
    faces = _faces([[25, 35, 55, 65]], LANDMARKS)
    flipped, out = mirror(image, faces)
    assert flipped[:, -10:].min() == 255 and flipped[:, :-10].max() == 0
    np.testing.assert_allclose(out.boxes[0], [120 - 55, 35, 120 - 25, 65])
    # new left eye = old right eye mirrored, new left mouth corner = old right mouth corner mirrored
    np.testing.assert_allclose(out.landmarks[0, 0], [120 - 50, 40])
    np.testing.assert_allclose(out.landmarks[0, 1], [120 - 30, 40])
    np.testing.assert_allclose(out.landmarks[0, 2], [120 - 40, 50])
    np.testing.assert_allclose(out.landmarks[0, 3], [120 - 48, 60])
    np.testing.assert_allclose(out.landmarks[0, 4], [120 - 32, 60])
    assert out.landmarks[0, 0, 0] < out.landmarks[0, 1, 0]
    again_image, again = mirror(flipped, out)
    np.testing.assert_array_equal(again_image, image)
    np.testing.assert_allclose(again.landmarks, faces.landmarks)
    np.testing.assert_allclose(again.boxes, faces.boxes)


def test_crop_keeps_only_faces_with_centre_inside():
    rng = np.random.default_rng(0)
    centres = rng.uniform(20, 380, (30, 2))
    boxes = np.concatenate([centres - 12, centres + 12], axis=1)
    landmarks = np.repeat(centres[:, None], 5, axis=1)
    faces = _faces(boxes, landmarks, rng.choice([1.0, -1.0], 30))
    for _ in range(50):
        (left, top, side), kept = choose_crop(faces, 400, 300, 64, rng)
        inside = np.all((centres > (left, top)) & (centres < (left + side, top + side)), axis=1)
        assert 0 < len(kept) == inside.sum()
        np.testing.assert_allclose(kept.landmarks[:, 0], centres[inside] - (left, top), atol=1e-3)
        np.testing.assert_array_equal(kept.has_landmarks, faces.has_landmarks[inside])
        assert kept.boxes.min() >= 0 and kept.boxes.max() <= side
        assert np.all(kept.boxes[:, 2:] > kept.boxes[:, :2])


def test_crop_drops_faces_below_min_size_at_output_resolution():
    faces = _faces([[10, 10, 30, 30], [50, 50, 54, 54]], np.zeros((2, 5, 2)))
    rng = np.random.default_rng(0)
    for _ in range(20):
        (_, _, side), kept = choose_crop(faces, 100, 100, 100, rng, min_face_px=8)
        assert np.all(np.minimum(*(kept.boxes[:, 2:] - kept.boxes[:, :2]).T) * 100 / side > 8)
    assert choose_crop(_faces([], np.zeros((0, 5, 2))), 100, 100, 64, rng) is None


@pytest.mark.parametrize("augment_fn", [retinaface_augment, letterbox_augment])
def test_augmentation_keeps_landmarks_with_their_faces(augment_fn):
    rng = np.random.default_rng(3)
    mirrored_seen = 0
    for _ in range(40):
        image, labels = render_synthetic_image(rng, 160)
        faces = face_arrays(LabeledImage("x", labels))
        out_image, out = augment_fn(image, faces, 96, rng)
        assert out_image.shape == (96, 96, 3) and out_image.dtype == np.uint8
        with_lm = out.has_landmarks > 0
        lm, boxes = out.landmarks[with_lm], out.boxes[with_lm]
        assert np.all(lm[..., 0] >= boxes[:, None, 0] - 1e-3) and np.all(lm[..., 0] <= boxes[:, None, 2] + 1e-3)
        assert np.all(lm[..., 1] >= boxes[:, None, 1] - 1e-3) and np.all(lm[..., 1] <= boxes[:, None, 3] + 1e-3)
        # synthetic faces roll at most 35 degrees: the image-left eye / mouth corner stays left
        assert np.all(lm[:, 0, 0] <= lm[:, 1, 0] + 1e-3) and np.all(lm[:, 3, 0] <= lm[:, 4, 0] + 1e-3)
        mirrored_seen += len(lm)
    assert mirrored_seen > 20


@pytest.mark.parametrize("mode", ["crop_stretch", "letterbox"])
@pytest.mark.parametrize("augment", [True, False])
def test_targets_are_normalised(synth_root, mode, augment):
    torch.manual_seed(0)
    ds = FaceDataset(synth_root, "train", imgsz=128, augment=augment, mode=mode)
    n_faces = 0
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 128, 128) and image.dtype == torch.uint8
        assert 0 <= image.min() and image.max() <= 255
        assert target.dtype == torch.float32 and target.shape[1] == 15
        assert torch.all((target[:, :14] >= 0) & (target[:, :14] <= 1))
        assert torch.all(target[:, 2:4] > target[:, :2])
        assert set(target[:, 14].tolist()) <= {1.0, -1.0}
        n_faces += len(target)
    assert n_faces > len(ds)


def test_plain_letterbox_matches_resize_to_input(synth_root):
    ds = FaceDataset(synth_root, "val", imgsz=200, augment=False, mode="letterbox", pad_value=114)
    for i in range(len(ds)):
        original, item = ds.load_eval_item(i)
        image, target = ds[i]
        scale = 200 / max(original.shape[:2])
        pad_x = (200 - round(original.shape[1] * scale)) // 2
        pad_y = (200 - round(original.shape[0] * scale)) // 2
        expected = [
            [(x * scale + pad_x) / 200, (y * scale + pad_y) / 200, ((x + w) * scale + pad_x) / 200, ((y + h) * scale + pad_y) / 200]
            for x, y, w, h in (f.box_xywh for f in item.faces)
        ]
        np.testing.assert_allclose(target[:, :4].numpy(), expected, atol=2e-3)
        if pad_y or pad_x:
            assert image[:, 0, 0].tolist() == [114.0] * 3


def test_synthetic_dataset_is_deterministic_and_varied(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", 30, seed=5, imgsz=192)
    b = make_synthetic_dataset(tmp_path / "b", 30, seed=5, imgsz=192)
    c = make_synthetic_dataset(tmp_path / "c", 30, seed=6, imgsz=192)
    for split in ("train", "val"):
        assert (a / split / "label.txt").read_bytes() == (b / split / "label.txt").read_bytes()
        for image in (a / split / "images").iterdir():
            assert image.read_bytes() == (b / split / "images" / image.name).read_bytes()
    assert (a / "train" / "label.txt").read_bytes() != (c / "train" / "label.txt").read_bytes()
    assert len(read_labels(a / "train" / "label.txt")) == 24 and len(read_labels(a / "val" / "label.txt")) == 6


def test_synthetic_statistics():
    rng = np.random.default_rng(0)
    widths, flags, short_sides = [], [], []
    for _ in range(120):
        image, faces = render_synthetic_image(rng, 256)
        short_sides.append(min(image.shape[:2]))
        for face in faces:
            x, y, w, h = face.box_xywh
            assert x >= 0 and y >= 0 and x + w <= image.shape[1] and y + h <= image.shape[0]
            widths.append(w)
            flags.append(face.landmarks is not None)
            if face.landmarks is not None:
                lm = face.landmarks
                assert np.all((lm >= (x, y)) & (lm <= (x + w, y + h)))
    widths = np.array(widths)
    assert len(widths) > 200
    assert widths.min() >= MIN_FACE_PX * 0.8 and widths.max() <= max(short_sides) * 0.8
    assert np.mean(widths < 20) > 0.1 and np.mean(widths > 60) > 0.1  # tiny and large faces both present
    assert 0.03 < 1 - np.mean(flags) < 0.2  # about 10 % without landmarks


def test_cli_synth(tmp_path, capsys):
    main(["data", "synth", "--out", str(tmp_path / "d"), "--images", "5", "--imgsz", "128", "--seed", "2"])
    assert "train: 4 images" in capsys.readouterr().out
    assert len(FaceDataset(tmp_path / "d", "val", imgsz=64)) == 1
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", "--out", str(tmp_path / "e"), "--images", "0"])
    assert exc.value.code == 2


def test_cli_label_pseudo_labels_photos(shared, shared_images, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in shared_images:
        if path.name.startswith(("bus", "group")):
            shutil.copy(path, photos / path.name)
    out = tmp_path / "labeled"
    weights = shared / "weights" / "retinaface_mnet025_widerface.pth"
    main(["data", "label", str(photos), "--model", "retinaface_mnet025", "--weights", str(weights),
          "--out", str(out), "--imgsz", "640", "--conf", "0.6"])
    items = read_labels(out / "label.txt")
    assert sorted(i.path for i in items) == sorted(p.name for p in photos.iterdir())
    assert all(len(i.faces) >= 2 for i in items)
    assert all(f.landmarks is not None and f.box_xywh[2] > 5 for i in items for f in i.faces)
    ds = FaceDataset(out, imgsz=320)
    image, target = ds[0]
    assert len(target) == len(ds.items[0].faces) and torch.all(target[:, 14] == 1.0)


@pytest.mark.parametrize("augment_fn", [retinaface_augment, letterbox_augment])
@pytest.mark.parametrize("source_size", [(40, 50), (90, 120), (400, 300)])
def test_augmented_pixels_stay_under_their_boxes(augment_fn, source_size):
    """A white square on black: after any augmentation the bright pixels fill the reported box."""
    height, width = source_size
    x0, y0 = width // 3, height // 3
    side = min(height, width) // 3
    image = np.zeros((height, width, 3), np.uint8)
    image[y0 : y0 + side, x0 : x0 + side] = 255
    faces = _faces([[x0, y0, x0 + side, y0 + side]], np.zeros((5, 2)), [-1.0])
    rng = np.random.default_rng(1)
    tolerance = max(1.6, 1.0 + 0.5 * 64 / (0.3 * min(height, width)))  # half a source pixel at the largest zoom
    checked = 0
    for _ in range(40):
        out_image, out = augment_fn(image, faces, 64, rng)
        if len(out) == 0:
            continue
        ys, xs = np.nonzero(out_image.mean(axis=2) > 50)
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], out.boxes[0], atol=tolerance)
        checked += 1
    assert checked > 20


def test_read_image_decodes_jpegs_as_opencv_does(shared_images, tmp_path):
    """The JPEG fast path (simplejpeg) gives OpenCV's pixels; other formats and broken files keep their paths."""
    from mobilekit.image_io import ImageError, read_image

    for path in shared_images:
        expected = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
        assert np.array_equal(read_image(path), expected), path.name
    gray = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "gray.jpg"), gray)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    decoded_gray = cv2.imread(str(tmp_path / "gray.jpg"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(read_image(tmp_path / "gray.jpg"), np.repeat(decoded_gray[..., None], 3, axis=2))
    assert np.array_equal(read_image(tmp_path / "gray.png"), np.repeat(gray[..., None], 3, axis=2))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        read_image(tmp_path / "broken.jpg")


def test_read_image_without_simplejpeg_gives_the_same_pixels(shared_images, monkeypatch):
    """Environments installed with --no-deps (the GPU device check) decode with OpenCV alone."""
    from mobilekit import image_io

    fast = image_io.read_image(shared_images[0])
    monkeypatch.setattr(image_io, "simplejpeg", None)
    assert np.array_equal(image_io.read_image(shared_images[0]), fast)
