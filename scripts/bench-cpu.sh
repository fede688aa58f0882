#!/usr/bin/env bash
# CPU inference speed of lem (default SmolLM2-135M-Instruct Q4_1): decode and prefill tok/s,
# median of RUNS separate `lem experiment` processes (each a fresh model load).
# Usage: scripts/bench-cpu.sh [RUNS] [THREADS]      (figures go in docs/benchmarks.md)
#   LEM_BENCH_MODEL  model_name to run (default HuggingFaceTB/SmolLM2-135M-Instruct;
#                    google/gemma-3-270m-GGUF for Gemma 3 270M Q4_K_M)
#   LEM_BENCH_BATCHES  comma-separated batch sizes (default 1,8)
#   LEM_CPU_KERNEL   caps lem's CPU kernels (scalar|avx2|avx512vnni); the last line printed,
#                    `compute: ...`, names the variant that ran
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
threads="${2:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lem-target}"
# LEM_BIN: a `lem` built already (e.g. by scripts/bench-interleaved.sh); else a release build.
lem="${LEM_BIN:-}"
if [ -z "$lem" ]; then
  cargo build --release --bin lem >/dev/null
  lem="$CARGO_TARGET_DIR/release/lem"
fi
data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
cfg="$data/bench.yaml"
cat >"$cfg" <<YAML
config_name: bench-cpu
model_name: ${LEM_BENCH_MODEL:-HuggingFaceTB/SmolLM2-135M-Instruct}
max_input_tokens: 128
max_output_tokens: 64
min_output_tokens: 64
num_input_prompts: 8
fp_precision: float32
cpu_threads: $threads
decoder_config: {preset: deterministic}
prompt_source: {type: synthetic, input_tokens: 128}
YAML
batches="${LEM_BENCH_BATCHES:-1,8}"
for batch in ${batches//,/ }; do
  runs_json="$data/batch-$batch.jsonl"
  for i in $(seq "$runs"); do
    "$lem" --data-dir "$data/results" experiment "$cfg" -b "$batch" --fresh --json 2>/dev/null
  done >"$runs_json"
  python3 -c '
import json, sys, statistics as st
dec = []; pre = []; out = []; ttft = []
text = sys.stdin.read()
dec_json = json.JSONDecoder(); i = 0
while i < len(text):
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    agg, i = dec_json.raw_decode(text, i)
    c = agg["cycles"][0]
    dec.append(c["decode_tokens_per_s"]); pre.append(c["prefill_tokens_per_s"])
    out.append(c["output_tokens_per_s"]); ttft.append(c["ttft_ms"]["p50"])
b = sys.argv[1]
print(f"batch {b}: runs {len(dec)}  decode {st.median(dec):.1f} tok/s  prefill {st.median(pre):.1f} tok/s  "
      f"output {st.median(out):.1f} tok/s  TTFT p50 {st.median(ttft):.0f} ms  "
      f"(decode min/max {min(dec):.1f}/{max(dec):.1f})")
' "$batch" <"$runs_json"
done
# The kernels that ran (e.g. `f32 (CPU kernels: avx2)` under LEM_CPU_KERNEL=avx2), from the
# last run's raw result, so a side by side shows what lem used, not what was asked for.
last_id="$(python3 -c '
import json, sys
text = sys.stdin.read(); d = json.JSONDecoder(); i = 0; last = None
while i < len(text):
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    agg, i = d.raw_decode(text, i)
    last = agg["experiment_id"]
print(last)
' <"$runs_json")"
"$lem" --data-dir "$data/results" results show "$last_id" --raw --json 2>/dev/null |
  python3 -c 'import json, sys; print("compute:", json.load(sys.stdin)[0]["model"]["compute_dtype"])'
