// The "blazeface" family's decode: MediaPipe's anchors and score clipping, weighted NMS.
// A part of face_decoder.dart (packages copy it to lib/family_decoder.dart); mirrored by the family's
// `app_detect` in mobilekit/families/blazeface/family.py.
part of 'face_decoder.dart';

/// The decoder kind (model_meta.json) this part decodes.
const familyKind = 'blazeface';

/// One image's outputs by name -> faces in model-input pixels, best first.
List<Face> familyDetect(Map<String, Float32List> outputs, List<Anchor>? anchors, DecoderSettings s) =>
    weightedNms(decodeBlazeFace(outputs['regressors']!, outputs['classificators']!, anchors!, s), s);

/// BlazeFace outputs (regressors [N*16]: box cx, cy, w, h and keypoints x, y, input pixels relative to
/// the anchor; classificators [N]: logits) -> candidate faces in model-input pixels, best first
/// (MediaPipe's TensorsToDetections: score = sigmoid(clip(logit, +-score_clipping)) >= threshold, boxes with a
/// negative size dropped).
List<Face> decodeBlazeFace(Float32List regressors, Float32List logits, List<Anchor> anchors, DecoderSettings s) {
  final n = anchors.length, values = regressors.length ~/ n;
  final w = s.inputWidth.toDouble(), h = s.inputHeight.toDouble();
  final clip = s.scoreClipping ?? double.infinity;
  final scores = [for (var i = 0; i < n; i++) 1.0 / (1.0 + math.exp(-logits[i].clamp(-clip, clip)))];
  final idx = <int>[for (var i = 0; i < n; i++) if (scores[i] >= s.scoreThreshold && regressors[values * i + 2] >= 0 && regressors[values * i + 3] >= 0) i];
  idx.sort((a, b) => scores[a] != scores[b] ? scores[b].compareTo(scores[a]) : a.compareTo(b));
  final faces = <Face>[];
  for (final i in idx.take(s.preNmsTopK)) {
    final a = anchors[i], r = values * i;
    final cx = regressors[r] / w * a.w + a.cx, cy = regressors[r + 1] / h * a.h + a.cy;
    final bw = regressors[r + 2] / w * a.w, bh = regressors[r + 3] / h * a.h;
    faces.add(Face([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], scores[i], [
      for (var k = 4; k < values; k++) k.isEven ? (regressors[r + k] / w * a.w + a.cx) * w : (regressors[r + k] / h * a.h + a.cy) * h
    ]));
  }
  return faces;
}

/// MediaPipe's weighted NMS (mobilekit.nms.weighted_nms) over faces sorted best first: the best face and
/// every face with IoU > nmsIou (itself included) leave together as their score-weighted mean box and
/// landmarks, with the best face's score. Keeps at most maxDetections.
List<Face> weightedNms(List<Face> sorted, DecoderSettings s) {
  double area(List<double> b) => (b[2] - b[0]) * (b[3] - b[1]);
  final kept = <Face>[];
  var rest = List<Face>.of(sorted);
  while (rest.isNotEmpty && kept.length < s.maxDetections) {
    final best = rest.first;
    final cluster = [for (final f in rest) if (_iou(best.box, f.box, 0, area) > s.nmsIou) f];
    rest = [for (final f in rest) if (!(_iou(best.box, f.box, 0, area) > s.nmsIou)) f];
    if (cluster.isEmpty) {
      kept.add(best); // zero-area box: overlaps nothing, not even itself; MediaPipe stops here
      break;
    }
    final total = cluster.fold<double>(0, (t, f) => t + f.score);
    List<double> blend(List<double> Function(Face) values) => [
          for (var k = 0; k < values(best).length; k++) cluster.fold<double>(0, (t, f) => t + values(f)[k] * f.score) / total
        ];
    kept.add(Face(blend((f) => f.box), best.score, blend((f) => f.landmarks)));
  }
  return kept;
}
