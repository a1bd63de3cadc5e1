"""Export and parity: PyTorch -> ONNX -> simplified ONNX -> TFLite, and the runners that check them.

Python entry points::

    from mobilekit.converters import export_model, open_runtime, check_artefacts
    paths = export_model(model, 640, "exports", formats=("onnx", "onnx_sim", "fp32", "fp16", "int8", "int8_full"),
                         calib_images="photos/")
    outputs = open_runtime(paths[2]).run(rgb_nhwc)   # {"loc": ..., "conf": ..., "landmarks": ...}
"""

from mobilekit.converters.export import DEFAULT_FORMATS, FORMATS, export_model, resolve_formats
from mobilekit.converters.model_source import build_source_model, randomize_for_testing, source_metadata
from mobilekit.converters.parity import check_artefacts
from mobilekit.converters.runtimes import OnnxRuntime, TFLiteRuntime, TorchRuntime, open_runtime

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "OnnxRuntime",
    "TFLiteRuntime",
    "TorchRuntime",
    "build_source_model",
    "check_artefacts",
    "export_model",
    "open_runtime",
    "randomize_for_testing",
    "resolve_formats",
    "source_metadata",
]
