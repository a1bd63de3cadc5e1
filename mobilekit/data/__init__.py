"""Training data: RetinaFace-layout labels, the face dataset and its augmentation, synthetic faces."""
