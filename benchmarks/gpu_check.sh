#!/usr/bin/env bash
# The device check: every GPU question in one command (see benchmarks/README.md, "Device check").
#   benchmarks/gpu_check.sh OUT_DIR [--dry-run] [--models a,b] [--onnx-dir DIR]
# Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md; exit status 1 when a section failed. Relative
# folders are relative to the checkout.
# Needs a Python with torch; no network, no pip. When mobilekit is not importable, the checkout's packages are
# laid out as a wheel installs them (setup.py build_py: setuptools of any version, no `wheel` package, nothing
# written into the checkout) in a temporary folder on PYTHONPATH, and Python runs from there: it puts its
# working directory first on the path, and the checkout's mobilekit/ alone lacks models/, converters/ and
# benchmarks/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: benchmarks/gpu_check.sh OUT_DIR [--dry-run] [--models a,b] [--onnx-dir DIR]}"
shift
args=(--out "$(realpath -m "$out")")
while (($#)); do
    case "$1" in
        --onnx-dir | --export-onnx) args+=("$1" "$(realpath -m "${2:?$1 needs a folder}")"); shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
if ! python -c "import mobilekit.benchmarks" 2>/dev/null; then
    site="$(mktemp -d)"
    trap 'rm -rf "$site"' EXIT
    python -W ignore setup.py -q build_py --no-compile --build-lib "$site" >/dev/null
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    cd "$site"
fi
python -m mobilekit.benchmarks.gpu_check "${args[@]}"
