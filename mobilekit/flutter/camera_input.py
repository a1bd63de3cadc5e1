"""NumPy mirror of ``lib/camera_input.dart``, function for function: a camera frame (Android YUV420 with
row and pixel strides, NV21, iOS BGRA8888) -> the model's input buffer in one pass over the output
pixels, with the sensor rotation, front-camera mirroring and the model's resize (stretch or letterbox).

Colour: ITU-R BT.601 limited range in the same 20-bit fixed point as OpenCV's ``COLOR_YUV2RGB_*``, so
the conversion equals OpenCV's exactly. Geometry: the frame is first turned upright (``rotation``
degrees clockwise, then mirrored left-right when ``mirror``), then resized to the model input as
:func:`mobilekit.image_io.resize_to_input` sizes and pads it (same scale and padding), sampling the
nearest source pixel. Faces map back with ``reference_decoder.undo_letterbox`` (upright preview
pixels) and :func:`to_frame` (sensor-frame pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobilekit.image_io import InputTransform

FORMATS = ("yuv420", "nv21", "bgra8888")
ROTATIONS = (0, 90, 180, 270)
# OpenCV's BT.601 YUV -> RGB coefficients, scaled by 2^20.
_SHIFT = 20
_CY, _CVR, _CVG, _CUG, _CUB = 1220542, 1673527, -852492, -409993, 2116026


@dataclass(frozen=True)
class Plane:
    """One ``CameraImage`` plane: its bytes, ``bytesPerRow`` and ``bytesPerPixel`` (1 when absent)."""

    data: bytes
    row_stride: int
    pixel_stride: int = 1


@dataclass(frozen=True)
class CameraFrame:
    """A camera frame as the Flutter camera plugin delivers it, plus how to turn it upright.

    ``yuv420``: planes Y, U, V; ``nv21``: one plane holding Y then interleaved V/U rows, both with
    ``row_stride``; ``bgra8888``: one plane of B, G, R, A bytes.
    """

    format: str
    width: int
    height: int
    planes: tuple[Plane, ...]
    rotation: int = 0  # sensor orientation: degrees clockwise that turn the frame upright
    mirror: bool = False  # front camera: mirror the upright frame left-right, as the preview shows it


def yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``yuvToRgb``: BT.601 limited range, OpenCV's fixed point; uint8 ``[..., 3]`` RGB."""
    y = np.maximum(y.astype(np.int64) - 16, 0) * _CY
    u, v = u.astype(np.int64) - 128, v.astype(np.int64) - 128
    half = 1 << (_SHIFT - 1)
    r = (y + _CVR * v + half) >> _SHIFT
    g = (y + _CVG * v + _CUG * u + half) >> _SHIFT
    b = (y + _CUB * u + half) >> _SHIFT
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def upright_size(frame: CameraFrame) -> tuple[int, int]:
    """``uprightSize``: (height, width) of the frame once rotated."""
    return (frame.width, frame.height) if frame.rotation in (90, 270) else (frame.height, frame.width)


def sensor_position(frame: CameraFrame, ux: np.ndarray, uy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sensorPosition``: upright (mirrored) pixel -> the sensor pixel it shows."""
    up_h, up_w = upright_size(frame)
    if frame.mirror:
        ux = up_w - 1 - ux
    w, h = frame.width, frame.height
    if frame.rotation == 0:
        return ux, uy
    if frame.rotation == 90:
        return uy, h - 1 - ux
    if frame.rotation == 180:
        return w - 1 - ux, h - 1 - uy
    return w - 1 - uy, ux


def read_rgb(frame: CameraFrame, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """``readRgb``: RGB of sensor pixels (``sx``, ``sy``), honouring row and pixel strides."""
    if frame.format == "bgra8888":
        plane = np.frombuffer(frame.planes[0].data, dtype=np.uint8)
        base = sy * frame.planes[0].row_stride + sx * 4
        return np.stack([plane[base + 2], plane[base + 1], plane[base]], axis=-1)
    if frame.format == "nv21":
        plane = frame.planes[0]
        data = np.frombuffer(plane.data, dtype=np.uint8)
        y = data[sy * plane.row_stride + sx]
        chroma = frame.height * plane.row_stride + (sy // 2) * plane.row_stride + (sx // 2) * 2
        return yuv_to_rgb(y, data[chroma + 1], data[chroma])
    if frame.format == "yuv420":
        y_plane, u_plane, v_plane = frame.planes
        y = np.frombuffer(y_plane.data, dtype=np.uint8)[sy * y_plane.row_stride + sx * y_plane.pixel_stride]
        u = np.frombuffer(u_plane.data, dtype=np.uint8)[(sy // 2) * u_plane.row_stride + (sx // 2) * u_plane.pixel_stride]
        v = np.frombuffer(v_plane.data, dtype=np.uint8)[(sy // 2) * v_plane.row_stride + (sx // 2) * v_plane.pixel_stride]
        return yuv_to_rgb(y, u, v)
    raise ValueError(f"unknown camera format {frame.format!r}; choose from {', '.join(FORMATS)}")


def camera_transform(frame: CameraFrame, input_hw: tuple[int, int], mode: str) -> InputTransform:
    """``cameraTransform``: the upright frame -> model input transform (``letterboxTransform``)."""
    from mobilekit.flutter.reference_decoder import letterbox_transform

    return letterbox_transform(upright_size(frame), input_hw, mode)


def camera_to_input(frame: CameraFrame, input_hw: tuple[int, int], mode: str = "stretch", pad_value: float = 0.0, dtype: str = "float32") -> np.ndarray:
    """``cameraToInput``: the model input ``[1, H, W, 3]`` RGB (float32 0-255, or uint8 for the fully
    integer model) from one pass over its pixels; outside the letterboxed picture, ``pad_value``."""
    if frame.rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {ROTATIONS}, got {frame.rotation}")
    height, width = input_hw
    up_h, up_w = upright_size(frame)
    t = camera_transform(frame, input_hw, mode)
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    new_w, new_h = round(up_w * t.scale_x), round(up_h * t.scale_y)
    inside = (xs >= t.pad_x) & (xs < t.pad_x + new_w) & (ys >= t.pad_y) & (ys < t.pad_y + new_h)
    ux = np.clip(np.floor((xs - t.pad_x + 0.5) / t.scale_x), 0, up_w - 1).astype(np.int64)
    uy = np.clip(np.floor((ys - t.pad_y + 0.5) / t.scale_y), 0, up_h - 1).astype(np.int64)
    sx, sy = sensor_position(frame, ux, uy)
    rgb = np.where(inside[..., None], read_rgb(frame, sx, sy), np.uint8(pad_value))
    return rgb[None].astype(np.uint8 if dtype == "uint8" else np.float32)


def to_frame(frame: CameraFrame, points: np.ndarray) -> np.ndarray:
    """``toFrame``: x, y pairs in upright preview pixels (``undo_letterbox``'s output) -> sensor-frame pixels."""
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    up_h, up_w = upright_size(frame)
    ux = up_w - xy[:, 0] if frame.mirror else xy[:, 0]
    uy = xy[:, 1]
    w, h = frame.width, frame.height
    sx, sy = {0: (ux, uy), 90: (uy, h - ux), 180: (w - ux, h - uy), 270: (w - uy, ux)}[frame.rotation]
    return np.stack([sx, sy], axis=1).reshape(np.shape(points))
