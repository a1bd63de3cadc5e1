"""The RetinaFace family's declaration (Pytorch_Retinaface): priors, decode, loss, output meanings."""

from __future__ import annotations

from mobilekit.families.base import DetectorFamily
from mobilekit.families.retinaface.decode import app_decode, decode_detections
from mobilekit.families.retinaface.priors import PriorConfig, prior_boxes, prior_boxes_torch


class RetinaFaceFamily(DetectorFamily):
    """SSD-style priors, ``loc``/``conf``/``landmarks`` encoded against them (Pytorch_Retinaface)."""

    name = "retinaface"
    anchor_type = PriorConfig
    legacy_anchor_key = "priors"
    augmentation = "crop_stretch"
    nms_offset = 1.0  # py_cpu_nms's x2 - x1 + 1
    output_meanings = {
        "loc": "box offsets per prior (dx, dy, dw, dh), encoded against the priors with the variances",
        "conf": "class probabilities per prior (softmax over background, face)",
        "landmarks": "5 landmark offsets per prior (x, y interleaved), encoded against the priors",
    }
    score_output = "conf"
    end_to_end = True
    distillation = True

    def decode(self, deploy, outputs, input_hw, cfg):
        import torch

        priors_cfg = self.anchors_of(deploy)
        loc = outputs["loc"]
        if isinstance(loc, torch.Tensor):
            priors = prior_boxes_torch(priors_cfg, input_hw, loc.device)
        else:
            priors = prior_boxes(priors_cfg, input_hw)
        height, width = input_hw
        return decode_detections(loc, outputs["conf"], outputs["landmarks"], priors, priors_cfg, (width, height), cfg)

    def app_detect(self, outputs, anchors, settings):
        return app_decode(outputs["loc"], outputs["conf"], outputs["landmarks"], anchors, settings)

    def criterion(self, model, image_size, loc_weight):
        from mobilekit.families.retinaface.loss import MultiBoxLoss

        return MultiBoxLoss(self.anchors_of(model.deploy), image_size, loc_weight=loc_weight)

    def default_anchors(self):
        return PriorConfig()

    def decoder_fields(self, deploy):
        return {"variances": list(self.anchors_of(deploy).variances)}  # the priors' box coding

    def end_to_end_constants(self, deploy, input_hw):
        from mobilekit.families.retinaface.end_to_end import graph_constants

        return graph_constants(self.anchors_of(deploy), input_hw)

    def end_to_end_decode(self, tf, outputs, constants, input_hw):
        from mobilekit.families.retinaface.end_to_end import tf_decode

        return tf_decode(tf, outputs, constants, input_hw)

    def anchors_document(self, deploy, input_hw):
        priors = self.anchors_of(deploy)
        height, width = input_hw
        anchors = prior_boxes(priors, input_hw)
        return {
            "layout": "cx,cy,w,h",
            "normalized": True,
            "input_size": [height, width],
            "order": "level -> row -> column -> min_size (output-row order)",
            "min_sizes": [list(s) for s in priors.min_sizes],
            "steps": list(priors.steps),
            "variances": list(priors.variances),
            "clip": priors.clip,
            "count": int(len(anchors)),
            "anchors": [[float(v) for v in row] for row in anchors],
        }

    def output_columns(self, name, deploy):
        points = self.keypoint_columns(deploy)
        return {
            "loc": ["dx", "dy", "dw", "dh"],
            "conf": ["background_prob", "face_prob"],
            "landmarks": [f"{p}_offset" for p in points],
        }.get(name, [])
