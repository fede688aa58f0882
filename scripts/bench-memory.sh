#!/usr/bin/env bash
# Peak RSS (VmHWM) and load time of SmolLM2-135M-Instruct per format and precision, one
# process per variant (agent/examples/bench_memory.rs). The safetensors variants are made
# with `lem model convert` from the Q4_1 GGUF into a temporary LEM_MODEL_DIR (removed at
# exit; ~/.cache/lem/models is only read).
# Usage: scripts/bench-memory.sh [GGUF]            (figures go in docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
gguf="${1:-$HOME/.cache/lem/models/HuggingFaceTB--SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lem-target}"
cargo build --release --bin lem -p lem-coordinator >/dev/null
cargo build --release -p lem-agent --example bench_memory >/dev/null
lem="$CARGO_TARGET_DIR/release/lem"
bench="$CARGO_TARGET_DIR/release/examples/bench_memory"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export LEM_MODEL_DIR="$tmp"
for dtype in f32 f16 bf16; do
  "$lem" model convert "$gguf" --to safetensors --dtype "$dtype" --out "$tmp/st-$dtype" >/dev/null
done
run() { printf '%-34s ' "$1"; shift; "$bench" "$@"; }
run "GGUF Q4_1 -> Q8_0 (default)" gguf "$gguf" requant
run "GGUF Q4_1 kept" gguf "$gguf" keep
run "safetensors f32" safetensors "$tmp/st-f32" keep f32
run "safetensors f16" safetensors "$tmp/st-f16" keep f16
run "safetensors bf16" safetensors "$tmp/st-bf16" keep bf16
run "safetensors bf16 -> Q8_0 on load" safetensors "$tmp/st-bf16" keep bf16 q8_0
run "safetensors bf16 -> Q4_0 on load" safetensors "$tmp/st-bf16" keep bf16 q4_0
run "safetensors f32 -> Q8_0 on load" safetensors "$tmp/st-f32" keep f32 q8_0
