"""Flutter-ready packages: assets writer, NumPy mirror of the Dart decoder, end-to-end TFLite, embedded metadata."""
