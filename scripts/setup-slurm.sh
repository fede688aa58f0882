#!/usr/bin/env bash
# Slurm and munge for the deploy test that runs deploy/slurm/lem-agents.sbatch on a
# throwaway one-node cluster (coordinator/tests/deploy_run.rs, scripts/slurm-smoke.sh).
# Installs Debian's packages when sbatch is missing; needs root (or sudo) and apt.
set -euo pipefail
if command -v sbatch >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >&2
