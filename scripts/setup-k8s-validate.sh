#!/usr/bin/env bash
# kubernetes-validate (PyPI; the Kubernetes OpenAPI schemas of each release, bundled) in a
# venv under ~/.cache/lem-k8s-venv (or $LEM_K8S_VENV), for the deploy test that checks
# deploy/kubernetes/*.yaml against them (coordinator/tests/deploy_run.rs). Prints the tool's path.
set -euo pipefail
VENV="${LEM_K8S_VENV:-$HOME/.cache/lem-k8s-venv}"
VERSION=1.37.0
tool="$VENV/bin/kubernetes-validate"
if ! [ -x "$tool" ] || [ "$("$tool" --version 2>/dev/null | awk '{print $NF}')" != "$VERSION" ]; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q "kubernetes-validate==$VERSION" >&2
fi
echo "$tool"
