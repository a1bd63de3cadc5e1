// The "yunet" family's decode: YuNet's points, cv::FaceDetectorYN's score and NMS on integer rectangles.
// A part of face_decoder.dart (packages copy it to lib/family_decoder.dart); mirrored by the family's
// `app_detect` in mobilekit/families/yunet/family.py.
part of 'face_decoder.dart';

/// The decoder kind (model_meta.json) this part decodes.
const familyKind = 'yunet';

/// One image's outputs by name -> faces in model-input pixels, best first.
List<Face> familyDetect(Map<String, Float32List> outputs, List<Anchor>? anchors, DecoderSettings s) =>
    integerNms(decodeYuNet(outputs['cls']!, outputs['obj']!, outputs['bbox']!, outputs['kps']!, anchors!, s), s);

/// YuNet outputs (one image, flat row-major: cls [N], obj [N] after the sigmoid, bbox [N*4], kps [N*2L]) and
/// anchors.json's points (x / W, y / H, stride / W, stride / H) -> candidate faces in model-input pixels, best
/// first: score = sqrt(cls * obj) (each clamped to 0..1) > threshold, centre = point + (dx, dy) * stride,
/// size = exp(dw, dh) * stride, keypoint = point + offset * stride.
List<Face> decodeYuNet(Float32List cls, Float32List obj, Float32List bbox, Float32List kps, List<Anchor> anchors, DecoderSettings s) {
  final n = anchors.length, values = kps.length ~/ n;
  final w = s.inputWidth.toDouble(), h = s.inputHeight.toDouble();
  final scores = [for (var i = 0; i < n; i++) math.sqrt(cls[i].clamp(0.0, 1.0) * obj[i].clamp(0.0, 1.0))];
  final faces = <Face>[];
  for (final i in candidates(scores, s.scoreThreshold, s.preNmsTopK)) {
    final a = anchors[i];
    final cx = a.cx + bbox[4 * i] * a.w, cy = a.cy + bbox[4 * i + 1] * a.h;
    final bw = math.exp(bbox[4 * i + 2]) * a.w, bh = math.exp(bbox[4 * i + 3]) * a.h;
    faces.add(Face([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], scores[i], [
      for (var k = 0; k < values; k++) k.isEven ? (a.cx + kps[values * i + k] * a.w) * w : (a.cy + kps[values * i + k] * a.h) * h
    ]));
  }
  return faces;
}

/// cv::dnn::NMSBoxes as FaceDetectorYN calls it: greedy NMS (mobilekit.nms) over faces sorted best first,
/// measured on integer rectangles (x1, y1, width, height each truncated toward zero), keeping the float faces.
List<Face> integerNms(List<Face> sorted, DecoderSettings s) {
  List<double> truncated(List<double> b) {
    final x1 = b[0].truncateToDouble(), y1 = b[1].truncateToDouble();
    return [x1, y1, x1 + (b[2] - b[0]).truncateToDouble(), y1 + (b[3] - b[1]).truncateToDouble()];
  }
  final rects = [for (final f in sorted) truncated(f.box)];
  final o = s.nmsOffset;
  double area(List<double> b) => (b[2] - b[0] + o) * (b[3] - b[1] + o);
  final kept = <int>[];
  var rest = [for (var i = 0; i < sorted.length; i++) i];
  while (rest.isNotEmpty && kept.length < s.maxDetections) {
    final best = rest.first;
    kept.add(best);
    rest = [
      for (final i in rest.skip(1))
        if (_iou(rects[best], rects[i], o, area) <= s.nmsIou) i
    ];
  }
  return [for (final i in kept) sorted[i]];
}
