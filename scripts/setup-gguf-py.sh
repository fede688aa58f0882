#!/usr/bin/env bash
# llama.cpp's gguf-py (PyPI `gguf`) for the test that loads a Qwen2 GGUF written the way
# llama.cpp's converter writes it (scripts/reference/qwen2_gguf_py.py): a venv under
# ~/.cache/lem-ref-venv (or $LEM_REF_VENV), made once and reused. Prints its python.
set -euo pipefail
VENV="${LEM_REF_VENV:-$HOME/.cache/lem-ref-venv}"
if ! "$VENV/bin/python" -c "import gguf, numpy" >/dev/null 2>&1; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet "gguf>=0.19,<0.20" numpy >&2
fi
echo "$VENV/bin/python"
