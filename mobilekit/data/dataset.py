"""``FaceDataset``: label.txt + images -> (image tensor, normalised targets) for training and evaluation.

Target rows (float32 ``[K, 4 + 2L + 1]``): ``x1, y1, x2, y2, k0x, k0y, ..., has_landmarks``, the L
keypoints of the model's family (``DetectorFamily.label_keypoint_map`` turns label.txt's 5 landmarks into
them; identity by default: ``[K, 15]``), coordinates divided by the output image width/height (0..1),
``has_landmarks`` 1.0 or -1.0 (Pytorch_Retinaface's label column; keypoints are 0 when absent or not in
the labels).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mobilekit.data.augment import FaceArrays, letterbox_augment, retinaface_augment
from mobilekit.data.labels import LabeledImage, read_labels
from mobilekit.errors import MobilekitError
from mobilekit.image_io import read_image, resize_to_input

MODES = ("crop_stretch", "letterbox")  # augmentation styles; each family declares its own
LABEL_FILE = "label.txt"
IMAGES_DIR = "images"


@dataclass(frozen=True)
class SkippedImage:
    """What ``FaceDataset`` returns for an image it cannot read; ``detection_collate`` drops and counts it."""

    index: int
    path: str
    reason: str
    imgsz: int


def resolve_label_file(root_or_label_file: str | Path, split: str) -> Path:
    """``DIR/<split>/label.txt``, ``DIR/label.txt`` or the label file itself."""
    path = Path(root_or_label_file)
    if path.is_file():
        return path
    for candidate in (path / split / LABEL_FILE, path / LABEL_FILE):
        if candidate.is_file():
            return candidate
    raise MobilekitError(
        f"no label file for split {split!r}: looked for {path / split / LABEL_FILE} and {path / LABEL_FILE}"
    )


def face_arrays(item: LabeledImage) -> FaceArrays:
    """The faces of ``item`` with a positive box size, as pixel arrays (absent landmarks are 0)."""
    faces = [f for f in item.faces if f.box_xywh[2] > 0 and f.box_xywh[3] > 0]
    boxes = np.array([f.box_xywh for f in faces], dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    landmarks = np.zeros((len(faces), 5, 2), dtype=np.float32)
    has = np.full(len(faces), -1.0, dtype=np.float32)
    for k, face in enumerate(faces):
        if face.landmarks is not None:
            landmarks[k] = face.landmarks
            has[k] = 1.0
    return FaceArrays(boxes, landmarks, has)


def target_columns(num_keypoints: int) -> int:
    """Width of a target row: box, keypoints x/y, landmark flag."""
    return 4 + 2 * num_keypoints + 1


def targets_tensor(faces: FaceArrays, width: int, height: int, keypoint_map: np.ndarray | None = None) -> torch.Tensor:
    """Float32 ``[K, 4 + 2L + 1]`` target rows normalised by ``width`` x ``height``, degenerate boxes dropped.
    ``keypoint_map`` ``[L, 5]`` turns the label landmarks into the model's keypoints (None: the 5 themselves)."""
    scale = np.array([width, height], dtype=np.float32)
    boxes = np.clip(faces.boxes.reshape(-1, 2, 2) / scale, 0.0, 1.0).reshape(-1, 4)
    landmarks = np.clip(faces.landmarks / scale, 0.0, 1.0)
    if keypoint_map is not None:
        landmarks = np.einsum("lj,kjc->klc", keypoint_map, landmarks)
    num_keypoints = landmarks.shape[1]
    landmarks = landmarks.reshape(-1, 2 * num_keypoints)
    landmarks[faces.has_landmarks < 0] = 0.0
    rows = np.concatenate([boxes, landmarks, faces.has_landmarks[:, None]], axis=1).astype(np.float32)
    rows = rows[(rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])]
    return torch.from_numpy(np.ascontiguousarray(rows)).reshape(-1, target_columns(num_keypoints))


