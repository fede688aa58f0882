#!/usr/bin/env bash
# lem's candle engine vs llama.cpp's OpenAI-compatible server (llama-cpp-python), both
# driven by lem on the same prompts: SmolLM2-135M-Instruct Q4_1, THREADS threads each,
# requests one at a time. Prints per-cycle medians (figures go in docs/benchmarks.md).
# Usage: scripts/bench-openai.sh [CYCLES] [THREADS] [CONCURRENCY]
#   LEM_BIN  a built `lem` (default: a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${1:-5}"
threads="${2:-2}"
concurrency="${3:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lem-target}"
lem="${LEM_BIN:-}"
if [ -z "$lem" ]; then
  cargo build --release --bin lem >/dev/null
  lem="$CARGO_TARGET_DIR/release/lem"
fi
python="$(scripts/setup-llama-server.sh)"
model="${LEM_MODEL_DIR:-$HOME/.cache/lem/models}/HuggingFaceTB--SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
data="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$python" -m llama_cpp.server --model "$model" --model_alias smollm2 --host 127.0.0.1 \
    --port "$port" --n_threads "$threads" --n_ctx 2048 >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 240); do
  curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null && break
  sleep 0.5
done
common="model_name: HuggingFaceTB/SmolLM2-135M-Instruct
max_input_tokens: 128
max_output_tokens: 64
num_input_prompts: 8
num_cycles: $cycles
fp_precision: float32
cpu_threads: $threads
idle_baseline_s: 0
batching_options: {batch_size: $concurrency}
decoder_config: {preset: deterministic}
prompt_source: {type: synthetic, input_tokens: 128}"
printf 'config_name: bench-candle\n%s\n' "$common" >"$data/candle.yaml"
printf 'config_name: bench-llama-server\n%s\nengine: openai\nopenai: {endpoint: "http://127.0.0.1:%s/v1", model: smollm2, engine_name: llama-cpp-python, max_concurrency: %s}\n' \
    "$common" "$port" "$concurrency" >"$data/server.yaml"
for engine in candle server; do
  "$lem" --data-dir "$data/results" experiment "$data/$engine.yaml" --fresh --json 2>/dev/null |
  ENGINE="$engine" python3 -c '
import json, os, sys, statistics as st
agg = json.load(sys.stdin)
cs = agg["cycles"]
med = lambda f: st.median(f(c) for c in cs)
engine = os.environ["ENGINE"]
tokens = "%s/%s" % (cs[0]["input_tokens"], cs[0]["output_tokens"])
out = med(lambda c: c["output_tokens_per_s"])
ttft = med(lambda c: c["ttft_ms"]["p50"])
itl = med(lambda c: c["itl_ms"]["p50"])
e2e = med(lambda c: c["e2e_ms"]["p50"])
failed = sum(c.get("failed_requests", 0) for c in cs)
print(f"{engine:<7} cycles {len(cs)}  in/out tokens per cycle {tokens}  output tok/s {out:.1f}"
      f"  TTFT p50 {ttft:.1f} ms  ITL p50 {itl:.2f} ms  e2e p50 {e2e:.0f} ms  failed {failed}")
'
done
