#!/usr/bin/env bash
# Headless Chromium for the report's browser test (coordinator/tests/cli_report.rs):
# installs Debian's `chromium` package when no Chromium is on the PATH. Needs root
# (or sudo) and apt; prints the browser's path.
set -euo pipefail
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        exit 0
    fi
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends chromium >&2
command -v chromium