class FaceDataset(Dataset):
    """Faces from a RetinaFace-layout ``label.txt`` (images in ``images/`` beside it).

    ``root_or_label_file``: a dataset root with ``<split>/label.txt``, a split folder with
    ``label.txt``, or a label file. Items are ``(image uint8 [3, S, S] RGB 0-255, target [K, 4 + 2L + 1])``
    or a :class:`SkippedImage` for a missing / unreadable image (warned and counted in ``skipped``;
    ``detection_collate`` drops it). ``augment=False`` resizes plainly: stretch for
    ``mode="crop_stretch"`` (RetinaFace's random crop + stretch when augmenting), centred letterbox for ``mode="letterbox"``. Augmentation randomness comes
    from torch's RNG, so ``torch.manual_seed`` and DataLoader worker seeding make it reproducible.
    ``keypoint_map`` (``[L, 5]``, the family's ``label_keypoint_map``) gives targets the model's L keypoints;
    augmentation runs on the label's 5 landmarks before it (the mirror swaps them by name).
    """

    def __init__(
        self,
        root_or_label_file: str | Path,
        split: str = "train",
        imgsz: int = 640,
        augment: bool = False,
        mode: str = "crop_stretch",
        *,
        min_face_px: float = 0.0,
        pad_value: float = 0.0,
        keypoint_map: np.ndarray | None = None,
    ) -> None:
        if mode not in MODES:
            raise MobilekitError(f"unknown dataset mode {mode!r}; choose from {', '.join(MODES)}")
        if imgsz < 1:
            raise MobilekitError(f"image size must be positive, got {imgsz}")
        self.label_file = resolve_label_file(root_or_label_file, split)
        self.image_dir = self.label_file.parent / IMAGES_DIR
        self.items: list[LabeledImage] = read_labels(self.label_file)
        self.imgsz, self.augment, self.mode = int(imgsz), bool(augment), mode
        self.min_face_px, self.pad_value = float(min_face_px), float(pad_value)
        self.keypoint_map = keypoint_map
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.items)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.items[index].path

    def load_eval_item(self, index: int) -> tuple[np.ndarray, LabeledImage]:
        """The original RGB uint8 image and its labels (raises ``ImageError`` if unreadable)."""
        return read_image(self.image_path(index)), self.items[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | SkippedImage:
        item = self.items[index]
        try:
            image = read_image(self.image_path(index))
        except MobilekitError as exc:
            self.skipped += 1
            warnings.warn(f"skipping image {index}: {exc}", stacklevel=2)
            return SkippedImage(index, item.path, str(exc), self.imgsz)
        faces = face_arrays(item)
        size = self.imgsz
        if self.augment:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
            if self.mode == "crop_stretch":
                image, faces = retinaface_augment(image, faces, size, rng, self.min_face_px)
            else:
                image, faces = letterbox_augment(
                    image, faces, size, rng, pad_value=self.pad_value, min_face_px=self.min_face_px
                )
        else:
            resize = "stretch" if self.mode == "crop_stretch" else "letterbox"
            image, t = resize_to_input(image, (size, size), resize, self.pad_value)
            faces = faces.scaled(t.scale_x, t.scale_y, t.pad_x, t.pad_y)
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # uint8: a quarter of float32's bytes
        return tensor, targets_tensor(faces, size, size, self.keypoint_map)


def detection_collate(
    batch: list[tuple[torch.Tensor, torch.Tensor] | SkippedImage],
) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """Stack images, keep per-image targets in a list, drop skipped images and count them."""
    kept = [b for b in batch if not isinstance(b, SkippedImage)]
    skipped = len(batch) - len(kept)
    if not kept:
        size = batch[0].imgsz if batch else 0
        return torch.zeros((0, 3, size, size), dtype=torch.uint8), [], skipped
    return torch.stack([image for image, _ in kept]), [target for _, target in kept], skipped
