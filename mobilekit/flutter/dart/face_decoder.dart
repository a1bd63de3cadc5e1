// Face decoder for mobilekit TFLite models: settings, anchors, NMS, letterbox undo; the model family's own
// decode is the part family_decoder.dart (copied from mobilekit/families/<family>/decoder.dart).
//
// Function for function the mirror of mobilekit/flutter/reference_decoder.py and the family's `app_detect`
// (the tested contract): loadAnchors, nms, detect, endToEndDetections, letterboxTransform, undoLetterbox.
// Dart computes in float64 where NumPy uses float32, so results agree to ~1e-4 px;
// golden/expected_detections.json is the check.
import 'dart:math' as math;
import 'dart:typed_data';

part 'family_decoder.dart';

/// A prior box: centre and size, normalised 0-1 by the model input width/height.
class Anchor {
  final double cx, cy, w, h;
  const Anchor(this.cx, this.cy, this.w, this.h);
}

/// A face in pixels: box (x1, y1, x2, y2), score, landmarks x0, y0, x1, y1, ... in the order of
/// model_meta.json's landmark_order (5 for RetinaFace/YOLO models, 6 for BlazeFace).
class Face {
  final List<double> box;
  final double score;
  final List<double> landmarks;
  const Face(this.box, this.score, this.landmarks);

  Map<String, Object> toJson() => {'box_xyxy': box, 'score': score, 'landmarks_xy': landmarks};
}

/// The `decoder` block of model_meta.json.
class DecoderSettings {
  final String kind; // retinaface | yolo | blazeface | end_to_end
  final int inputHeight, inputWidth;
  final List<double> variances; // the priors' box coding (RetinaFace kinds); empty for the others
  final double scoreThreshold, nmsIou, nmsOffset;
  final double? scoreClipping; // logits clipped to +-this before the sigmoid (BlazeFace); null: no clipping
  final int preNmsTopK, maxDetections;

  DecoderSettings.fromMeta(Map<String, dynamic> meta)
      : kind = meta['decoder']['kind'] as String,
        inputHeight = (meta['input']['shape'][1] as num).toInt(),
        inputWidth = (meta['input']['shape'][2] as num).toInt(),
        variances = [for (final v in (meta['decoder']['variances'] as List?) ?? const []) (v as num).toDouble()],
        scoreThreshold = (meta['decoder']['score_threshold'] as num).toDouble(),
        nmsIou = (meta['decoder']['nms_iou'] as num).toDouble(),
        nmsOffset = (meta['decoder']['nms_offset'] as num).toDouble(),
        preNmsTopK = (meta['decoder']['pre_nms_top_k'] as num).toInt(),
        scoreClipping = (meta['decoder']['score_clipping'] as num?)?.toDouble(),
        maxDetections = (meta['decoder']['max_detections'] as num).toInt();
}

/// The `anchors` of anchors.json (normalised cx, cy, w, h).
List<Anchor> loadAnchors(Map<String, dynamic> json) {
  if (json['layout'] != 'cx,cy,w,h' || json['normalized'] != true) {
    throw FormatException('anchors.json layout ${json['layout']} is not normalised cx,cy,w,h');
  }
  return [
    for (final a in json['anchors'] as List)
      Anchor((a[0] as num).toDouble(), (a[1] as num).toDouble(), (a[2] as num).toDouble(), (a[3] as num).toDouble())
  ];
}

/// Indices with score > threshold, best first (ties keep row order), at most topK.
List<int> candidates(List<double> scores, double threshold, int topK) {
  final idx = <int>[for (var i = 0; i < scores.length; i++) if (scores[i] > threshold) i];
  // Dart's List.sort is not stable: break ties by index to match NumPy's stable argsort.
  idx.sort((a, b) => scores[a] != scores[b] ? scores[b].compareTo(scores[a]) : a.compareTo(b));
  return idx.length > topK ? idx.sublist(0, topK) : idx;
}

/// Greedy NMS over faces sorted best first (mobilekit.nms): area = (x2 - x1 + offset) * (y2 - y1 + offset),
/// a face is dropped when its IoU with a kept face is > iou. Keeps at most maxDetections.
List<Face> nms(List<Face> sorted, DecoderSettings s) {
  final o = s.nmsOffset;
  double area(List<double> b) => (b[2] - b[0] + o) * (b[3] - b[1] + o);
  final kept = <Face>[];
  var rest = List<Face>.of(sorted);
  while (rest.isNotEmpty && kept.length < s.maxDetections) {
    final best = rest.first;
    kept.add(best);
    rest = [
      for (final f in rest.skip(1))
        if (_iou(best.box, f.box, o, area) <= s.nmsIou) f
    ];
  }
  return kept;
}

