#!/usr/bin/env bash
# Peak RSS (VmHWM) and load time of SmolLM2-135M-Instruct per format and precision, one
# process per variant (agent/examples/bench_memory.rs). The safetensors variants are made
# with `lem model convert` from the Q4_1 GGUF into a temporary LEM_MODEL_DIR (removed at
# exit; ~/.cache/lem/models is only read).
# Usage: scripts/bench-memory.sh [GGUF]            (figures go in docs/benchmarks.md)
# LEM_BENCH_DEV_OPT3=1 builds the dev profile at opt-level 3 instead of --release (reuses a
# dev build's dependencies; peak RSS is the same, load times are close but say which).
set -euo pipefail
cd "$(dirname "$0")/.."
gguf="${1:-$HOME/.cache/lem/models/HuggingFaceTB--SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lem-target}"
if [ "${LEM_BENCH_DEV_OPT3:-}" = 1 ]; then
  export CARGO_PROFILE_DEV_OPT_LEVEL=3
  profile_flag=() out_dir=debug
else
  profile_flag=(--release) out_dir=release
fi
cargo build "${profile_flag[@]}" --bin lem -p lem-coordinator >/dev/null
cargo build "${profile_flag[@]}" -p lem-agent --example bench_memory >/dev/null
lem="$CARGO_TARGET_DIR/$out_dir/lem"
bench="$CARGO_TARGET_DIR/$out_dir/examples/bench_memory"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export LEM_MODEL_DIR="$tmp"
for dtype in f32 f16 bf16; do
  "$lem" model convert "$gguf" --to safetensors --dtype "$dtype" --out "$tmp/st-$dtype" >/dev/null
done
run() { printf '%-34s ' "$1"; shift; "$bench" "$@"; }
run "GGUF Q4_1 -> Q8_0" gguf "$gguf" requant
run "GGUF Q4_1 kept (default)" gguf "$gguf" keep
run "safetensors f32" safetensors "$tmp/st-f32" keep f32
run "safetensors f16" safetensors "$tmp/st-f16" keep f16
run "safetensors bf16" safetensors "$tmp/st-bf16" keep bf16
run "safetensors bf16 -> Q8_0 on load" safetensors "$tmp/st-bf16" keep bf16 q8_0
run "safetensors bf16 -> Q4_0 on load" safetensors "$tmp/st-bf16" keep bf16 q4_0
run "safetensors f32 -> Q8_0 on load" safetensors "$tmp/st-f32" keep f32 q8_0
