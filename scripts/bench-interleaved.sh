#!/usr/bin/env bash
# lem and llama.cpp side by side on a shared machine: ROUNDS rounds, each one run of lem
# (scripts/bench-cpu.sh) then one of llama.cpp (scripts/bench-llamacpp.py), batch 1 and 8,
# with the load average before each, so both see the same load; medians per side at the end.
# Usage: scripts/bench-interleaved.sh [ROUNDS] [THREADS]
#   LEM_BIN      a built `lem` (default: a release build, as bench-cpu.sh does)
#   LLAMA_PYTHON python with llama-cpp-python (default ~/.cache/lem-llama-venv/bin/python)
#   LEM_BENCH_MODEL=gemma3  Gemma 3 270M Q4_K_M on both sides instead of SmolLM2 Q4_1
#   LEM_BENCH_BATCHES       comma-separated batch sizes for both sides (default 1,8)
#   LEM_CPU_KERNEL=avx2     lem's AVX2 kernels; with LLAMA_PYTHON from scripts/setup-llama-avx2.sh
#                           both sides are AVX2-only on an AVX-512 host. The summary names
#                           the instruction sets each side ran and warns when they differ.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
threads="${2:-2}"
py="${LLAMA_PYTHON:-$HOME/.cache/lem-llama-venv/bin/python}"
if [ "${LEM_BENCH_MODEL:-}" = gemma3 ]; then
  export LEM_BENCH_MODEL=google/gemma-3-270m-GGUF
  export LEM_TEST_MODEL="${LEM_TEST_MODEL:-$HOME/.cache/lem/models/google--gemma-3-270m-GGUF/gemma-3-270m-q4_k_m.gguf}"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for r in $(seq "$rounds"); do
  echo "round $r load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
  scripts/bench-cpu.sh 1 "$threads" | sed 's/^/lem /' | tee -a "$log"
  echo "round $r load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
  "$py" scripts/bench-llamacpp.py 1 "$threads" "${LEM_BENCH_BATCHES:-1,8}" | tee -a "$log"
done
python3 - "$log" <<'PY'
import re, sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(lem|llama\.cpp) batch (\d+):.*?decode ([\d.]+) tok/s.*?prefill ([\d.]+) tok/s", line)
    if m:
        side, b, dec, pre = m.group(1), int(m.group(2)), float(m.group(3)), float(m.group(4))
        rows.setdefault((side, b), []).append((dec, pre))
loads = [float(l.split()[3]) for l in open(sys.argv[1]) if l.startswith("round")]
print(f"1-minute load average during the runs: {min(loads):.1f}-{max(loads):.1f}")
# What ran, as each side reports it: lem's compute_dtype, llama.cpp's system info.
lem_kernels = sorted({l.split(":", 1)[1].strip() for l in open(sys.argv[1]) if l.startswith("lem compute:")})
cpp_info = sorted({l.split(":", 1)[1].strip() for l in open(sys.argv[1]) if l.startswith("llama.cpp system info:")})
print(f"lem compute: {' / '.join(lem_kernels) or 'not reported'}")
print(f"llama.cpp system info: {' / '.join(cpp_info) or 'not reported'}")
lem_avx512 = any("avx512" in k for k in lem_kernels)
cpp_avx512 = any(re.search(r"\bAVX512 = 1", i) for i in cpp_info)
if lem_kernels and cpp_info and lem_avx512 != cpp_avx512:
    print(f"WARNING: not like for like: lem {'used' if lem_avx512 else 'did not use'} AVX-512, "
          f"llama.cpp {'did' if cpp_avx512 else 'did not'} (LEM_CPU_KERNEL / LLAMA_PYTHON)")
for b in sorted({b for _, b in rows}):
    for what, i in (("decode", 0), ("prefill", 1)):
        lem = st.median(v[i] for v in rows.get(("lem", b), [(0, 0)]))
        cpp = st.median(v[i] for v in rows.get(("llama.cpp", b), [(0, 0)]))
        n = len(rows.get(("lem", b), []))
        ratio = lem / cpp if cpp else float("nan")
        print(f"batch {b} {what}: lem {lem:.1f} tok/s, llama.cpp {cpp:.1f} tok/s, ratio {ratio:.2f} (median of {n})")
PY