double _iou(List<double> a, List<double> b, double o, double Function(List<double>) area) {
  final w = math.max(math.min(a[2], b[2]) - math.max(a[0], b[0]) + o, 0.0);
  final h = math.max(math.min(a[3], b[3]) - math.max(a[1], b[1]) + o, 0.0);
  final inter = w * h, union = area(a) + area(b) - inter;
  return union > 0 ? inter / union : 0.0;
}

/// Outputs of an end-to-end model (boxes [1,K,4], scores [1,K], landmarks [1,K,2L], num_detections [1]).
List<Face> endToEndDetections(Map<String, Float32List> outputs) {
  final count = outputs['num_detections']![0].toInt();
  final boxes = outputs['boxes']!, scores = outputs['scores']!, lms = outputs['landmarks']!;
  final values = lms.length ~/ scores.length;
  return [
    for (var i = 0; i < count; i++)
      Face([for (var k = 0; k < 4; k++) boxes[4 * i + k].toDouble()], scores[i].toDouble(),
          [for (var k = 0; k < values; k++) lms[values * i + k].toDouble()])
  ];
}

/// One image's outputs by name -> faces in model-input pixels, best first: the end-to-end model's rows, or
/// the decoder of the model's family (family_decoder.dart, `familyDetect`), which checks the kind.
List<Face> detect(Map<String, Float32List> outputs, List<Anchor>? anchors, DecoderSettings s) {
  if (s.kind == 'end_to_end') return endToEndDetections(outputs);
  if (s.kind != familyKind) {
    throw ArgumentError('model_meta.json names decoder kind ${s.kind}, but lib/family_decoder.dart decodes $familyKind');
  }
  return familyDetect(outputs, anchors, s);
}

/// How frame pixels map to model-input pixels: input = frame * scale + pad.
class LetterboxTransform {
  final double scaleX, scaleY, padX, padY;
  const LetterboxTransform(this.scaleX, this.scaleY, this.padX, this.padY);
}

/// The transform mobilekit.image_io.resize_to_input applies ('stretch', centred 'letterbox', or
/// 'letterbox_mediapipe': MediaPipe's, with the exact scale and fractional padding).
LetterboxTransform letterboxTransform(int imageHeight, int imageWidth, int inputHeight, int inputWidth, {String mode = 'letterbox'}) {
  if (mode == 'stretch') {
    return LetterboxTransform(inputWidth / imageWidth, inputHeight / imageHeight, 0, 0);
  }
  final scale = math.min(inputHeight / imageHeight, inputWidth / imageWidth);
  if (mode == 'letterbox_mediapipe') {
    return LetterboxTransform(scale, scale, (inputWidth - imageWidth * scale) / 2, (inputHeight - imageHeight * scale) / 2);
  }
  final newW = math.max(1, _roundHalfEven(imageWidth * scale)), newH = math.max(1, _roundHalfEven(imageHeight * scale));
  return LetterboxTransform(newW / imageWidth, newH / imageHeight, ((inputWidth - newW) ~/ 2).toDouble(), ((inputHeight - newH) ~/ 2).toDouble());
}

/// Python's round(): halves go to the even neighbour.
int _roundHalfEven(double x) {
  final f = x.floorToDouble();
  final diff = x - f;
  if (diff != 0.5) return x.round();
  return f.toInt().isEven ? f.toInt() : f.toInt() + 1;
}

/// A face in model-input pixels -> the same face in frame pixels.
Face undoLetterbox(Face f, LetterboxTransform t) {
  List<double> undo(List<double> xy) => [
        for (var i = 0; i < xy.length; i++) i.isEven ? (xy[i] - t.padX) / t.scaleX : (xy[i] - t.padY) / t.scaleY
      ];
  return Face(undo(f.box), f.score, undo(f.landmarks));
}

/// App glue (not part of the mirror): output buffers by interpreter index -> float views by name,
/// using `interpreter_output_index` of model_meta.json. Quantised (uint8) outputs are dequantised
/// with their `quantization` scale / zero point.
Map<String, Float32List> outputsByName(Map<String, dynamic> meta, Map<int, ByteBuffer> buffers) {
  final result = <String, Float32List>{};
  for (final o in meta['outputs'] as List) {
    final buffer = buffers[(o['interpreter_output_index'] as num).toInt()]!;
    final q = o['quantization'];
    if (o['dtype'] == 'float32') {
      result[o['name'] as String] = buffer.asFloat32List();
    } else if (q != null) {
      final raw = o['dtype'] == 'int8' ? buffer.asInt8List() : buffer.asUint8List();
      final scale = (q['scale'] as num).toDouble(), zero = (q['zero_point'] as num).toInt();
      result[o['name'] as String] = Float32List.fromList([for (final v in raw) (v - zero) * scale]);
    } else {
      throw ArgumentError('output ${o['name']} has dtype ${o['dtype']} without quantization');
    }
  }
  return result;
}
