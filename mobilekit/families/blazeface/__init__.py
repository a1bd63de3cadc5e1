"""Family "blazeface": MediaPipe's BlazeFace (SSD anchors, weighted NMS)."""
