// Runs the packaged decoder and camera_input on the package's golden files (no device needed):
//   mobilekit package EXPORT_DIR --out flutter_assets/example_app/assets/model && flutter test
import 'dart:convert';
import 'dart:io';
import 'dart:typed_data';

import 'package:flutter_test/flutter_test.dart';

import '../assets/model/lib/camera_input.dart';
import '../assets/model/lib/face_decoder.dart';

const model = 'assets/model';

Map<String, dynamic> readJson(String path) => jsonDecode(File('$model/$path').readAsStringSync()) as Map<String, dynamic>;

Float32List readFloats(String path) {
  final bytes = File('$model/golden/$path').readAsBytesSync();
  return bytes.buffer.asFloat32List(bytes.offsetInBytes, bytes.lengthInBytes ~/ 4); // little-endian, as the devices
}

void expectSameFaces(List<Face> got, List<dynamic> expected) {
  expect(got.length, expected.length);
  for (var i = 0; i < got.length; i++) {
    final e = expected[i] as Map<String, dynamic>;
    expect(got[i].score, closeTo((e['score'] as num).toDouble(), 1e-3));
    final box = [for (final v in e['box_xyxy'] as List) (v as num).toDouble()];
    for (var k = 0; k < 4; k++) {
      expect(got[i].box[k], closeTo(box[k], 0.5));
    }
  }
}

void main() {
  final meta = readJson('model_meta.json');
  final settings = DecoderSettings.fromMeta(meta);
  final anchorsJson = readJson('anchors.json');
  final anchors = anchorsJson.containsKey('anchors') ? loadAnchors(anchorsJson) : null;
  final index = readJson('golden/index.json');

  test('the decoder gives the golden detections for the golden raw outputs', () {
    final files = index['files'] as Map<String, dynamic>;
    final outputs = <String, Float32List>{
      for (final o in meta['outputs'] as List) o['name'] as String: readFloats(files[o['name']]['file'] as String)
    };
    final expected = readJson('golden/expected_detections.json')['faces'] as List;
    expectSameFaces(detect(outputs, anchors, settings), expected);
  });

  test('camera frames become the golden model input', () {
    final frames = index['camera_frames'] as Map<String, dynamic>;
    final input = meta['input'] as Map<String, dynamic>;
    final height = (input['shape'][1] as num).toInt(), width = (input['shape'][2] as num).toInt();
    final resize = input['resize'] as Map<String, dynamic>;
    for (final entry in frames.values) {
      final spec = entry['frame'] as Map<String, dynamic>;
      final data = File('$model/golden/${spec['file']}').readAsBytesSync();
      final planes = <CameraPlane>[];
      var offset = 0;
      for (final p in spec['planes'] as List) {
        final length = (p['bytes'] as num).toInt();
        planes.add(CameraPlane(Uint8List.sublistView(data, offset, offset + length), (p['row_stride'] as num).toInt(),
            (p['pixel_stride'] as num).toInt()));
        offset += length;
      }
      final frame = CameraFrame(spec['format'] as String, (spec['width'] as num).toInt(), (spec['height'] as num).toInt(), planes,
          rotation: (spec['rotation'] as num).toInt(), mirror: spec['mirror'] as bool);
      final got = cameraToInput(frame, height, width,
          mode: resize['mode'] as String, padValue: (resize['pad_value'] as num).toDouble(), uint8: input['dtype'] == 'uint8');
      final stored = File('$model/golden/${entry['input']['file']}').readAsBytesSync();
      expect(Uint8List.sublistView(got), stored);
    }
  });
}
