// Camera frame -> model input for mobilekit TFLite models, in one pass over the output pixels.
//
// Mirrored function for function by mobilekit.flutter.camera_input (NumPy), which is tested against
// OpenCV's own conversions: yuvToRgb, uprightSize, sensorPosition, readRgb, cameraTransform,
// cameraToInput, toFrame.
//
// Formats, as the Flutter camera plugin delivers CameraImage planes:
//   'yuv420'   Android YUV_420_888: planes Y, U, V, each with bytesPerRow and bytesPerPixel (1 or 2)
//   'nv21'     Android with ImageFormatGroup.nv21: one plane, Y rows then interleaved V/U rows
//   'bgra8888' iOS: one plane of B, G, R, A bytes
// From a CameraImage `image`:
//   CameraFrame(format, image.width, image.height,
//       [for (final p in image.planes) CameraPlane(p.bytes, p.bytesPerRow, p.bytesPerPixel ?? 1)],
//       rotation: controller.description.sensorOrientation, mirror: isFrontCamera)
// The frame is turned upright (rotation degrees clockwise, then mirrored when `mirror`, as the preview
// shows it), then resized as model_meta.json's input.resize says (stretch, or centred letterbox with its
// pad value), sampling the nearest pixel. Faces decoded by face_decoder.dart map back with
// undoLetterbox(face, cameraTransform(...)) to upright preview pixels, and with toFrame to sensor pixels.

import 'dart:typed_data';

import 'face_decoder.dart';

class CameraPlane {
  final Uint8List bytes;
  final int rowStride, pixelStride;
  const CameraPlane(this.bytes, this.rowStride, [this.pixelStride = 1]);
}

class CameraFrame {
  final String format;
  final int width, height;
  final List<CameraPlane> planes;
  final int rotation; // degrees clockwise that turn the frame upright: 0, 90, 180 or 270
  final bool mirror; // front camera: mirror the upright frame left-right
  const CameraFrame(this.format, this.width, this.height, this.planes, {this.rotation = 0, this.mirror = false});
}

// OpenCV's BT.601 limited-range coefficients, scaled by 2^20.
const int _shift = 20, _cy = 1220542, _cvr = 1673527, _cvg = -852492, _cug = -409993, _cub = 2116026;

int _clamp8(int v) => v < 0 ? 0 : (v > 255 ? 255 : v);

/// BT.601 limited range in OpenCV's fixed point: [r, g, b].
List<int> yuvToRgb(int y, int u, int v) {
  final yy = (y - 16 < 0 ? 0 : y - 16) * _cy, uu = u - 128, vv = v - 128;
  const half = 1 << (_shift - 1);
  return [
    _clamp8((yy + _cvr * vv + half) >> _shift),
    _clamp8((yy + _cvg * vv + _cug * uu + half) >> _shift),
    _clamp8((yy + _cub * uu + half) >> _shift),
  ];
}

/// [height, width] of the frame once rotated upright.
List<int> uprightSize(CameraFrame f) =>
    (f.rotation == 90 || f.rotation == 270) ? [f.width, f.height] : [f.height, f.width];

/// Upright (mirrored) pixel -> the sensor pixel it shows: [x, y].
List<int> sensorPosition(CameraFrame f, int ux, int uy) {
  final upW = uprightSize(f)[1];
  if (f.mirror) ux = upW - 1 - ux;
  switch (f.rotation) {
    case 0:
      return [ux, uy];
    case 90:
      return [uy, f.height - 1 - ux];
    case 180:
      return [f.width - 1 - ux, f.height - 1 - uy];
    default:
      return [f.width - 1 - uy, ux];
  }
}

