#!/usr/bin/env bash
# Build `lem` with the CUDA backend (`--features cuda`) on a machine with or without a GPU.
#
# Without a CUDA toolkit, one is assembled from NVIDIA's PyPI wheels (nvcc, nvvm, headers,
# cudart, cuBLAS, cuRAND, NVRTC) under ~/.cache/lem-cuda-toolkit; nothing goes into the
# repository. The driver library (libcuda.so) is never in a wheel: a link-time stub is
# generated instead, and the real one comes from the NVIDIA driver where the binary runs.
#
#   CUDA_HOME          use this CUDA toolkit (must have bin/nvcc) instead of the wheels
#   CUDA_COMPUTE_CAP   GPU architecture to compile kernels for (default 90: H100/H200;
#                      80 A100, 89 L4/L40S/RTX 4090, 86 A10/RTX 3090, 100 B200)
#   LEM_CUDA_CACHE     wheel and toolkit cache (default ~/.cache/lem-cuda-toolkit)
#   CARGO_TARGET_DIR   cargo target dir (default ~/.cache/lem-target-cuda, kept apart from
#                      the CPU build's)
#   JOBS               parallel jobs for cargo and nvcc (default 1)
#
# The CUDA version is pinned to 13.0 (the oldest 13.x): candle compiles most kernels to
# PTX, which the driver JIT-compiles, so the driver must be at least as new as the nvcc
# that wrote the PTX (CUDA 13.0: driver >= 580). cudarc 0.19 supports CUDA <= 13.4.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${LEM_CUDA_CACHE:-$HOME/.cache/lem-cuda-toolkit}"
jobs="${JOBS:-1}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lem-target-cuda}"

# One CUDA release's wheels (the cu13 wheels all unpack into nvidia/cu13/).
WHEELS=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.0.2.14
    nvidia-curand==10.4.0.35
)
CUDA_LABEL="13.0"

say() { echo "build-cuda: $*" >&2; }

# Lays out a toolkit from the wheels and prints its root.
wheel_toolkit() {
    local wheels="$cache/wheels-$CUDA_LABEL" tk="$cache/cuda-$CUDA_LABEL"
    local root="$tk/nvidia/cu13"
    if [[ -x "$root/bin/nvcc" && -f "$tk/.complete" ]]; then
        echo "$root"
        return
    fi
    mkdir -p "$wheels"
    say "downloading CUDA $CUDA_LABEL wheels into $wheels"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" "${WHEELS[@]}" >&2
    rm -rf "$tk"
    mkdir -p "$tk"
    local spec name
    for spec in "${WHEELS[@]}"; do
        # nvidia-cuda-nvcc==13.0.88 -> nvidia_cuda_nvcc-13.0.88-*.whl
        name="$(echo "${spec%%==*}" | tr - _)-${spec##*==}-"
        python3 -m zipfile -e "$(ls "$wheels/$name"*.whl | head -1)" "$tk"
    done
    # Wheels lose the executable bit and ship only versioned sonames; the linker wants
    # libX.so.
    chmod +x "$root"/bin/* "$root"/nvvm/bin/*
    local lib
    for lib in "$root"/lib/lib*.so.*; do
        local base="${lib##*/}"
        ln -sf "$base" "$root/lib/${base%%.so.*}.so"
    done
    touch "$tk/.complete"
    echo "$root"
}

# Writes lib/stubs/libcuda.so exporting every driver-API function cudarc declares, so the
# binary links; at run time the loader finds the driver's libcuda.so.1 (same soname).
libcuda_stub() {
    local root="$1" stubs="$1/lib/stubs"
    [[ -f "$stubs/libcuda.so" ]] && return
    local cudarc
    cudarc="$(cd "$repo" && cargo metadata --format-version 1 --features cuda 2>/dev/null |
        python3 -c 'import json,sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc": print(p["manifest_path"].rsplit("/", 1)[0]); break')"
    if [[ -z "$cudarc" ]]; then
        say "cannot find cudarc's sources (cargo metadata failed)"
        exit 1
    fi
    mkdir -p "$stubs"
    grep -ohE '^pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc/src/driver/sys/mod.rs" |
        awk '{print $4}' | sort -u |
        sed 's/.*/int &(void) { return 999; }/' >"$stubs/libcuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda_stub.c"
    ln -sf libcuda.so "$stubs/libcuda.so.1"
    say "generated a libcuda.so link stub ($(wc -l <"$stubs/libcuda_stub.c") functions)"
}

if [[ -n "${CUDA_HOME:-}" ]]; then
    root="$CUDA_HOME"
    [[ -x "$root/bin/nvcc" ]] || { say "CUDA_HOME=$root has no bin/nvcc"; exit 1; }
    say "using the CUDA toolkit at $root"
else
    root="$(wheel_toolkit)"
    libcuda_stub "$root"
fi

# nvcc (cudaforge, cudarc's version check), the toolkit root (cudarc's link search: lib/
# and lib/stubs/), and the kernel architecture (no nvidia-smi here).
export PATH="$root/bin:$PATH"
export CUDA_HOME="$root" CUDA_PATH="$root" CUDA_ROOT="$root"
export CUDAFORGE_THREADS="$jobs"
say "$(nvcc --version | tail -2 | head -1)"
say "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CARGO_TARGET_DIR=$CARGO_TARGET_DIR jobs=$jobs"

cd "$repo"
nice -n 19 cargo build --release --features cuda --bin lem -j "$jobs"

bin="$CARGO_TARGET_DIR/release/lem"
echo
echo "CUDA build of lem: $bin ($(du -h "$bin" | cut -f1))"
echo "Needs at run time: the NVIDIA driver (libcuda.so.1) and these CUDA $CUDA_LABEL libraries:"
ldd "$bin" | grep -E 'cuda|cublas|curand|nvrtc' | sed 's/^/  /' || true
echo "On the GPU host, either install the CUDA $CUDA_LABEL runtime libraries, or copy"
echo "  $root/lib"
echo "there and run with LD_LIBRARY_PATH pointing at it (libcuda comes from the driver)."
