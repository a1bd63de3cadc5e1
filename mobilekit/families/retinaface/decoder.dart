// The "retinaface" family's decode: priors, the box coding, greedy NMS.
// A part of face_decoder.dart (packages copy it to lib/family_decoder.dart); mirrored by the family's
// `app_detect` in mobilekit/families/retinaface/family.py.
part of 'face_decoder.dart';

/// The decoder kind (model_meta.json) this part decodes.
const familyKind = 'retinaface';

/// One image's outputs by name -> faces in model-input pixels, best first.
List<Face> familyDetect(Map<String, Float32List> outputs, List<Anchor>? anchors, DecoderSettings s) =>
    nms(decode(outputs['loc']!, outputs['conf']!, outputs['landmarks']!, anchors!, s), s);

/// Priors in output-row order (level -> row -> column -> min size), like mobilekit.priors.
List<Anchor> generateAnchors(List<List<int>> minSizes, List<int> steps, int height, int width, {bool clip = false}) {
  final anchors = <Anchor>[];
  for (var level = 0; level < steps.length; level++) {
    final step = steps[level];
    final rows = (height / step).ceil(), cols = (width / step).ceil();
    for (var r = 0; r < rows; r++) {
      for (var c = 0; c < cols; c++) {
        for (final size in minSizes[level]) {
          var a = [(c + 0.5) * step / width, (r + 0.5) * step / height, size / width, size / height];
          if (clip) a = [for (final v in a) v.clamp(0.0, 1.0).toDouble()];
          anchors.add(Anchor(a[0], a[1], a[2], a[3]));
        }
      }
    }
  }
  return anchors;
}

/// RetinaFace outputs (one image, flat row-major: loc [N*4], conf [N*2], landmarks [N*10]) ->
/// candidate faces in model-input pixels, best first (mobilekit.box_coder decode).
List<Face> decode(Float32List loc, Float32List conf, Float32List landmarks, List<Anchor> anchors, DecoderSettings s) {
  final n = anchors.length;
  final scores = [for (var i = 0; i < n; i++) conf[2 * i + 1].toDouble()];
  final w = s.inputWidth.toDouble(), h = s.inputHeight.toDouble();
  final v0 = s.variances[0], v1 = s.variances[1];
  final faces = <Face>[];
  for (final i in candidates(scores, s.scoreThreshold, s.preNmsTopK)) {
    final a = anchors[i];
    final cx = a.cx + loc[4 * i] * v0 * a.w, cy = a.cy + loc[4 * i + 1] * v0 * a.h;
    final bw = a.w * math.exp(loc[4 * i + 2] * v1), bh = a.h * math.exp(loc[4 * i + 3] * v1);
    final x1 = cx - bw / 2, y1 = cy - bh / 2;
    final points = <double>[];
    final values = landmarks.length ~/ n; // 2 per landmark
    for (var k = 0; k < values ~/ 2; k++) {
      points.add((a.cx + landmarks[values * i + 2 * k] * v0 * a.w) * w);
      points.add((a.cy + landmarks[values * i + 2 * k + 1] * v0 * a.h) * h);
    }
    faces.add(Face([x1 * w, y1 * h, (x1 + bw) * w, (y1 + bh) * h], scores[i], points));
  }
  return faces;
}
