"""The YOLOv5-Face family's declaration: grid anchors, the in-graph decode, loss, output meanings."""

from __future__ import annotations

from mobilekit.families.base import DetectorFamily
from mobilekit.families.yolo.anchors import YoloAnchorConfig
from mobilekit.families.yolo.decode import YOLO_NMS_OFFSET, level_sizes, num_predictions, yolo_detections


class YoloFamily(DetectorFamily):
    """YOLOv5-Face grid anchors, decoded inside the graph to one ``predictions`` output."""

    name = "yolo"
    anchor_type = YoloAnchorConfig
    legacy_anchor_key = "yolo_anchors"
    augmentation = "letterbox"
    nms_offset = YOLO_NMS_OFFSET  # YOLO's x2 - x1
    output_meanings = {
        "predictions": "decoded predictions per grid anchor, normalised 0-1 (cx, cy, w, h, objectness, landmarks x/y, face class)",
    }
    score_output = "predictions"

    def decode(self, deploy, outputs, input_hw, cfg):
        return yolo_detections(outputs["predictions"], input_hw, cfg)

    def app_detect(self, outputs, anchors, settings):
        return yolo_detections(outputs["predictions"], settings.input_hw, settings.postprocess_config())

    def criterion(self, model, image_size, loc_weight):
        from mobilekit.families.yolo.loss import YoloFaceLoss

        return YoloFaceLoss(model)

    def anchors_document(self, deploy, input_hw):
        grid = self.anchors_of(deploy)
        height, width = input_hw
        return {
            "layout": "yolo_grid",
            "normalized": True,
            "decoded_in_graph": True,
            "note": "the 'predictions' output is already decoded (cx, cy, w, h normalised 0-1): no anchor math in the app",
            "input_size": [height, width],
            "order": "level -> row -> column -> anchor (output-row order)",
            "strides": list(grid.strides),
            "anchors_wh_pixels": [[list(a) for a in level] for level in grid.anchors],
            "grid_sizes": [list(s) for s in level_sizes(grid, input_hw)],
            "count": num_predictions(grid, input_hw),
        }

    def output_columns(self, name, deploy):
        if name == "predictions":
            return ["cx", "cy", "w", "h", "objectness", *self.keypoint_columns(deploy), "face_class_prob"]
        return []

    def output_groups(self, name, deploy):
        if name != "predictions":
            return super().output_groups(name, deploy)
        keypoints_end = 5 + 2 * deploy.num_landmarks
        return {
            "predictions.box": slice(0, 4),
            "predictions.objectness": slice(4, 5),
            "predictions.keypoints": slice(5, keypoints_end),
            "predictions.class": slice(keypoints_end, None),
        }
