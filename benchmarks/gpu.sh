#!/usr/bin/env bash
# keras_dp on GPUs in a few minutes: tokens/s and model FLOPs utilisation (MFU)
# of the `small` and `base` TransformerLM presets with XLA and bf16 - plain
# Keras vs keras_dp on one GPU, and keras_dp's MirroredStrategy over all
# visible GPUs when there are several.
#
#   pip install 'keras-dp[gpu]'        # TensorFlow with CUDA
#   bash benchmarks/gpu.sh             # figures in keras_dp_bench_gpu/
#   bash benchmarks/gpu.sh --peak-tflops 989 --batch-size 16 --steps 100
#
# Extra arguments go to benchmarks/gpu.py (see `python benchmarks/gpu.py --help`):
# --presets small,base  --batch-size N (per GPU)  --steps N  --peak-tflops X
# --mixed-precision mixed_bfloat16|mixed_float16|float32  --out DIR  --smoke
# Without a GPU it runs its CPU fallback (tiny preset, a few steps, no MFU).
set -euo pipefail

OUT="${KERAS_DP_BENCH_OUT:-keras_dp_bench_gpu}"
PYTHON="${PYTHON:-python3}"

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || true
else
  echo "gpu.sh: nvidia-smi not found: no NVIDIA GPU here, running the CPU fallback" >&2
fi
# Keep TensorFlow's C++ INFO lines out; allocate GPU memory as needed (the
# benchmark halves a batch that does not fit).
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export TF_GPU_ALLOCATOR="${TF_GPU_ALLOCATOR:-cuda_malloc_async}"

exec "$PYTHON" "$(dirname "$0")/gpu.py" --out "$OUT" "$@"
