"""DeployConfig serialisation: each model writes only its own family's anchors (sidecars, model_meta.json),
and sidecars written before that still load."""

from __future__ import annotations

import json

import pytest

from mobilekit.config import DeployConfig
from mobilekit.families import family_of
from mobilekit.models import create_model

ANCHOR_FIELDS = {"priors", "yolo_anchors", "ssd_anchors"}


@pytest.mark.parametrize(
    ("name", "own"), [("retinaface_mnet025", "priors"), ("featherface_v2", "priors"), ("adyolov5_face", "yolo_anchors"), ("blazeface_short", "ssd_anchors")]
)
def test_to_dict_carries_only_the_familys_own_anchors(name, own):
    deploy = create_model(name).deploy
    written = json.loads(json.dumps(deploy.to_dict()))
    assert ANCHOR_FIELDS & set(written) == {own}
    assert written[own] == family_of(deploy).anchors(deploy)  # the same description as the sidecar's "anchors"
    assert DeployConfig.from_dict(written) == deploy


def test_yolo_sidecar_and_decoder_settings_name_no_retinaface_priors():
    from mobilekit.flutter.package import decoder_settings

    deploy = create_model("adyolov5_face").deploy
    text = json.dumps({"deploy": deploy.to_dict(), "decoder": decoder_settings(deploy, (640, 640), None)})
    assert "min_sizes" not in text and "retinaface_priors" not in text and "variances" not in text
    retinaface = create_model("retinaface_mnet025").deploy
    assert decoder_settings(retinaface, (640, 640), None)["variances"] == [0.1, 0.2]


def test_sidecars_written_with_every_anchor_field_still_load():
    deploy = create_model("adyolov5_face").deploy
    old = {**deploy.to_dict(), "priors": deploy.priors.to_dict(), "ssd_anchors": None}  # the former layout
    assert DeployConfig.from_dict(old) == deploy
