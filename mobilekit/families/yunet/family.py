"""The YuNet family's declaration (libfacedetection): anchor-free points, OpenCV's decode, SimOTA loss."""

from __future__ import annotations

from mobilekit.families.base import DetectorFamily
from mobilekit.families.yunet.decode import YUNET_NMS_OFFSET, app_decode, decode_yunet
from mobilekit.families.yunet.points import PointConfig, grid_points, level_sizes


class YuNetFamily(DetectorFamily):
    """YuNet: one point per cell at strides 8/16/32, sigmoid ``cls`` and ``obj`` (score ``sqrt(cls * obj)``),
    box and keypoints in stride units from the point (:mod:`mobilekit.families.yunet.decode`)."""

    name = "yunet"
    anchor_type = PointConfig
    legacy_anchor_key = "anchors"  # YuNet arrived after DeployConfig.anchors: no older layout
    augmentation = "letterbox"
    nms_offset = YUNET_NMS_OFFSET  # cv::Rect areas, no +1
    output_meanings = {
        "cls": "per point: face classification probability (sigmoid; the IoU-aware score)",
        "obj": "per point: objectness probability (sigmoid); face score = sqrt(cls * obj)",
        "bbox": "per point: box centre offset dx, dy from the point and log width, log height, in units of the point's stride",
        "kps": "per point: 5 keypoint offsets x, y from the point, in units of the point's stride",
    }
    score_output = "cls"
    end_to_end = True
    # parity: the default ParityTolerance holds (yunet_n, authors' weights, on the 3 shared photos int8 never
    # calibrated on: every float file finds all faces, int8 113/115 at 320 and 523/527 at 640, fully int8).
    # keypoint_names: LANDMARK_NAMES (the default). The authors train on label.txt's 5 landmarks in file order,
    # so the kps columns are those landmarks one to one (OpenCV calls the same columns right eye, left eye, nose
    # tip, right and left mouth corner, naming them from the person's side).

    def default_anchors(self):
        return PointConfig()

    def decode(self, deploy, outputs, input_hw, cfg):
        points = grid_points(self.anchors_of(deploy), input_hw)
        return decode_yunet(outputs["cls"], outputs["obj"], outputs["bbox"], outputs["kps"], points, cfg)

    def app_detect(self, outputs, anchors, settings):
        return app_decode(outputs, anchors, settings)

    def criterion(self, model, image_size, loc_weight):
        """:class:`YuNetLoss` (its own box/cls/obj/landmark weights from the authors' config: ``loc_weight``,
        RetinaFace's, does not apply)."""
        from mobilekit.families.yunet.loss import YuNetLoss

        mask = self.label_keypoint_map(model.deploy).any(axis=1)
        return YuNetLoss(self.anchors_of(model.deploy), image_size, model.deploy.num_landmarks, tuple(bool(m) for m in mask))

    def end_to_end_constants(self, deploy, input_hw):
        from mobilekit.families.yunet.end_to_end import graph_constants

        return graph_constants(self.anchors_of(deploy), input_hw)

    def end_to_end_decode(self, tf, outputs, constants, input_hw):
        from mobilekit.families.yunet.end_to_end import tf_decode

        return tf_decode(tf, outputs, constants, input_hw)

    def anchors_document(self, deploy, input_hw):
        """Every point as a normalised ``cx, cy, w, h`` anchor ``(x / W, y / H, stride / W, stride / H)``, so that
        the app's generic anchor loader reads it: centre ``cx + dx * w``, size ``exp(dw) * w`` (likewise y, h),
        keypoints ``cx + kx * w``; normalised, times the input size for pixels."""
        points_cfg = self.anchors_of(deploy)
        height, width = input_hw
        points = grid_points(points_cfg, input_hw).astype("float64") / [width, height, width, height]
        return {
            "layout": "cx,cy,w,h",
            "normalized": True,
            "input_size": [height, width],
            "order": "level -> row -> column (output-row order)",
            "strides": list(points_cfg.strides),
            "offset": points_cfg.offset,
            "grid_sizes": [list(s) for s in level_sizes(points_cfg, input_hw)],
            "decode": "score = sqrt(clamp(cls, 0, 1) * clamp(obj, 0, 1)); box centre x = anchor_cx + dx * anchor_w, "
            "y = anchor_cy + dy * anchor_h; width = exp(dw) * anchor_w, height = exp(dh) * anchor_h; keypoint "
            "x = anchor_cx + kx * anchor_w, y = anchor_cy + ky * anchor_h; normalised, times the input size for pixels",
            "count": len(points),
            "anchors": [[float(v) for v in row] for row in points],
        }

    def output_columns(self, name, deploy):
        return {
            "cls": ["face_cls_prob"],
            "obj": ["objectness_prob"],
            "bbox": ["dx", "dy", "log_w", "log_h"],
            "kps": [f"{p}_offset" for p in self.keypoint_columns(deploy)],
        }.get(name, [])
