"""Training: prior matching, losses, distillation and the training loop (``train(config)``)."""

from mobilekit.training.config import TrainConfig, load_config
from mobilekit.training.loop import TrainResult, TrainingDiverged, train

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "load_config", "train"]
