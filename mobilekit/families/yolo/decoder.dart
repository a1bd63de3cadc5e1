// The "yolo" family's decode: predictions decoded in the graph, greedy NMS.
// A part of face_decoder.dart (packages copy it to lib/family_decoder.dart); mirrored by the family's
// `app_detect` in mobilekit/families/yolo/family.py.
part of 'face_decoder.dart';

/// The decoder kind (model_meta.json) this part decodes.
const familyKind = 'yolo';

/// One image's outputs by name -> faces in model-input pixels, best first.
List<Face> familyDetect(Map<String, Float32List> outputs, List<Anchor>? anchors, DecoderSettings s) =>
    nms(decodeYolo(outputs['predictions']!, s), s);

/// YOLO `predictions` (flat [N*16], decoded in the graph: cx, cy, w, h, obj, 10 landmark values,
/// cls; normalised) -> candidate faces in model-input pixels, best first (score = obj * cls).
List<Face> decodeYolo(Float32List predictions, DecoderSettings s) {
  final n = predictions.length ~/ 16;
  final scores = [for (var i = 0; i < n; i++) predictions[16 * i + 4] * predictions[16 * i + 15]];
  final w = s.inputWidth.toDouble(), h = s.inputHeight.toDouble();
  return [
    for (final i in candidates(scores, s.scoreThreshold, s.preNmsTopK))
      Face([
        (predictions[16 * i] - predictions[16 * i + 2] / 2) * w,
        (predictions[16 * i + 1] - predictions[16 * i + 3] / 2) * h,
        (predictions[16 * i] + predictions[16 * i + 2] / 2) * w,
        (predictions[16 * i + 1] + predictions[16 * i + 3] / 2) * h,
      ], scores[i], [for (var k = 0; k < 10; k++) predictions[16 * i + 5 + k] * (k.isEven ? w : h)])
  ];
}
