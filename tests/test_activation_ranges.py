"""Calibration range estimators on a small TensorFlow model: ``mean`` against TensorFlow's own per-photo
calibration, the input and output ranges kept, and the int8 step it buys when one photo is an outlier."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _saved_model(folder):
    """conv 3x3 (8 channels) -> ReLU -> conv 1x1 (2 channels): NHWC float input ``images`` [1, 16, 16, 3]."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    first = tf.constant(rng.normal(size=(3, 3, 3, 8)).astype(np.float32) / 20)
    second = tf.constant(rng.normal(size=(1, 1, 8, 2)).astype(np.float32))

    class Small(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32, name="images")])
        def serve(self, images):
            hidden = tf.nn.relu(tf.nn.conv2d(images, first, 1, "SAME"))
            return {"out": tf.nn.conv2d(hidden, second, 1, "SAME")}

    module = Small()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


def _ranges(model: bytes) -> dict[str, tuple[float, float]]:
    from tensorflow.lite.tools import flatbuffer_utils

    tensors = flatbuffer_utils.convert_bytearray_to_object(bytearray(model)).subgraphs[0].tensors
    return {t.name.decode(): (float(t.quantization.min[0]), float(t.quantization.max[0])) for t in tensors if t.quantization is not None and t.quantization.min is not None}


def test_mean_ranges_average_each_photos_range_and_keep_inputs_and_outputs(tmp_path):
    from mobilekit.converters.activation_ranges import estimate_ranges
    from mobilekit.converters.onnx2tf_child import calibrate
    from mobilekit.converters.selective_int8 import head_layers, input_names

    saved = _saved_model(tmp_path / "small")
    rng = np.random.default_rng(1)
    calib = rng.uniform(60, 120, size=(3, 16, 16, 3)).astype(np.float32)
    calib[2, 4:8, 4:8] = 255.0  # one photo with an outlying bright patch
    minmax = calibrate(saved, calib, "images")
    assert estimate_ranges(minmax, calib, "minmax") == minmax
    mean = estimate_ranges(minmax, calib, "mean")
    per_photo = [_ranges(calibrate(saved, calib[i : i + 1], "images")) for i in range(len(calib))]
    recorded, estimated = _ranges(minmax), _ranges(mean)
    kept = set(input_names(minmax)) | set(head_layers(minmax, with_shape_ops=True))
    assert kept and set(recorded) == set(estimated) and set(recorded) - kept
    for name, (low, high) in recorded.items():
        # TensorFlow's range over all photos is the widest of its per-photo ranges
        assert low == pytest.approx(min(r[name][0] for r in per_photo), abs=1e-5) and high == pytest.approx(max(r[name][1] for r in per_photo), rel=1e-6)
        if name in kept:
            assert estimated[name] == (low, high), name
        else:
            expected = (np.mean([r[name][0] for r in per_photo]), np.mean([r[name][1] for r in per_photo]))
            assert estimated[name] == pytest.approx(expected, rel=1e-5, abs=1e-5), name
    narrower = [name for name in set(recorded) - kept if estimated[name][1] - estimated[name][0] < 0.8 * (recorded[name][1] - recorded[name][0])]
    assert narrower, "the outlying photo should widen TensorFlow's ranges of the hidden layer"


def test_unknown_range_estimator_is_named():
    from mobilekit.converters.activation_ranges import estimate_ranges

    with pytest.raises(ValueError, match="unknown calibration range estimator 'median'; choose from mean, minmax"):
        estimate_ranges(b"", np.zeros((1, 16, 16, 3), np.float32), "median")
