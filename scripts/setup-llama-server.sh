#!/usr/bin/env bash
# llama.cpp's OpenAI-compatible server (PyPI `llama-cpp-python[server]`) for the
# `engine: openai` tests: a venv under ~/.cache/lem-llama-venv (or $LEM_LLAMA_VENV),
# built once (compiling llama.cpp takes 15-25 min on 2 cores) and reused after.
# Prints the venv's python; `python -m llama_cpp.server` runs the server.
set -euo pipefail
VENV="${LEM_LLAMA_VENV:-$HOME/.cache/lem-llama-venv}"
if ! "$VENV/bin/python" -c "import llama_cpp.server.app" >/dev/null 2>&1; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --upgrade pip >&2
    # A CPU build for the host it runs on; the server extra brings uvicorn/fastapi.
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" \
        "$VENV/bin/pip" install --quiet "llama-cpp-python[server]>=0.3,<0.4" >&2
fi
echo "$VENV/bin/python"
