#!/usr/bin/env bash
# The GPU check: optimist's CUDA tests, then the CUDA step-speed benchmark, in one command
# (< 8 minutes on an H200). Run from the repository root on the GPU machine; writes
# $OUT/cuda_tests.log, $OUT/launch_count.md, $OUT/cuda_speed.md and $OUT/cuda_speed_progress.log
# ($OUT defaults to ./gpu_check_out).
# Continues past a failure; the exit status is nonzero if any part failed.
set -o pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TORCH_EXTENSIONS_DIR=/tmp/ext
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
status=0

nvidia-smi -L || true
command -v ninja g++ || echo "ninja or g++ missing: optimist's C++ engine will not build (eager path)"
python3 - <<'PY'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY

echo "== the C++ engine (the CPU side of the comparisons; built once into $TORCH_EXTENSIONS_DIR)"
timeout 180 python3 -c "import optimist.optim.native as n; print('engine available:', n.available())" \
    || status=1

echo "== tests/cuda"
# --maxfail, not -x: one run on the GPU should report every failure (up to 20), not the first
timeout 150 python3 -m pytest -q --maxfail=20 tests/cuda -p no:cacheprovider --durations=10 2>&1 \
    | tee "$OUT/cuda_tests.log" || status=1

echo "== benchmarks/launch_count.py --device cuda (ops and host syncs per step; torch's own sync count)"
timeout 120 python3 benchmarks/launch_count.py --device cuda 2>&1 | tee "$OUT/launch_count.md" || status=1

if [ -f benchmarks/cuda_speed.py ]; then
    echo "== benchmarks/cuda_speed.py"
    # the table to cuda_speed.md; the per-row progress lines (stderr) to the screen and a log
    timeout 240 python3 benchmarks/cuda_speed.py --device cuda \
        2> >(tee "$OUT/cuda_speed_progress.log" >&2) | tee "$OUT/cuda_speed.md" || status=1
fi
exit $status
