"""The files mobilekit ships inside its package (``mobilekit.package_data``): the ImageNet backbone is the
published pretraining's, the default run starts from it without any shared folder, and the Dart decoder
copies as it is in the source tree."""

from __future__ import annotations

from pathlib import Path

import torch

from mobilekit.checkpoint import load_backbone, read_state_dict
from mobilekit.embedded_run import Pipeline, PipelineConfig
from mobilekit.models import create_model
from mobilekit.package_data import DART_DECODER, IMAGENET_BACKBONE, IMAGENET_BACKBONE_LICENCE, copy_shipped_file, copy_shipped_folder, shipped_path
from mobilekit.paths import PROJECT_ROOT
from tools.make_imagenet_backbone import backbone_state


def test_shipped_backbone_holds_the_pretrainings_backbone_tensors_unchanged(shared: Path) -> None:
    shipped = read_state_dict(shipped_path(IMAGENET_BACKBONE))
    expected = backbone_state(shared / "weights" / "mobilenetv1_025_imagenet.tar")
    assert list(shipped) == list(expected)
    assert all(shipped[k].dtype == expected[k].dtype and torch.equal(shipped[k], expected[k]) for k in expected)
    assert "MIT License" in shipped_path(IMAGENET_BACKBONE_LICENCE).read_text()


def test_shipped_backbone_loads_like_pretrained_backbone() -> None:
    model = create_model("featherface_v1")
    report = load_backbone(model, shipped_path(IMAGENET_BACKBONE))
    assert report.ok and len(report.loaded) == len(model.backbone_module().state_dict())


def test_default_run_starts_from_the_shipped_backbone_without_a_shared_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MOBILEKIT_SHARED", str(tmp_path / "empty"))
    assert Pipeline(PipelineConfig(out=tmp_path))._pretrained_backbone() == shipped_path(IMAGENET_BACKBONE)
    own = tmp_path / "own_backbone.pt"
    assert Pipeline(PipelineConfig(out=tmp_path, pretrained_backbone=own))._pretrained_backbone() == own
    assert Pipeline(PipelineConfig(out=tmp_path, model="blazeface_short"))._pretrained_backbone() is None  # no MobileNet


def test_dart_decoder_copies_as_in_the_source_tree(tmp_path) -> None:
    copy_shipped_folder(DART_DECODER, tmp_path / "lib")
    source = PROJECT_ROOT / "mobilekit" / DART_DECODER
    copied = sorted(p.name for p in (tmp_path / "lib").iterdir())
    assert copied == sorted(p.name for p in source.iterdir()) and "face_decoder.dart" in copied
    assert all((tmp_path / "lib" / name).read_bytes() == (source / name).read_bytes() for name in copied)


def test_packaging_without_shared_photos_uses_a_synthetic_golden_picture(tmp_path, monkeypatch) -> None:
    from mobilekit.flutter.package import SYNTHETIC_GOLDEN, golden_photo

    monkeypatch.setenv("MOBILEKIT_SHARED", str(tmp_path / "empty"))
    name, picture = golden_photo(None)
    assert name == SYNTHETIC_GOLDEN and picture.dtype == "uint8" and max(picture.shape[:2]) == 640
    assert (golden_photo(None)[1] == picture).all()  # the same picture every time


def test_each_familys_dart_decoder_copies_as_in_the_source_tree(tmp_path) -> None:
    from mobilekit.families import FAMILIES

    for family in FAMILIES.values():
        copy_shipped_file(family.dart_decoder, tmp_path / f"{family.name}.dart")
        assert (tmp_path / f"{family.name}.dart").read_bytes() == (PROJECT_ROOT / "mobilekit" / family.dart_decoder).read_bytes()
