"""Writes yunet_opencv_reference.json: what OpenCV's ``cv2.FaceDetectorYN`` finds on the shared photos.

Not run by the tests (the test environment may lack OpenCV's objdetect module): ``python
tests/data/make_yunet_reference.py ../shared`` in the dev venv (opencv-python-headless). FaceDetectorYN runs
the authors' ``yunet_s_640_640.onnx`` (OpenCV Zoo's ``face_detection_yunet_2023mar.onnx``, identical sha256)
with ``setInputSize`` = the photo's size, as OpenCV Zoo's demo does: BGR pixels as they are, padded at the
bottom/right to a multiple of 32, decode, score ``sqrt(cls * obj)``, ``cv::dnn::NMSBoxes``.
"""

import json
import sys
from pathlib import Path

import cv2

PHOTOS = ("two_people_720x1280.jpg", "group_768x1024.jpg", "crowd_624x1024.jpg", "bus_1080x810.jpg", "crowd_898x1600.jpg", "crowd_1150x2048.jpg")
SCORE_THRESHOLDS = (0.9, 0.5)  # FaceDetectorYN's default, and a lower one that admits harder faces
NMS_IOU = 0.3  # FaceDetectorYN's default
TOP_K = 5000  # FaceDetectorYN's default


def main(shared: Path) -> None:
    model = shared / "weights" / "yunet_s_640_640.onnx"
    result = {
        "producer": f"opencv {cv2.__version__} cv2.FaceDetectorYN, {model.name}, input size = photo size",
        "model": "yunet_s",
        "nms_iou": NMS_IOU,
        "top_k": TOP_K,
        "columns": "score, box x1, y1, x2, y2, then 5 landmarks x, y (right eye, left eye, nose tip, right and left mouth corner)",
        "faces": {},
    }
    for threshold in SCORE_THRESHOLDS:
        detector = cv2.FaceDetectorYN.create(str(model), "", (320, 320), threshold, NMS_IOU, TOP_K)
        for photo in PHOTOS:
            image = cv2.imread(str(shared / "images" / photo))
            detector.setInputSize((image.shape[1], image.shape[0]))
            _, rows = detector.detect(image)
            faces = []
            for row in [] if rows is None else rows:
                x, y, w, h = (float(v) for v in row[:4])
                faces.append([round(float(row[14]), 6)] + [round(v, 2) for v in (x, y, x + w, y + h)] + [round(float(v), 2) for v in row[4:14]])
            result["faces"].setdefault(str(threshold), {})[photo] = faces
    (Path(__file__).parent / "yunet_opencv_reference.json").write_text(dumps(result))


def dumps(result: dict) -> str:
    """JSON with one face per line, so that the file stays short, readable and diffable."""
    header = {k: v for k, v in result.items() if k != "faces"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in header.items()] + [' "faces": {']
    for t_index, (threshold, photos) in enumerate(result["faces"].items()):
        lines.append(f"  {json.dumps(threshold)}: {{")
        for p_index, (photo, faces) in enumerate(photos.items()):
            rows = ",\n".join(f"    {json.dumps(face)}" for face in faces)
            end = "," if p_index < len(photos) - 1 else ""
            lines.append(f"   {json.dumps(photo)}: [\n{rows}\n   ]{end}" if faces else f"   {json.dumps(photo)}: []{end}")
        lines.append("  }" + ("," if t_index < len(result["faces"]) - 1 else ""))
    return "\n".join(lines + [" }", "}", ""])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
