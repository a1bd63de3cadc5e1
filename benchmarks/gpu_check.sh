#!/usr/bin/env bash
# The device check: every GPU question in one command (see benchmarks/README.md, "Device check").
#   benchmarks/gpu_check.sh OUT_DIR [--dry-run] [--models a,b] [--onnx-dir DIR]
# Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md; exit status 1 when a section failed.
# Installs mobilekit without dependencies (no internet on the device machine) if it is not importable.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: benchmarks/gpu_check.sh OUT_DIR [--dry-run] [--models a,b] [--onnx-dir DIR]}"
shift
python -c "import mobilekit.benchmarks" 2>/dev/null || pip install --no-deps --no-build-isolation -q -e .
exec python -m mobilekit.benchmarks.gpu_check --out "$out" "$@"
