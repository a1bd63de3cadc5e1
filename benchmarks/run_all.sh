#!/usr/bin/env bash
# The recorded benchmark run: exports every model in every format, then benchmarks every format.
# Run it on a QUIET machine (load average near 0): timings taken next to other jobs are not comparable.
#
#   benchmarks/run_all.sh                 # CPU, threads 1 and 2, writes benchmarks/results/
#   DEVICE=cuda benchmarks/run_all.sh     # on a GPU machine: PyTorch fp32/fp16, ONNX Runtime CUDA/TensorRT
#   RUNS=20 MIN_SECONDS=1 benchmarks/run_all.sh   # quicker, noisier
#
# Exports are made once into EXPORT_DIR (TFLite conversion takes about a minute per model and size)
# and reused on later runs. Environment: EXPORT_DIR, RESULTS, THREADS, RUNS, WARMUP, MIN_SECONDS, DEVICE, SIZES, BACKENDS.
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

# 1. Exports of every registered model, every format, at every size (skipped when present). Models with
#    trained weights in the shared folder use them (BlazeFace: Google's files, at the model's own size); the
#    others are exported randomly initialised (seeded,
#    labelled "random_init" in their sidecars): latency does not depend on the weight values.
python - "$EXPORT_DIR" "$SHARED" "$SIZES" <<'PY'
import sys
from pathlib import Path

from mobilekit.converters.model_source import build_source_model, source_metadata
from mobilekit.converters.export import FORMATS, export_model
from mobilekit.errors import MobilekitError
from mobilekit.families import family_of
from mobilekit.models import create_model, list_models
from mobilekit.models.blazeface import GOOGLE_WEIGHTS

export_dir, shared, sizes = Path(sys.argv[1]), Path(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")]
for name in list_models():
    weights = shared / "weights" / GOOGLE_WEIGHTS.get(name, f"{name}_widerface.pth")
    weights, seed = (weights, None) if weights.is_file() else (None, 0)
    deploy = create_model(name).deploy
    for size in [deploy.input_size[0]] if family_of(deploy).native_input_only else sizes:  # BlazeFace: its own size
        out = export_dir / name
        if (out / f"{name}_{size}_int8.tflite").is_file():
            continue
        try:
            model = build_source_model(name, weights, random_seed=seed)
            export_model(model, size, out, FORMATS, calib_images=shared / "images", source=source_metadata(weights, seed, name))
            print(f"exported {name} at {size} to {out} ({'trained weights' if weights else 'random init'})")
        except MobilekitError as exc:  # a model that does not convert is reported, the rest still runs
            print(f"export of {name} at {size} failed: {exc}")
PY

# 2. Every format of every export (PyTorch eager / channels_last / compile, ONNX Runtime, TFLite with
#    and without XNNPACK), each case in a fresh subprocess (peak memory). BACKENDS narrows it.
BACKENDS=${BACKENDS:-torch,torch_channels_last,torch_compile,onnxruntime,tflite,tflite_builtin}
mobilekit benchmark "$EXPORT_DIR"/* --device "$DEVICE" --threads "$THREADS" --runs "$RUNS" --warmup "$WARMUP" \
    --min-seconds "$MIN_SECONDS" --backends "$BACKENDS" --json "$RESULTS/exports_${DEVICE}_${STAMP}.json"

echo "results: $RESULTS/exports_${DEVICE}_${STAMP}.{json,png}"
