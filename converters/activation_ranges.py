"""Activation ranges of a calibrated TFLite model, the numbers int8 scales are computed from.

TensorFlow's calibrator records each tensor's minimum and maximum over *all* calibration photos, so
one photo with an outlying activation widens that tensor's range for every photo, and the int8 step
grows with it. ``mean`` replaces each range by the mean over photos of the per-photo minimum and
maximum (what PyTorch's moving-average observers and TensorFlow's quantisation-aware training
approximate with an exponential average), so rare outliers saturate instead of coarsening every
value. The model's input tensors keep the recorded range (the pixel contract), and so do its outputs
and the ops that only reshape or concatenate into them (an app dequantises them; a clipped box
regression would move the largest faces).

Measured on FeatherFace V1 at 640, judged on three photos (282 faces): calibrated on either of two
group photos alone, 275-277 faces kept; with a bus photo added to them, 262 with TensorFlow's ranges
and 276 with ``mean`` (over every split of six photos: ``studies/int8_calibration.py``).

:func:`estimate_ranges` runs inside the TFLite worker (TensorFlow imported).
"""

from __future__ import annotations

import numpy as np

RANGE_ESTIMATORS = {
    "mean": "the mean of each calibration photo's minimum and maximum: rare outliers saturate instead of coarsening every value",
    "minmax": "minimum and maximum over all calibration photos (TensorFlow's calibrator)",
}
DEFAULT_RANGE_ESTIMATOR = "mean"


def estimate_ranges(calibrated: bytes, calib: np.ndarray, estimator: str) -> bytes:
    """``calibrated`` (TensorFlow's calibrate-only model, ranges recorded on ``calib``) with its ranges
    from ``estimator``, a key of :data:`RANGE_ESTIMATORS`."""
    if estimator not in RANGE_ESTIMATORS:
        raise ValueError(f"unknown calibration range estimator {estimator!r}; choose from {', '.join(RANGE_ESTIMATORS)}")
    if estimator == "minmax":
        return calibrated
    from mobilekit.converters.selective_int8 import head_layers, input_names

    return mean_ranges(calibrated, calib, keep_recorded={*input_names(calibrated), *head_layers(calibrated, with_shape_ops=True)})


def mean_ranges(calibrated: bytes, calib: np.ndarray, keep_recorded: set[str]) -> bytes:
    """``calibrated`` with every recorded float range, except those of the tensors named in
    ``keep_recorded``, replaced by the mean of its per-photo minima and maxima on ``calib``
    (``[N, H, W, C]``, the photos the calibration ran on)."""
    from ai_edge_litert import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = model.subgraphs[0].tensors
    recorded = [
        i for i, t in enumerate(tensors)
        if t.type == schema.TensorType.FLOAT32 and t.quantization is not None and t.quantization.min is not None and t.name.decode() not in keep_recorded
    ]  # fmt: skip
    for index, (low, high) in per_image_ranges(calibrated, calib, recorded).items():
        tensors[index].quantization.min = np.array([low.mean()], np.float32)
        tensors[index].quantization.max = np.array([high.mean()], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def per_image_ranges(model: bytes, calib: np.ndarray, tensors: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{tensor index: (per-photo minima, per-photo maxima)}`` of ``tensors``, running ``model`` in float
    on LiteRT's built-in kernels with every intermediate tensor kept."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=model,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    low = {index: np.empty(len(calib)) for index in tensors}
    high = {index: np.empty(len(calib)) for index in tensors}
    for i, image in enumerate(calib):
        interpreter.set_tensor(input_index, image[None].astype(np.float32))
        interpreter.invoke()
        for index in tensors:
            values = interpreter.tensor(index)()  # a view: no copy of the activation
            low[index][i], high[index][i] = values.min(), values.max()
            del values  # invoke() refuses to run while a view of its buffers is alive
    return {index: (low[index], high[index]) for index in tensors}
