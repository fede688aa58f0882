#!/usr/bin/env bash
# A Python environment with pandas and pyarrow for the export tests
# (tests/export_pandas.py): created once under ~/.cache/lem-pyenv, completed if an older
# one lacks a package, reused after. Prints the interpreter's path.
set -euo pipefail
ENV_DIR="${LEM_PYENV:-$HOME/.cache/lem-pyenv}"
if ! "$ENV_DIR/bin/python" -c "import pandas, pyarrow" >/dev/null 2>&1; then
    [ -x "$ENV_DIR/bin/python" ] || python3 -m venv "$ENV_DIR" >&2
    "$ENV_DIR/bin/pip" install --quiet "pandas>=2,<3" "pyarrow>=15" >&2
fi
echo "$ENV_DIR/bin/python"
