"""Modulated deformable convolution: exact against a direct loop, differentiable, exportable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mobilekit.models.deform_conv import DeformConv, modulated_deform_conv2d, randomize_offsets


def loop_deform_conv2d(x, offset, mask, weight, stride, padding, dilation):
    """Straightforward float64 DCNv2 (torchvision ``deform_conv2d`` semantics), one sample at a time."""
    x, offset, mask, weight = (t.double().numpy() for t in (x, offset, mask, weight))
    n, c, h, w = x.shape
    cout, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    out = np.zeros((n, cout, ho, wo))
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                columns = np.zeros((c, kh, kw))
                for a in range(kh):
                    for e in range(kw):
                        k = a * kw + e
                        y = i * stride - padding + a * dilation + offset[b, 2 * k, i, j]
                        xx = j * stride - padding + e * dilation + offset[b, 2 * k + 1, i, j]
                        value = np.zeros(c)
                        if -1 < y < h and -1 < xx < w:
                            y0, x0 = math.floor(y), math.floor(xx)
                            for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                                for xc, wx in ((x0, 1 - (xx - x0)), (x0 + 1, xx - x0)):
                                    if 0 <= yy < h and 0 <= xc < w:
                                        value += wy * wx * x[b, :, yy, xc]
                        columns[:, a, e] = value * mask[b, k, i, j]
                out[b, :, i, j] = weight.reshape(cout, -1) @ columns.reshape(-1)
    return torch.from_numpy(out)


@pytest.mark.parametrize(("stride", "padding", "dilation", "cout"), [(1, 1, 1, 4), (1, 1, 1, 7), (2, 1, 1, 3), (1, 2, 2, 6)])
def test_matches_direct_loop_with_large_random_offsets(stride, padding, dilation, cout):
    """Both paths: Cout < C (kernel applied before sampling) and Cout >= C (sampled columns @ kernel)."""
    g = torch.Generator().manual_seed(stride * 10 + dilation)
    x = torch.randn(2, 5, 7, 9, generator=g)
    weight = torch.randn(cout, 5, 3, 3, generator=g)
    ho = (7 + 2 * padding - 2 * dilation - 1) // stride + 1
    wo = (9 + 2 * padding - 2 * dilation - 1) // stride + 1
    # Offsets of several pixels: many samples fall partly or wholly outside the image.
    offset = torch.randn(2, 18, ho, wo, generator=g) * 3
    offset[0, :4, 0, 0] = torch.tensor([-1.0, 0.0, 7.0, 9.0])  # exact integer and border positions
    mask = torch.rand(2, 9, ho, wo, generator=g) * 2
    ours = modulated_deform_conv2d(x, offset, mask, weight, None, stride, padding, dilation)
    reference = loop_deform_conv2d(x, offset, mask, weight, stride, padding, dilation)
    assert ours.shape == reference.shape
    assert (ours.double() - reference).abs().max() < 1e-5


def test_zero_offsets_and_unit_mask_are_a_plain_conv():
    layer = DeformConv(6, 4)  # offset and modulator convs start at zero -> mask 2 * sigmoid(0) = 1
    x = torch.randn(1, 6, 10, 12)
    assert torch.allclose(layer(x), F.conv2d(x, layer.regular_conv.weight, padding=1), atol=1e-5)


def test_randomize_offsets_makes_sampling_non_trivial():
    layer = DeformConv(6, 4)
    assert randomize_offsets(layer, offset_std=2.0) == 1
    x = torch.randn(1, 6, 10, 12)
    offset = layer.offset_conv(x)
    assert offset.abs().mean() > 0.5
    assert not torch.allclose(layer(x), F.conv2d(x, layer.regular_conv.weight, padding=1), atol=1e-2)


def test_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    # Offsets away from integers: bilinear sampling is smooth there.
    offset = (torch.randint(-3, 3, (1, 18, 3, 4), generator=g) + 0.25 + 0.5 * torch.rand(1, 18, 3, 4, generator=g)).double()
    offset.requires_grad_(True)
    mask = torch.rand(1, 9, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: modulated_deform_conv2d(*a), (x, offset, mask, weight), eps=1e-6, atol=1e-6)


def test_batch_elements_are_independent():
    layer = DeformConv(4, 4)
    randomize_offsets(layer, offset_std=3.0, seed=1)
    x = torch.randn(3, 4, 9, 7)
    with torch.no_grad():
        batched = layer(x)
        single = layer(x[2:3])
    assert torch.allclose(batched[2:3], single, atol=1e-6)


def test_onnx_export_matches_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    layer = DeformConv(8, 6).eval()
    randomize_offsets(layer, offset_std=3.0, seed=2)
    x = torch.randn(1, 8, 20, 24)
    torch.onnx.export(layer, (x,), tmp_path / "dcn.onnx", input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(tmp_path / "dcn.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        expected = layer(x).numpy()
    assert np.abs(onnx_out - expected).max() <= 1e-4
    import onnx

    ops = {node.op_type for node in onnx.load(tmp_path / "dcn.onnx").graph.node}
    assert "GridSample" not in ops and "Gather" in ops


@pytest.mark.slow
def test_tflite_conversion_uses_builtin_ops_and_matches(tmp_path):
    """onnx2tf converts both paths (narrowing: kernel first; widening: FULLY_CONNECTED over the
    sampled columns) to TFLite builtins, no Flex/custom ops, with fp32 parity <= 1e-4."""
    import subprocess
    import sys

    pytest.importorskip("onnx2tf")
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    torch.manual_seed(0)
    layer = torch.nn.Sequential(DeformConv(16, 8), DeformConv(8, 12)).eval()
    assert randomize_offsets(layer, offset_std=3.0, seed=4) == 2
    x = torch.randn(1, 16, 24, 32)
    torch.onnx.export(layer, (x,), tmp_path / "dcn.onnx", input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    code = f"import onnx2tf; onnx2tf.convert(input_onnx_file_path={str(tmp_path / 'dcn.onnx')!r}, output_folder_path={str(tmp_path / 'tf')!r}, non_verbose=True)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True, timeout=600)
    interpreter = interpreter_module.Interpreter(model_path=str(tmp_path / "tf" / "dcn_float32.tflite"))
    interpreter.allocate_tensors()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert {"GATHER", "FULLY_CONNECTED"} <= ops and not any(op.startswith("FLEX") or op == "CUSTOM" for op in ops), ops
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.numpy().transpose(0, 2, 3, 1).copy())
    interpreter.invoke()
    result = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    with torch.no_grad():
        expected = layer(x).numpy()
    if result.shape != expected.shape:  # onnx2tf may hand the output back channels-last
        result = result.transpose(0, 3, 1, 2)
    assert np.abs(result - expected).max() <= 1e-4


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 5), (3, 1), (2, 2)])
def test_maps_smaller_than_the_sampling_block(height, width):
    """Feature maps under 2 pixels tall or wide (small inputs at stride 32) are zero-extended, not misread."""
    g = torch.Generator().manual_seed(height * 7 + width)
    x = torch.randn(2, 5, height, width, generator=g)
    weight = torch.randn(3, 5, 3, 3, generator=g)
    offset = torch.randn(2, 18, height, width, generator=g) * 1.5
    mask = torch.rand(2, 9, height, width, generator=g) * 2
    ours = modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1)
    assert (ours.double() - loop_deform_conv2d(x, offset, mask, weight, 1, 1, 1)).abs().max() < 1e-5
