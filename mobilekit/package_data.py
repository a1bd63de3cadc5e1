"""Files mobilekit ships inside its package, read through ``importlib.resources`` (never a checkout path):
the same files in a wheel, an sdist's build, an editable install and a checkout.

- ``flutter/dart/``: the Dart decoder every Flutter package gets as ``lib/``; ``families/<family>/decoder.dart``:
  each family's part of it (``DetectorFamily.dart_decoder``), copied as ``lib/family_decoder.dart``.
- ``weights/``: the ImageNet MobileNetV1-0.25 backbone the embedded default starts from (Pytorch_Retinaface's
  pretraining, MIT, its licence beside it; made by ``tools/make_imagenet_backbone.py``).
- ``weights/yunet_{n,s}.pt``: YuNet-n/-s as their authors released them (libfacedetection.train, Apache-2.0,
  its licence beside them; made by ``tools/make_yunet_weights.py``): ``yunet_n`` / ``yunet_s`` start from them
  wherever no weights are given (:func:`mobilekit.models.registry.released_weights`).
- ``native/arm_count_plugin.c``: the qemu TCG plugin ``mobilekit arm-setup`` builds (instructions per invoke on
  emulated ARM64 CPUs).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from mobilekit.errors import MobilekitError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

DART_DECODER = "flutter/dart"
IMAGENET_BACKBONE = "weights/mobilenetv1_025_imagenet.pt"
IMAGENET_BACKBONE_LICENCE = "weights/LICENSE-Pytorch_Retinaface.txt"
YUNET_WEIGHTS = {"n": "weights/yunet_n.pt", "s": "weights/yunet_s.pt"}  # per variant
YUNET_LICENCE = "weights/LICENSE-libfacedetection.train.txt"
ARM_COUNT_PLUGIN = "native/arm_count_plugin.c"
SHIPPED = (DART_DECODER, IMAGENET_BACKBONE, IMAGENET_BACKBONE_LICENCE, *YUNET_WEIGHTS.values(), YUNET_LICENCE, ARM_COUNT_PLUGIN)  # every file or folder above; the wheel test checks them


def shipped(name: str) -> Traversable:
    """The shipped file or folder ``name`` (one of :data:`SHIPPED`)."""
    return resources.files("mobilekit").joinpath(*name.split("/"))


def shipped_path(name: str) -> Path:
    """``name`` as a file system path (what ``torch.load`` and the training config take)."""
    resource = shipped(name)
    if not isinstance(resource, Path) or not resource.exists():
        raise MobilekitError(f"mobilekit's installation lacks {name}: reinstall mobilekit")
    return resource


def copy_shipped_folder(name: str, target: Path) -> None:
    """Copy the shipped folder ``name`` (recursively) to ``target``, which must not exist."""
    _copy(shipped(name), target)


def copy_shipped_file(name: str, target: Path) -> None:
    """Copy the shipped file ``name`` to ``target``."""
    target.write_bytes(shipped(name).read_bytes())


def _copy(source: Traversable, target: Path) -> None:
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.is_dir():
            _copy(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())
