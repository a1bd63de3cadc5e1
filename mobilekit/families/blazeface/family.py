"""The BlazeFace family's declaration (MediaPipe): SSD anchors, decode with weighted NMS, loss, keypoints."""

from __future__ import annotations

from dataclasses import replace

from mobilekit.detections import PostprocessConfig
from mobilekit.families.base import DetectorFamily
from mobilekit.families.blazeface.anchors import SsdAnchorConfig
from mobilekit.families.blazeface.decode import SCORE_CLIPPING, blazeface_detections, ssd_anchors


class BlazeFaceFamily(DetectorFamily):
    """MediaPipe's BlazeFace: SSD anchors of fixed size, regressions in input pixels relative to the anchor
    centre, sigmoid scores clipped at +-100, weighted NMS (:mod:`mobilekit.families.blazeface.decode`)."""

    name = "blazeface"
    anchor_type = SsdAnchorConfig
    legacy_anchor_key = "ssd_anchors"
    augmentation = "letterbox"
    nms_offset = 0.0  # normalised-coordinate IoU, no +1
    output_meanings = {
        "regressors": "per anchor: box centre x, y (offsets from the anchor centre), width, height, then 6 keypoints x, y "
        "(offsets from the anchor centre); input pixels",
        "classificators": "per anchor: face score logit (MediaPipe: sigmoid after clipping to [-100, 100])",
    }
    score_output = "classificators"
    score_clipping = SCORE_CLIPPING
    # MediaPipe's FaceKeyPoint order; "right" is the person's right (the image's left on an unmirrored photo).
    keypoint_names = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")
    # The person's right eye is the image's left: label.txt's "left_eye" (checked on the shared photos against
    # the RetinaFace reference detections); the ears are not in RetinaFace-layout labels.
    keypoint_sources = {
        "right_eye": ("left_eye",),
        "left_eye": ("right_eye",),
        "nose_tip": ("nose",),
        "mouth_center": ("left_mouth_corner", "right_mouth_corner"),
        "right_ear_tragion": (),
        "left_ear_tragion": (),
    }
    native_input_only = True  # anchors and training are for the model's own input size
    uint8_outputs_unusable = (
        "one uint8 scale per output spans the hopeless anchors' values (logits down to -600, regressors to "
        "hundreds of pixels): 2.2 logits and 1.7 px per step on blazeface_short, 6 false faces on 3 photos"
    )

    def postprocess(self, deploy, **overrides):
        """MediaPipe's decode: score >= the model's ``min_score_thresh`` (``deploy.score_threshold``: it also
        decides which boxes the weighted NMS blends, so evaluation uses it too), weighted NMS at ``nms_iou``."""
        base = PostprocessConfig(conf_threshold=deploy.score_threshold, nms_iou=deploy.nms_iou, nms_offset=self.nms_offset)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def decode(self, deploy, outputs, input_hw, cfg):
        anchors = ssd_anchors(self.anchors_of(deploy), input_hw)
        return blazeface_detections(outputs["regressors"], outputs["classificators"], anchors, input_hw, cfg)

    def app_detect(self, outputs, anchors, settings):
        return blazeface_detections(
            outputs["regressors"], outputs["classificators"], anchors, settings.input_hw, settings.postprocess_config(), settings.score_clipping
        )

    def criterion(self, model, image_size, loc_weight):
        from mobilekit.families.blazeface.loss import BlazeFaceLoss

        mask = self.label_keypoint_map(model.deploy).any(axis=1)
        return BlazeFaceLoss(self.anchors_of(model.deploy), image_size, tuple(bool(m) for m in mask), loc_weight=loc_weight)

    def anchors_document(self, deploy, input_hw):
        height, width = input_hw
        anchors = ssd_anchors(self.anchors_of(deploy), input_hw)
        return {
            "layout": "cx,cy,w,h",
            "normalized": True,
            "input_size": [height, width],
            "order": "stride group -> row -> column -> anchor (output-row order)",
            **{k: v for k, v in self.anchors(deploy).items() if k not in ("type", "order")},
            "decode": "x = regressor / input_width * anchor_w + anchor_cx (centres and keypoints), w = regressor / input_width * anchor_w; "
            "likewise y with the height; normalised, times the input size for pixels",
            "count": int(len(anchors)),
            "anchors": [[float(v) for v in row] for row in anchors],
        }

    def output_columns(self, name, deploy):
        return {
            "regressors": ["cx_offset", "cy_offset", "w", "h", *[f"{p}_offset" for p in self.keypoint_columns(deploy)]],
            "classificators": ["face_logit"],
        }.get(name, [])

    def output_groups(self, name, deploy):
        if name != "regressors":
            return super().output_groups(name, deploy)
        return {"regressors.box": slice(0, 4), "regressors.keypoints": slice(4, None)}
