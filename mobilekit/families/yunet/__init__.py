"""Family "yunet": YuNet (libfacedetection), anchor-free points at strides 8/16/32."""
