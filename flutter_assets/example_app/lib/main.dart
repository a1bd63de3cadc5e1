// mobilekit example app: camera preview, face detection on an isolate, boxes and landmarks (5, or BlazeFace's 6) drawn
// over the preview, and the per-frame time split into conversion / inference / decoding.
//
// The model and its decoder come from a mobilekit package in assets/model/:
//   mobilekit package EXPORT_DIR --out flutter_assets/example_app/assets/model
import 'dart:convert';
import 'dart:io';
import 'dart:typed_data';

import 'package:camera/camera.dart';
import 'package:flutter/material.dart';
import 'package:flutter/services.dart';
import 'package:tflite_flutter/tflite_flutter.dart';

import '../assets/model/lib/camera_input.dart';
import '../assets/model/lib/face_decoder.dart';

Future<void> main() async {
  WidgetsFlutterBinding.ensureInitialized();
  final cameras = await availableCameras();
  runApp(MaterialApp(home: DetectorPage(camera: cameras.first)));
}

class DetectorPage extends StatefulWidget {
  final CameraDescription camera;
  const DetectorPage({super.key, required this.camera});

  @override
  State<DetectorPage> createState() => _DetectorPageState();
}

class _DetectorPageState extends State<DetectorPage> {
  late final CameraController _controller;
  IsolateInterpreter? _isolate;
  late Map<String, dynamic> _meta;
  late DecoderSettings _settings;
  List<Anchor>? _anchors;
  List<Face> _faces = const [];
  List<int> _previewSize = const [1, 1];
  String _timing = '';
  bool _busy = false;

  @override
  void initState() {
    super.initState();
    _controller = CameraController(widget.camera, ResolutionPreset.medium,
        enableAudio: false, imageFormatGroup: Platform.isIOS ? ImageFormatGroup.bgra8888 : ImageFormatGroup.yuv420);
    _start();
  }

  Future<void> _start() async {
    _meta = jsonDecode(await rootBundle.loadString('assets/model/model_meta.json')) as Map<String, dynamic>;
    _settings = DecoderSettings.fromMeta(_meta);
    final anchorsJson = jsonDecode(await rootBundle.loadString('assets/model/anchors.json')) as Map<String, dynamic>;
    if (anchorsJson.containsKey('anchors')) _anchors = loadAnchors(anchorsJson);
    final interpreter = await Interpreter.fromAsset('assets/model/model.tflite', options: InterpreterOptions()..threads = 4);
    _isolate = await IsolateInterpreter.create(address: interpreter.address);
    await _controller.initialize();
    await _controller.startImageStream(_onFrame);
    if (mounted) setState(() {});
  }

  Future<void> _onFrame(CameraImage image) async {
    if (_busy || _isolate == null) return;
    _busy = true;
    final watch = Stopwatch()..start();
    final frame = CameraFrame(Platform.isIOS ? 'bgra8888' : 'yuv420', image.width, image.height,
        [for (final p in image.planes) CameraPlane(p.bytes, p.bytesPerRow, p.bytesPerPixel ?? 1)],
        rotation: widget.camera.sensorOrientation, mirror: widget.camera.lensDirection == CameraLensDirection.front);
    final input = _meta['input'] as Map<String, dynamic>;
    final height = (input['shape'][1] as num).toInt(), width = (input['shape'][2] as num).toInt();
    final resize = input['resize'] as Map<String, dynamic>;
    final mode = resize['mode'] as String;
    final modelInput = cameraToInput(frame, height, width,
        mode: mode, padValue: (resize['pad_value'] as num).toDouble(), uint8: input['dtype'] == 'uint8');
    final convertMs = watch.elapsedMilliseconds;
    final buffers = <int, Object>{
      for (final o in _meta['outputs'] as List)
        (o['interpreter_output_index'] as num).toInt(): Uint8List(_outputBytes(o as Map<String, dynamic>)).buffer
    };
    await _isolate!.runForMultipleInputs([modelInput.buffer], buffers);
    final inferMs = watch.elapsedMilliseconds - convertMs;
    final faces = detect(outputsByName(_meta, buffers.cast<int, ByteBuffer>()), _anchors, _settings);
    final transform = cameraTransform(frame, height, width, mode: mode);
    final inPreview = [for (final f in faces) undoLetterbox(f, transform)];
    final decodeMs = watch.elapsedMilliseconds - convertMs - inferMs;
    if (mounted) {
      setState(() {
        _faces = inPreview;
        _previewSize = uprightSize(frame);
        _timing = 'convert $convertMs ms | infer $inferMs ms | decode $decodeMs ms | ${inPreview.length} faces';
      });
    }
    _busy = false;
  }

  static int _outputBytes(Map<String, dynamic> spec) {
    final count = (spec['shape'] as List).fold<int>(1, (n, d) => n * (d as num).toInt());
    return count * (spec['dtype'] == 'float32' ? 4 : 1);
  }

  @override
  void dispose() {
    _controller.dispose();
    _isolate?.close();
    super.dispose();
  }

  @override
  Widget build(BuildContext context) {
    if (!_controller.value.isInitialized) return const Scaffold(body: Center(child: CircularProgressIndicator()));
    return Scaffold(
      body: Stack(fit: StackFit.expand, children: [
        AspectRatio(
          aspectRatio: _previewSize[1] / _previewSize[0],
          child: Stack(fit: StackFit.expand, children: [
            CameraPreview(_controller),
            CustomPaint(painter: FacePainter(_faces, _previewSize[0], _previewSize[1])),
          ]),
        ),
        Positioned(
          left: 8,
          bottom: 24,
          child: Text(_timing, style: const TextStyle(color: Colors.white, backgroundColor: Colors.black54)),
        ),
      ]),
    );
  }
}

/// Faces in upright preview pixels, scaled to the widget.
class FacePainter extends CustomPainter {
  final List<Face> faces;
  final int previewHeight, previewWidth;
  FacePainter(this.faces, this.previewHeight, this.previewWidth);

  @override
  void paint(Canvas canvas, Size size) {
    final sx = size.width / previewWidth, sy = size.height / previewHeight;
    final box = Paint()
      ..style = PaintingStyle.stroke
      ..strokeWidth = 2
      ..color = Colors.greenAccent;
    final dot = Paint()..color = Colors.redAccent;
    for (final f in faces) {
      canvas.drawRect(Rect.fromLTRB(f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy), box);
      for (var i = 0; i + 1 < f.landmarks.length; i += 2) {
        canvas.drawCircle(Offset(f.landmarks[i] * sx, f.landmarks[i + 1] * sy), 3, dot);
      }
    }
  }

  @override
  bool shouldRepaint(FacePainter old) => old.faces != faces;
}
