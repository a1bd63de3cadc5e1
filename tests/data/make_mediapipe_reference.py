"""Writes mediapipe_face_detection.json: what MediaPipe itself finds on the shared photos.

Not run by the tests (it needs the ``mediapipe`` package, which conflicts with mobilekit's pins):
``python -m venv /tmp/mp && /tmp/mp/bin/pip install mediapipe==0.10.14 &&
/tmp/mp/bin/python tests/data/make_mediapipe_reference.py ../shared``. MediaPipe's legacy FaceDetection
solution runs the same two ``.tflite`` files as ``../shared/weights`` (identical sha256) through its whole
graph: ImageToTensor letterbox, inference, anchors, TensorsToDetections, weighted NMS, projection.
"""

import json
import sys
from pathlib import Path

import cv2
import mediapipe as mp

PHOTOS = ("two_people_720x1280.jpg", "group_768x1024.jpg", "crowd_624x1024.jpg", "bus_1080x810.jpg", "crowd_898x1600.jpg", "crowd_1150x2048.jpg")
MODELS = {"blazeface_short": (0, 0.5), "blazeface_full": (1, 0.6)}  # model_selection, MediaPipe's min score


def main(shared: Path) -> None:
    result = {"producer": f"mediapipe {mp.__version__} solutions.face_detection (CPU graph)", "models": {}}
    for name, (selection, min_score) in MODELS.items():
        with mp.solutions.face_detection.FaceDetection(model_selection=selection, min_detection_confidence=min_score) as detector:
            for photo in PHOTOS:
                image = cv2.cvtColor(cv2.imread(str(shared / "images" / photo)), cv2.COLOR_BGR2RGB)
                height, width = image.shape[:2]
                faces = []
                for det in detector.process(image).detections or []:
                    box = det.location_data.relative_bounding_box
                    faces.append({
                        "score": round(det.score[0], 6),
                        "box_xyxy": [round(v, 3) for v in (box.xmin * width, box.ymin * height, (box.xmin + box.width) * width, (box.ymin + box.height) * height)],
                        "landmarks_xy": [round(v, 3) for k in det.location_data.relative_keypoints for v in (k.x * width, k.y * height)],
                    })
                result["models"].setdefault(name, {})[photo] = faces
    (Path(__file__).parent / "mediapipe_face_detection.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
