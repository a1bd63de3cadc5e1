"""mobilekit models: import registers every model with :func:`create_model`."""

from mobilekit.models import adyolo, blazeface, featherface, featherface_v2, retinaface, yunet  # noqa: F401  (registers models)
from mobilekit.models.base import DeployModule, FaceDetector
from mobilekit.models.registry import create_model, list_models, register_model, released_weights

__all__ = ["DeployModule", "FaceDetector", "create_model", "list_models", "register_model", "released_weights"]
