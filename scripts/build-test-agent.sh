#!/usr/bin/env bash
# Builds every test target of the workspace, as `cargo test --workspace` is about to,
# and prints the path of the `lem-agent` binary that build made. `.ci/run` exports it
# as LEM_AGENT_BIN, so the tests that start real agents (coordinator/tests/serve_support/
# node.rs) take it as it is and never run `cargo build --bin lem-agent` themselves: with
# a plain build's features that rebuilds the TLS stack for minutes, and the next test
# build flips it back.
set -euo pipefail
cd "$(dirname "$0")/.."

# The test build's own artifacts: same profile and features as `cargo test --workspace`,
# so that run finds them fresh. Diagnostics go to stderr; stdout is cargo's JSON.
messages=$(cargo test --workspace --no-run --message-format=json-render-diagnostics)
agent=$(grep -o '"executable":"[^"]*/lem-agent"' <<<"$messages" | tail -n 1 | cut -d'"' -f4 || true)
if [[ -z "$agent" || ! -x "$agent" ]]; then
    echo "build-test-agent: the test build made no lem-agent binary" >&2
    exit 1
fi
echo "$agent"
