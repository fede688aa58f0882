#!/usr/bin/env bash
# One short hardware check of lem's GPU metering, for a machine with an NVIDIA GPU.
#
#   scripts/gpu-check.sh [LEM_BINARY] [OUT_DIR] [LOAD_SECONDS]
#
# Runs from a `lem` binary built elsewhere (no Rust toolchain needed here):
#   1. prints the GPU/MIG topology NVML reports (`lem gpus --json`);
#   2. polls each GPU's energy counter and power reading at ~1 kHz for 3 s, idle, to
#      measure how often they really update;
#   3. starts a steady GPU load (a matrix-multiply loop, with whatever is present:
#      PyTorch, CuPy, or `gpu_burn`) and meters LOAD_SECONDS (default 25) of it with the
#      counter and the 100 ms sampler, then compares counter energy with the trace
#      integral;
#   4. with LEM_GPU_MODEL=<a GGUF or model dir> and a `cuda` build of lem
#      (scripts/build-cuda.sh), runs SmolLM2-style inference on GPU 0 with NVML metering;
#   5. writes everything (JSON + a short summary) to OUT_DIR (default ./gpu-check-out).
# Record what it shows in docs/gpu-validation.md (card, driver, figures, date).
set -euo pipefail

LEM=${1:-./lem}
OUT=${2:-./gpu-check-out}
LOAD_S=${3:-25}
mkdir -p "$OUT"

if ! [ -x "$LEM" ]; then
    echo "gpu-check: no lem binary at $LEM (build with cargo build --release --bin lem and copy it)" >&2
    exit 2
fi

echo "== host"
{ date -u +%FT%TZ; uname -a; nvidia-smi --query-gpu=name,driver_version,power.limit,mig.mode.current --format=csv 2>&1 || true; } | tee "$OUT/host.txt"

echo "== topology (lem gpus)"
"$LEM" gpus | tee "$OUT/gpus.txt"
"$LEM" gpus --json > "$OUT/gpus.json"

echo "== counter and power update periods (idle, 3 s at ~1 kHz)"
"$LEM" gpu-check periods --seconds 3 --json | tee "$OUT/periods.json"

# A steady load: a bf16/fp16 matmul loop on GPU 0 for LOAD_S + 5 seconds.
LOAD_PID=""
LOAD_TOOL="none"
start_load() {
    local secs=$((LOAD_S + 5))
    if python3 -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        LOAD_TOOL="pytorch"
        python3 - "$secs" <<'PY' &
import sys, time, torch
end = time.time() + float(sys.argv[1])
a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
while time.time() < end:
    for _ in range(20):
        c = a @ b
    torch.cuda.synchronize()
PY
        LOAD_PID=$!
    elif python3 -c 'import cupy' 2>/dev/null; then
        LOAD_TOOL="cupy"
        python3 - "$secs" <<'PY' &
import sys, time, cupy as cp
end = time.time() + float(sys.argv[1])
a = cp.random.rand(8192, 8192, dtype=cp.float32).astype(cp.float16)
b = cp.random.rand(8192, 8192, dtype=cp.float32).astype(cp.float16)
while time.time() < end:
    for _ in range(20):
        c = a @ b
    cp.cuda.Device().synchronize()
PY
        LOAD_PID=$!
    elif command -v gpu_burn >/dev/null; then
        LOAD_TOOL="gpu_burn"
        gpu_burn "$secs" >/dev/null 2>&1 &
        LOAD_PID=$!
    fi
}
start_load
echo "== load: $LOAD_TOOL" | tee "$OUT/load.txt"
if [ -n "$LOAD_PID" ]; then
    sleep 3 # let clocks and power settle before the window
fi

echo "== metered window (${LOAD_S} s): counter vs trace integral"
"$LEM" gpu-check window --seconds "$LOAD_S" --json | tee "$OUT/window.json"

if [ -n "$LOAD_PID" ]; then
    wait "$LOAD_PID" || true
fi
if [ -n "${LEM_GPU_MODEL:-}" ]; then
    echo "== GPU inference: $LEM_GPU_MODEL (device: cuda, NVML metering)"
    cat > "$OUT/gpu-run.yaml" <<YAML
config_name: gpu-check-inference
model_name: $LEM_GPU_MODEL
device: cuda
max_input_tokens: 128
max_output_tokens: 64
min_output_tokens: 64
num_input_prompts: 16
idle_baseline_s: 5
batching_options: {batch_size: 8}
YAML
    "$LEM" --data-dir "$OUT/results" experiment "$OUT/gpu-run.yaml" --json > "$OUT/gpu-run.json" || true
    "$LEM" --data-dir "$OUT/results" results list | tee "$OUT/gpu-run.txt" || true
fi
echo "== done; results in $OUT"
