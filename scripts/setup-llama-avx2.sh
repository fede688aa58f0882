#!/usr/bin/env bash
# llama.cpp built for AVX2 only (no AVX-512, no AVX-VNNI, no AMX), for an AVX2 side by side
# on an AVX-512 host: lem with LEM_CPU_KERNEL=avx2 against a llama.cpp that cannot use more.
# A venv under ~/.cache/lem-llama-avx2-venv (or $LEM_LLAMA_AVX2_VENV) with the same
# llama-cpp-python version as scripts/bench-llamacpp.py names, compiled from the sdist
# (15-25 min on 2 cores), reused after. Fails unless llama.cpp then reports AVX2 = 1 and
# AVX512 = 0. Prints the venv's python, for LLAMA_PYTHON of scripts/bench-interleaved.sh.
set -euo pipefail
VENV="${LEM_LLAMA_AVX2_VENV:-$HOME/.cache/lem-llama-avx2-venv}"
VERSION="${LEM_LLAMA_CPP_PYTHON_VERSION:-0.3.36}"

# The instruction sets llama.cpp's CPU backend was compiled with, as it reports them.
check_features() {
    "$VENV/bin/python" - <<'PY'
import re, sys
import llama_cpp
info = llama_cpp.llama_print_system_info().decode()
# "CPU : SSE3 = 1 | AVX2 = 1 | ..."; a feature the build lacks is left out, not "= 0".
features = dict(re.findall(r"(\w+) = (\S+)", info))
print(f"llama.cpp system info: {info.strip()}", file=sys.stderr)
wider = sorted(k for k, v in features.items()
               if v == "1" and k.startswith(("AVX512", "AVX_VNNI", "AMX")))
if features.get("AVX2") != "1" or wider:
    sys.exit(f"not an AVX2-only build: AVX2={features.get('AVX2')}, also on: {wider}")
PY
}

if ! "$VENV/bin/python" -c "import llama_cpp" >/dev/null 2>&1; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --upgrade pip >&2
    # GGML_NATIVE=OFF stops -march=native (which would turn AVX-512 back on here); the
    # rest is a Haswell-class x86-64: AVX, AVX2, FMA, F16C, BMI2. --no-binary and
    # --no-cache-dir keep pip from reusing a wheel built with other flags.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
-DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
-DGGML_AMX_BF16=OFF" \
        nice -n 10 "$VENV/bin/pip" install --quiet --no-cache-dir \
        --no-binary llama-cpp-python "llama-cpp-python[server]==$VERSION" >&2
fi
check_features
echo "$VENV/bin/python"
