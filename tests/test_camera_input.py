"""``camera_input`` (the NumPy mirror of ``lib/camera_input.dart``) against OpenCV's own colour
conversions and rotations, on real photos as NV21, I420 with padded strides, semi-planar YUV420 and
BGRA frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mobilekit.flutter.camera_input import CameraFrame, Plane, camera_to_input, to_frame, upright_size
from mobilekit.flutter.reference_decoder import letterbox_transform
from mobilekit.image_io import read_image, resize_to_input

ROTATE = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


@pytest.fixture(scope="module")
def photo(shared) -> np.ndarray:
    """A real photo (BGR), cropped to 358 x 638: even (YUV 4:2:0) but not a multiple of 4 or 8."""
    rgb = read_image(shared / "images" / "two_people_720x1280.jpg")
    return cv2.cvtColor(np.ascontiguousarray(rgb[:358, :638]), cv2.COLOR_RGB2BGR)


def pad_rows(plane: np.ndarray, row_stride: int) -> bytes:
    """A 2-D byte plane with each row padded to ``row_stride`` bytes (junk in the padding)."""
    rows, width = plane.shape
    padded = np.full((rows, row_stride), 77, dtype=np.uint8)
    padded[:, :width] = plane
    return padded.tobytes()


def frames(bgr: np.ndarray) -> dict[str, tuple[dict, np.ndarray]]:
    """Each camera format of ``bgr`` (keyword arguments of CameraFrame) and OpenCV's RGB of it."""
    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    flat = i420.ravel()
    y = flat[: h * w].reshape(h, w)
    u = flat[h * w : h * w + h * w // 4].reshape(h // 2, w // 2)
    v = flat[h * w + h * w // 4 :].reshape(h // 2, w // 2)
    vu = np.empty((h // 2, w), dtype=np.uint8)
    vu[:, 0::2], vu[:, 1::2] = v, u
    uv = np.empty((h // 2, w), dtype=np.uint8)
    uv[:, 0::2], uv[:, 1::2] = u, v
    nv21 = np.concatenate([y, vu]).copy()
    stride = w + 24
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    return {
        "i420_padded": (
            dict(format="yuv420", planes=(Plane(pad_rows(y, stride), stride), Plane(pad_rows(u, w // 2 + 8), w // 2 + 8), Plane(pad_rows(v, w // 2 + 8), w // 2 + 8))),
            cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420),
        ),
        "yuv420_semiplanar": (  # Android's usual YUV_420_888: U and V planes are views of interleaved bytes
            dict(format="yuv420", planes=(Plane(pad_rows(y, stride), stride), Plane(pad_rows(uv, stride), stride, 2), Plane(pad_rows(uv, stride)[1:], stride, 2))),
            cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420),
        ),
        "nv21": (dict(format="nv21", planes=(Plane(pad_rows(nv21, stride), stride),)), cv2.cvtColor(nv21, cv2.COLOR_YUV2RGB_NV21)),
        "bgra8888": (dict(format="bgra8888", planes=(Plane(pad_rows(bgra.reshape(h, w * 4), w * 4 + 16), w * 4 + 16),)), cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGB)),
    }  # fmt: skip


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_conversion_and_orientation_equal_opencv(photo, rotation, mirror):
    h, w = photo.shape[:2]
    for name, (kwargs, rgb) in frames(photo).items():
        frame = CameraFrame(width=w, height=h, rotation=rotation, mirror=mirror, **kwargs)
        expected = rgb if rotation == 0 else cv2.rotate(rgb, ROTATE[rotation])
        expected = cv2.flip(expected, 1) if mirror else expected
        assert upright_size(frame) == expected.shape[:2]
        got = camera_to_input(frame, expected.shape[:2], "stretch", dtype="uint8")[0]
        diff = np.abs(got.astype(int) - expected.astype(int))
        assert diff.max() <= 1, (name, rotation, mirror, diff.max())


@pytest.mark.parametrize(("mode", "input_hw"), [("letterbox", (131, 97)), ("letterbox", (160, 256)), ("stretch", (97, 131))])
def test_resize_matches_the_library_geometry(photo, mode, input_hw):
    """Same scale and padding as resize_to_input; nearest sampling stays within a few levels of its bilinear."""
    h, w = photo.shape[:2]
    kwargs, rgb = frames(photo)["nv21"]
    frame = CameraFrame(width=w, height=h, rotation=90, **kwargs)
    upright = cv2.rotate(rgb, ROTATE[90])
    got = camera_to_input(frame, input_hw, mode, pad_value=114)[0]
    assert got.dtype == np.float32 and got.shape == (*input_hw, 3)
    expected, transform = resize_to_input(upright, input_hw, mode, 114)
    assert transform == letterbox_transform(upright.shape[:2], input_hw, mode)
    pad_x, pad_y = int(transform.pad_x), int(transform.pad_y)
    new_w, new_h = round(upright.shape[1] * transform.scale_x), round(upright.shape[0] * transform.scale_y)
    picture = np.zeros(input_hw, dtype=bool)
    picture[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = True
    assert (got[~picture] == 114).all() and (expected[~picture] == 114).all()
    assert np.abs(got[picture] - expected[picture].astype(np.float32)).mean() < 6


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_to_frame_inverts_the_orientation(rotation, mirror):
    frame = CameraFrame("bgra8888", 640, 480, (Plane(b"", 640 * 4),), rotation, mirror)
    up_h, up_w = upright_size(frame)
    # a 1-pixel box around upright pixel (ux, uy) is a 1-pixel box around the sensor pixel it shows
    ux, uy = np.array([3, up_w - 10]), np.array([5, up_h - 2])
    from mobilekit.flutter.camera_input import sensor_position

    sx, sy = sensor_position(frame, ux, uy)
    corners = to_frame(frame, np.stack([np.stack([ux, uy], 1), np.stack([ux + 1, uy + 1], 1)], 1))
    np.testing.assert_allclose(corners.min(axis=1), np.stack([sx, sy], 1))
    np.testing.assert_allclose(corners.max(axis=1), np.stack([sx + 1, sy + 1], 1))
