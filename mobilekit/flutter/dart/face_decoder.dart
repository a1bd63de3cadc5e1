// Face decoder for mobilekit TFLite models: priors, decode, NMS, letterbox undo.
//
// Function for function the mirror of mobilekit/flutter/reference_decoder.py (the tested
// contract): generateAnchors, loadAnchors, decode, decodeYolo, decodeBlazeFace, nms, weightedNms, detect,
// endToEndDetections, letterboxTransform, undoLetterbox. Dart computes in float64 where NumPy uses float32, so
// results agree to ~1e-4 px; golden/expected_detections.json is the check.
import 'dart:math' as math;
import 'dart:typed_data';

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
List<int> _candidates(List<double> scores, double threshold, int topK) {
  final idx = <int>[for (var i = 0; i < scores.length; i++) if (scores[i] > threshold) i];
  // Dart's List.sort is not stable: break ties by index to match NumPy's stable argsort.
  idx.sort((a, b) => scores[a] != scores[b] ? scores[b].compareTo(scores[a]) : a.compareTo(b));
  return idx.length > topK ? idx.sublist(0, topK) : idx;
}

/// RetinaFace outputs (one image, flat row-major: loc [N*4], conf [N*2], landmarks [N*10]) ->
/// candidate faces in model-input pixels, best first (mobilekit.box_coder decode).
List<Face> decode(Float32List loc, Float32List conf, Float32List landmarks, List<Anchor> anchors, DecoderSettings s) {
  final n = anchors.length;
  final scores = [for (var i = 0; i < n; i++) conf[2 * i + 1].toDouble()];
  final w = s.inputWidth.toDouble(), h = s.inputHeight.toDouble();
  final v0 = s.variances[0], v1 = s.variances[1];
  final faces = <Face>[];
  for (final i in _candidates(scores, s.scoreThreshold, s.preNmsTopK)) {
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

/// YOLO `predictions` (flat [N*16], decoded in the graph: cx, cy, w, h, obj, 10 landmark values,
/// cls; normalised) -> candidate faces in model-input pixels, best first (score = obj * cls).
List<Face> decodeYolo(Float32List predictions, DecoderSettings s) {
  final n = predictions.length ~/ 16;
  final scores = [for (var i = 0; i < n; i++) predictions[16 * i + 4] * predictions[16 * i + 15]];
  final w = s.inputWidth.toDouble(), h = s.inputHeight.toDouble();
  return [
    for (final i in _candidates(scores, s.scoreThreshold, s.preNmsTopK))
      Face([
        (predictions[16 * i] - predictions[16 * i + 2] / 2) * w,
        (predictions[16 * i + 1] - predictions[16 * i + 3] / 2) * h,
        (predictions[16 * i] + predictions[16 * i + 2] / 2) * w,
        (predictions[16 * i + 1] + predictions[16 * i + 3] / 2) * h,
      ], scores[i], [for (var k = 0; k < 10; k++) predictions[16 * i + 5 + k] * (k.isEven ? w : h)])
  ];
}

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

/// One image's outputs by name -> faces in model-input pixels, best first.
List<Face> detect(Map<String, Float32List> outputs, List<Anchor>? anchors, DecoderSettings s) {
  switch (s.kind) {
    case 'retinaface':
      return nms(decode(outputs['loc']!, outputs['conf']!, outputs['landmarks']!, anchors!, s), s);
    case 'yolo':
      return nms(decodeYolo(outputs['predictions']!, s), s);
    case 'blazeface':
      return weightedNms(decodeBlazeFace(outputs['regressors']!, outputs['classificators']!, anchors!, s), s);
    case 'end_to_end':
      return endToEndDetections(outputs);
  }
  throw ArgumentError('unknown decoder kind ${s.kind}');
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
