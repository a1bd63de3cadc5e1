"""Family "yolo": YOLOv5-Face grid anchors decoded inside the graph."""
