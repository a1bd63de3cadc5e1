"""DeployConfig serialisation: each model writes its family's anchors under one ``anchors`` key (sidecars,
model_meta.json), the family parses them back, and sidecars written in the former layouts still load."""

from __future__ import annotations

import json

import pytest

from mobilekit.config import DeployConfig
from mobilekit.families import deploy_from_dict, family_of
from mobilekit.families.retinaface.priors import PriorConfig
from mobilekit.models import create_model

FORMER_ANCHOR_FIELDS = ("priors", "yolo_anchors", "ssd_anchors")
MODELS = {"retinaface_mnet025": "retinaface_priors", "featherface_v2": "retinaface_priors", "adyolov5_face": "yolo_grid_anchors",
          "blazeface_short": "mediapipe_ssd_anchors"}  # fmt: skip


@pytest.mark.parametrize(("name", "anchor_type"), MODELS.items())
def test_to_dict_carries_the_familys_anchors_and_reads_back(name, anchor_type):
    deploy = create_model(name).deploy
    written = json.loads(json.dumps(deploy.to_dict()))
    assert not set(FORMER_ANCHOR_FIELDS) & set(written)
    assert written["anchors"]["type"] == anchor_type
    assert written["anchors"] == family_of(deploy).anchors(deploy)  # the same description as the sidecar's "anchors"
    assert deploy_from_dict(written) == deploy


def test_yolo_sidecar_and_decoder_settings_name_no_retinaface_priors():
    from mobilekit.flutter.package import decoder_settings

    deploy = create_model("adyolov5_face").deploy
    text = json.dumps({"deploy": deploy.to_dict(), "decoder": decoder_settings(deploy, (640, 640), None)})
    assert "min_sizes" not in text and "retinaface_priors" not in text and "variances" not in text
    retinaface = create_model("retinaface_mnet025").deploy
    assert decoder_settings(retinaface, (640, 640), None)["variances"] == [0.1, 0.2]


@pytest.mark.parametrize("name", MODELS)
def test_sidecars_in_the_former_layouts_still_load(name):
    deploy = create_model(name).deploy
    own = family_of(deploy).legacy_anchor_key
    layout_of_stop_22 = {**{k: v for k, v in deploy.to_dict().items() if k != "anchors"}, own: deploy.anchors.to_dict()}
    assert deploy_from_dict(layout_of_stop_22) == deploy
    every_field = {**layout_of_stop_22, **{k: None for k in FORMER_ANCHOR_FIELDS if k != own}}  # before that
    assert deploy_from_dict(every_field) == deploy


def test_a_retinaface_config_without_anchors_gets_the_default_priors_and_others_must_name_theirs():
    model = create_model("retinaface_mnet025")
    assert DeployConfig(name="mine").anchors is None and model.deploy.anchors == PriorConfig()
    assert deploy_from_dict({"name": "old", "decoder": "retinaface"}).anchors == PriorConfig()
    with pytest.raises(ValueError, match="no anchors"):
        deploy_from_dict({"name": "old", "decoder": "yolo"})
    with pytest.raises(ValueError, match="not YoloAnchorConfig"):
        family_of(create_model("adyolov5_face").deploy).anchors_of(model.deploy.__class__(name="x", decoder="yolo", anchors=PriorConfig()))
