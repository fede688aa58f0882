#!/usr/bin/env bash
# Cost of the NVML sampler: job wall time and process CPU time of the same experiment on a
# simulated GPU node (fake NVML, one GPU) with the sampler off, at 10 Hz (the default,
# 100 ms) and at 100 Hz (10 ms). Each setting runs RUNS times in fresh processes; the
# script prints the median of each.
#
#   scripts/bench-sampler.sh [RUNS] [THREADS]
#
# Needs the SmolLM2 GGUF (scripts/fetch-model.sh). Builds release binaries first.
set -euo pipefail
RUNS=${1:-5}
THREADS=${2:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release --quiet --bin lem -p lem-coordinator --manifest-path "$ROOT/Cargo.toml"
cargo build --release --quiet -p fake-nvml --manifest-path "$ROOT/Cargo.toml"
LEM=$TARGET/release/lem
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$TARGET/release/libnvidia_ml.so" "$WORK/libnvidia-ml.so.1"
cat > "$WORK/scenario.json" <<'JSON'
{"gpus": [{"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-be9c0000-0000-4000-8000-000000000001",
  "power": [[0.0, 300.0]], "temperature_c": [[0.0, 45]], "sm_clock_mhz": [[0.0, 1980]],
  "throttle_reasons": [[0.0, 0]]}]}
JSON
mkdir -p "$WORK/powercap"

run_one() { # $1 = sample_period_ms; prints "wall_s cpu_s samples"
    cat > "$WORK/cfg.yaml" <<YAML
_extends: $ROOT/configs/examples/quick.yaml
idle_baseline_s: 0
cpu_threads: $THREADS
sample_period_ms: $1
YAML
    LEM_NVML_LIB="$WORK/libnvidia-ml.so.1" FAKE_NVML_SCENARIO="$WORK/scenario.json" \
        LEM_POWERCAP_ROOT="$WORK/powercap" HF_HUB_OFFLINE=1 \
        python3 - "$LEM" "$WORK" <<'PY'
import json, resource, subprocess, sys
lem, work = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_CHILDREN)
out = subprocess.run([lem, "--data-dir", f"{work}/results", "experiment", f"{work}/cfg.yaml", "--json"],
                     check=True, capture_output=True, text=True).stdout
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
exp_id = json.loads(out)["experiment_id"]
raw = json.loads(subprocess.run([lem, "--data-dir", f"{work}/results", "results", "show", exp_id, "--raw", "--json"],
                                check=True, capture_output=True, text=True).stdout)[0]
gpu = [e for e in raw["energy"] if e["device_kind"] == "gpu"][0]
samples = len((gpu.get("trace") or {}).get("samples", []))
print(raw["wall_ns"] / 1e9, cpu_s, samples)
PY
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

printf '%-10s %12s %14s %10s\n' "sampler" "wall_s" "process_cpu_s" "samples"
for period in 0 100 10; do
    : > "$WORK/w"; : > "$WORK/c"; : > "$WORK/n"
    for _ in $(seq "$RUNS"); do
        read -r wall cpu n < <(run_one "$period")
        echo "$wall" >> "$WORK/w"
        echo "$cpu" >> "$WORK/c"
        echo "$n" >> "$WORK/n"
    done
    label=$([ "$period" = 0 ] && echo off || echo "${period} ms")
    printf '%-10s %12.3f %14.3f %10s\n' "$label" "$(median < "$WORK/w")" "$(median < "$WORK/c")" "$(median < "$WORK/n")"
done
