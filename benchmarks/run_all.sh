#!/usr/bin/env bash
# The recorded benchmark run: exports every model with weights, then benchmarks every format.
# Run it on a QUIET machine (load average near 0): timings taken next to other jobs are not comparable.
#
#   benchmarks/run_all.sh                 # CPU, threads 1 and 2, writes benchmarks/results/
#   DEVICE=cuda benchmarks/run_all.sh     # on a GPU machine: PyTorch fp32/fp16, ONNX Runtime CUDA/TensorRT
#   RUNS=20 MIN_SECONDS=1 benchmarks/run_all.sh   # quicker, noisier
#
# Exports are made once into EXPORT_DIR (TFLite conversion takes about a minute per model and size)
# and reused on later runs. Environment: EXPORT_DIR, RESULTS, THREADS, RUNS, WARMUP, MIN_SECONDS, DEVICE, SIZES.
set -euo pipefail
cd "$(dirname "$0")/.."

EXPORT_DIR=$(realpath -m "${EXPORT_DIR:-build/benchmark_exports}")
RESULTS=${RESULTS:-benchmarks/results}
THREADS=${THREADS:-1,2}
RUNS=${RUNS:-100}
WARMUP=${WARMUP:-10}
MIN_SECONDS=${MIN_SECONDS:-3}
DEVICE=${DEVICE:-cpu}
SIZES=${SIZES:-320,640}
SHARED=$(python -c "from mobilekit.paths import shared_dir; print(shared_dir())")
STAMP=$(date -u +%Y%m%d-%H%M%S)

echo "load average now: $(cut -d' ' -f1-3 /proc/loadavg) (recorded numbers need it near 0)"
mkdir -p "$EXPORT_DIR" "$RESULTS"

# 1. Exports of the models that have trained weights, every format, at every size (skipped when present).
python - "$EXPORT_DIR" "$SHARED" "$SIZES" <<'PY'
import sys
from pathlib import Path

from mobilekit.converters.model_source import build_source_model, source_metadata
from mobilekit.converters.pipeline import FORMATS, export_model
from mobilekit.errors import MobilekitError

export_dir, shared, sizes = Path(sys.argv[1]), Path(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")]
for name in ("retinaface_mnet025", "featherface_v1"):
    weights = shared / "weights" / f"{name}_widerface.pth"
    for size in sizes:
        out = export_dir / name
        if (out / f"{name}_{size}_int8_full.tflite").is_file():
            continue
        try:
            export_model(build_source_model(name, weights), size, out, FORMATS, calib_images=shared / "images", source=source_metadata(weights, None))
            print(f"exported {name} at {size} to {out}")
        except MobilekitError as exc:  # a model that does not convert is reported, the rest still runs
            print(f"export of {name} at {size} failed: {exc}")
PY

# 2. Every format of the exported models (PyTorch eager / channels_last / compile, ONNX Runtime, TFLite with
#    and without XNNPACK), each case in a fresh subprocess (peak memory).
BACKENDS=torch,torch_channels_last,torch_compile,onnxruntime,tflite,tflite_builtin
mobilekit benchmark "$EXPORT_DIR"/* --device "$DEVICE" --threads "$THREADS" --runs "$RUNS" --warmup "$WARMUP" \
    --min-seconds "$MIN_SECONDS" --backends "$BACKENDS" --json "$RESULTS/exports_${DEVICE}_${STAMP}.json"

# 3. Models without trained weights: PyTorch (random init) and ONNX Runtime on an ONNX exported on the fly.
OTHERS=$(python -c "from mobilekit.models import list_models; print(' '.join(m for m in list_models() if m not in ('retinaface_mnet025', 'featherface_v1')))")
# shellcheck disable=SC2086
mobilekit benchmark $OTHERS --imgsz 640 --device "$DEVICE" --threads "$THREADS" --runs "$RUNS" --warmup "$WARMUP" \
    --min-seconds "$MIN_SECONDS" --backends torch,torch_channels_last,onnxruntime --json "$RESULTS/models_${DEVICE}_${STAMP}.json"

echo "results: $RESULTS/*_${DEVICE}_${STAMP}.{json,png}"