/// RGB of sensor pixel (sx, sy), honouring row and pixel strides: [r, g, b].
List<int> readRgb(CameraFrame f, int sx, int sy) {
  switch (f.format) {
    case 'bgra8888':
      final p = f.planes[0];
      final i = sy * p.rowStride + sx * 4;
      return [p.bytes[i + 2], p.bytes[i + 1], p.bytes[i]];
    case 'nv21':
      final p = f.planes[0];
      final chroma = f.height * p.rowStride + (sy ~/ 2) * p.rowStride + (sx ~/ 2) * 2;
      return yuvToRgb(p.bytes[sy * p.rowStride + sx], p.bytes[chroma + 1], p.bytes[chroma]);
    case 'yuv420':
      final y = f.planes[0], u = f.planes[1], v = f.planes[2];
      return yuvToRgb(
        y.bytes[sy * y.rowStride + sx * y.pixelStride],
        u.bytes[(sy ~/ 2) * u.rowStride + (sx ~/ 2) * u.pixelStride],
        v.bytes[(sy ~/ 2) * v.rowStride + (sx ~/ 2) * v.pixelStride],
      );
  }
  throw ArgumentError('unknown camera format ${f.format} (yuv420, nv21 or bgra8888)');
}

/// The upright frame -> model input transform (letterboxTransform of the upright size).
LetterboxTransform cameraTransform(CameraFrame f, int inputHeight, int inputWidth, {String mode = 'letterbox'}) {
  final up = uprightSize(f);
  return letterboxTransform(up[0], up[1], inputHeight, inputWidth, mode: mode);
}

/// The model input [1, H, W, 3] RGB, row-major: Float32List of 0-255 values, or Uint8List when `uint8`
/// (the fully integer model); outside the letterboxed picture, `padValue`.
TypedData cameraToInput(CameraFrame f, int inputHeight, int inputWidth,
    {String mode = 'stretch', double padValue = 0, bool uint8 = false}) {
  if (![0, 90, 180, 270].contains(f.rotation)) throw ArgumentError('rotation must be 0, 90, 180 or 270');
  final up = uprightSize(f);
  final upH = up[0], upW = up[1];
  final t = cameraTransform(f, inputHeight, inputWidth, mode: mode);
  final newW = (upW * t.scaleX).round(), newH = (upH * t.scaleY).round();
  final padX = t.padX.toInt(), padY = t.padY.toInt();
  final n = inputHeight * inputWidth * 3;
  final bytes = uint8 ? Uint8List(n) : null;
  final floats = uint8 ? null : Float32List(n);
  void put(int i, int r, int g, int b) {
    if (bytes != null) {
      bytes[i] = r;
      bytes[i + 1] = g;
      bytes[i + 2] = b;
    } else {
      floats![i] = r.toDouble();
      floats[i + 1] = g.toDouble();
      floats[i + 2] = b.toDouble();
    }
  }

  final pad = padValue.round();
  var o = 0;
  for (var y = 0; y < inputHeight; y++) {
    final inRows = y >= padY && y < padY + newH;
    final uy = ((y - padY + 0.5) / t.scaleY).floor().clamp(0, upH - 1).toInt();
    for (var x = 0; x < inputWidth; x++) {
      if (inRows && x >= padX && x < padX + newW) {
        final ux = ((x - padX + 0.5) / t.scaleX).floor().clamp(0, upW - 1).toInt();
        final s = sensorPosition(f, ux, uy);
        final rgb = readRgb(f, s[0], s[1]);
        put(o, rgb[0], rgb[1], rgb[2]);
      } else {
        put(o, pad, pad, pad);
      }
      o += 3;
    }
  }
  return bytes ?? floats!;
}

/// x, y pairs in upright preview pixels (undoLetterbox's output) -> sensor-frame pixels.
List<double> toFrame(CameraFrame f, List<double> xy) {
  final upW = uprightSize(f)[1];
  final result = <double>[];
  for (var i = 0; i < xy.length; i += 2) {
    final ux = f.mirror ? upW - xy[i] : xy[i], uy = xy[i + 1];
    switch (f.rotation) {
      case 0:
        result.addAll([ux, uy]);
        break;
      case 90:
        result.addAll([uy, f.height - ux]);
        break;
      case 180:
        result.addAll([f.width - ux, f.height - uy]);
        break;
      default:
        result.addAll([f.width - uy, ux]);
    }
  }
  return result;
}
