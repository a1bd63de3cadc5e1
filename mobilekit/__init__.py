"""mobilekit: lightweight face detectors from PyTorch training to a Flutter app."""

__version__ = "0.1.0"
