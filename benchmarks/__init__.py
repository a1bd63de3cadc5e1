"""Latency benchmarks of mobilekit models across PyTorch, ONNX Runtime and TFLite (``mobilekit benchmark``)."""
