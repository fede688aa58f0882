#!/usr/bin/env bash
# One crypto provider: rustls runs on ring, and nothing may pull in aws-lc-rs (a second
# provider, a C/CMake build, and a second set of primitives to trust).
set -euo pipefail
cd "$(dirname "$0")/.."

# The crate that must be absent (an argument only to test this script: `check-deps.sh ring` fails).
forbidden="${1:-aws-lc-rs}"

# `cargo tree -i` fails with "did not match any packages" when the crate is absent;
# any other failure (no lockfile, no network for metadata) must not pass as absent.
if output=$(cargo tree --workspace --all-features --target all -e normal,build,dev -i "$forbidden" 2>&1); then
    echo "check-deps: $forbidden is in the dependency tree; build every rustls config with the ring provider:" >&2
    echo "$output" >&2
    exit 1
fi
if ! grep -q "did not match any packages" <<<"$output"; then
    echo "check-deps: cargo tree failed:" >&2
    echo "$output" >&2
    exit 1
fi
echo "check-deps: no $forbidden in the tree (ring is the only crypto provider)"
