#!/usr/bin/env bash
# Runs deploy/slurm/lem-agents.sbatch for real on a throwaway one-node Slurm cluster on
# this host, against a `lem serve` on loopback:
#   munged + slurmctld + slurmd (state, logs, sockets under one temp dir; this host is the
#   only node, with 2 fake GPU device files as its `gpu` GRES) -> `lem serve` ->
#   `lem token create --uses 1` -> `sbatch --gres=gpu:1 deploy/slurm/lem-agents.sbatch`
#   -> the agent is listed (offering only the GPU Slurm gave it) -> a 1-experiment,
#   2-cycle sweep on SmolLM2 (CPU inference, fake NVML) is accepted -> `scancel` -> the
#   job leaves squeue, the agent logged a clean stop, the coordinator lists it lost.
# Everything it started is stopped on exit (trap), the temp dir removed unless
# LEM_SMOKE_KEEP=1. Needs root, slurm-wlm and munge (Debian: apt-get install slurm-wlm
# munge), python3, and built binaries:
#   LEM_BIN        lem            (default $CARGO_TARGET_DIR/debug/lem, else target/debug/lem)
#   LEM_AGENT_BIN  lem-agent      (default next to LEM_BIN)
#   FAKE_NVML_LIB  tests/fake-nvml's library (default libnvidia_ml.so next to LEM_BIN;
#                  cargo build --workspace -p fake-nvml)
#   LEM_TEST_MODEL the SmolLM2 GGUF (default as scripts/fetch-model.sh installs it)
# Prints one line of timings at the end: `slurm-smoke: agent joined after A s, sweep
# accepted after B s, job ended C s after scancel, agent listed lost after D s`.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "slurm-smoke: $*" >&2; }
die() {
    say "FAILED: $*"
    exit 1
}

# --- inputs ---------------------------------------------------------------------------
[[ $(id -u) == 0 ]] || die "needs root (slurmd runs jobs as their user and needs root for that)"
for tool in munged mungekey slurmctld slurmd sbatch squeue scancel sinfo scontrol python3; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install slurm-wlm munge)"
done
bin_dir=${CARGO_TARGET_DIR:-$repo/target}/debug
LEM_BIN=${LEM_BIN:-$bin_dir/lem}
LEM_AGENT_BIN=${LEM_AGENT_BIN:-$(dirname "$LEM_BIN")/lem-agent}
FAKE_NVML_LIB=${FAKE_NVML_LIB:-$(dirname "$LEM_BIN")/libnvidia_ml.so}
model=${LEM_TEST_MODEL:-${LEM_MODEL_DIR:-$HOME/.cache/lem/models}/HuggingFaceTB--SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
[[ -x $LEM_BIN ]] || die "LEM_BIN=$LEM_BIN is not an executable (cargo build --workspace --bins)"
[[ -x $LEM_AGENT_BIN ]] || die "LEM_AGENT_BIN=$LEM_AGENT_BIN is not an executable (cargo build --workspace --bins)"
[[ -f $FAKE_NVML_LIB ]] || die "FAKE_NVML_LIB=$FAKE_NVML_LIB does not exist (cargo build --workspace -p fake-nvml)"
[[ -f $model ]] || die "the model is not at $model (scripts/fetch-model.sh, or set LEM_TEST_MODEL)"
# Bounded waits: generous for a loaded 2-core machine, still ending on a hang.
wait_s=${LEM_SMOKE_WAIT_S:-300}

# --- cleanup ----------------------------------------------------------------------------
work=$(mktemp -d /tmp/lem-slurm-smoke.XXXXXX)
# slurmd and munged want to reach their sockets and spool below it.
chmod 755 "$work"
job=""
serve_pid=""
ok=0
stop_pid() { # pid: SIGTERM, then SIGKILL after 30 s
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    set +e
    [[ -n $job ]] && scancel "$job" 2>/dev/null
    [[ -n $serve_pid ]] && stop_pid "$serve_pid"
    for pidfile in "$work/slurmd.pid" "$work/slurmctld.pid" "$work/munge/munged.pid"; do
        [[ -f $pidfile ]] && stop_pid "$(cat "$pidfile")"
    done
    if ((ok == 0)); then
        for log in "$work"/log/*.log "$work"/submit/*.out "$work/serve.log"; do
            [[ -f $log ]] || continue
            say "--- last lines of $log"
            tail -n 40 "$log" >&2
        done
    fi
    if [[ ${LEM_SMOKE_KEEP:-0} == 1 ]]; then
        say "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'say "FAILED at line $LINENO: $BASH_COMMAND"' ERR

free_tcp_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# `json_query EXPR` reads JSON on stdin and prints EXPR evaluated on it as `j`.
json_query() {
    python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"
}
# `wait_for WHAT CMD...`: runs CMD every second until it succeeds, at most $wait_s s.
wait_for() {
    local what=$1
    shift
    local deadline=$((SECONDS + wait_s))
    until "$@"; do
        ((SECONDS < deadline)) || die "timed out after ${wait_s}s waiting for $what"
        sleep 1
    done
}

# --- munge ------------------------------------------------------------------------------
mkdir -m 755 "$work/munge"
mungekey --create --keyfile="$work/munge/munge.key"
munge_socket=$work/munge/munge.socket
# --force: munged refuses root without it; the key and socket are this run's own.
munged --force --key-file="$work/munge/munge.key" --socket="$munge_socket" \
    --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" \
    --seed-file="$work/munge/munged.seed"

# --- slurm ------------------------------------------------------------------------------
node=$(hostname)
mkdir -p "$work/state" "$work/log" "$work/spool/slurmd-$node" "$work/dev" "$work/submit"
# Two GPU device files for the gpu GRES (char 1:3, as /dev/null): Slurm hands out their
# indexes and sets CUDA_VISIBLE_DEVICES from them (for plain files it sets nothing, and the
# agent would offer every GPU); the fake NVML is the GPUs.
for i in 0 1; do
    mknod "$work/dev/nvidia$i" c 1 3 || die "cannot mknod a device file (no CAP_MKNOD here?)"
done
export SLURM_CONF=$work/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=lemsmoke
SlurmctldHost=$node
SlurmctldPort=$(free_tcp_port)
SlurmdPort=$(free_tcp_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$munge_socket
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool/slurmd-%n
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
GresTypes=gpu
NodeName=$node CPUs=$(nproc) Gres=gpu:2 State=UNKNOWN
PartitionName=smoke Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
echo "NodeName=$node Name=gpu File=$work/dev/nvidia[0-1]" >"$work/gres.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
node_idle() { [[ $(sinfo --noheader --nodes="$node" --format=%t 2>/dev/null) == idle ]]; }
wait_for "node $node idle in sinfo" node_idle
say "slurm up: $(sinfo --noheader --format='%P %D %t %G')"

# --- coordinator ------------------------------------------------------------------------
data=$work/coordinator
mkdir -m 700 "$data"
LEM_LOG=info "$LEM_BIN" serve --listen 127.0.0.1:0 --data-dir "$data" >/dev/null 2>"$work/serve.log" &
serve_pid=$!
addr_written() { [[ -f $data/serve.addr && $(tail -c1 "$data/serve.addr") == "" ]] && grep -q : "$data/serve.addr"; }
wait_for "lem serve to write its address" addr_written
coordinator=$(tr -d '\n' <"$data/serve.addr")
lem() { "$LEM_BIN" --data-dir "$data" --coordinator "$coordinator" "$@"; }
say "lem serve on $coordinator"

# One token, one use: one node. Made while the server runs, so it goes through it.
"$LEM_BIN" token create --uses 1 --ttl 15m --data-dir "$data" >"$work/tokens.txt"

# --- the agent, through Slurm -----------------------------------------------------------
# The simulated node: the fake NVML with two H100s; Slurm hands out one of its two GPUs.
node_dir=$work/node
mkdir -p "$node_dir/powercap"
cp "$FAKE_NVML_LIB" "$node_dir/libnvidia-ml.so.1"
cat >"$node_dir/scenario.json" <<'EOF'
{ "driver_version": "550.54.15", "gpus": [
  { "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-51a00000-0000-4000-8000-000000000000",
    "power": [[0.0, 200.0]], "temperature_c": [[0.0, 40]], "energy_start_mj": 1000000 },
  { "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-51a00000-0000-4000-8000-000000000001",
    "power": [[0.0, 300.0]], "temperature_c": [[0.0, 45]], "energy_start_mj": 2000000 } ] }
EOF
# What a user passes: the script's documented variables, the binary on PATH, and this
# node's hardware (the fake NVML) and an offline model cache; sbatch exports them all.
export LEM_COORDINATOR=$coordinator
export LEM_JOIN_TOKENS_FILE=$work/tokens.txt
export PATH=$(dirname "$LEM_AGENT_BIN"):$PATH
export LEM_NVML_LIB=$node_dir/libnvidia-ml.so.1
export FAKE_NVML_SCENARIO=$node_dir/scenario.json
export LEM_POWERCAP_ROOT=$node_dir/powercap
export HF_HUB_OFFLINE=1 NO_COLOR=1 RUST_LOG=info
export TMPDIR=$work/node-tmp
mkdir -p "$TMPDIR"
unset LEM_DATA_DIR LEM_AGENT_DATA_DIR LEM_JOIN_TOKEN LEM_AGENT_CONFIG LEM_NODE_NAME CUDA_VISIBLE_DEVICES
start=$SECONDS
cd "$work/submit"
job=$(sbatch --parsable --nodes=1 --gres=gpu:1 --export=ALL "$repo/deploy/slurm/lem-agents.sbatch")
say "submitted Slurm job $job"

agent_json() { lem agent list --json; }
job_gone() { # squeue answered and lists the job no more (or no longer knows it)
    local listed
    if ! listed=$(squeue --noheader --jobs="$job" 2>&1); then
        [[ $listed == *"Invalid job id"* ]]
        return
    fi
    [[ -z $listed ]]
}
agent_joined() {
    # A batch script that failed ends the job: say so now rather than at the timeout.
    job_gone && die "Slurm job $job ended before its agent joined (its output is below)"
    agent_json 2>/dev/null | json_query "len(j) == 1 and j[0].get('alive') is True" | grep -qx True
}
wait_for "the agent of job $job in \`lem agent list\`" agent_joined
joined_s=$((SECONDS - start))
agents=$(agent_json)
say "agent joined after ${joined_s}s: $(echo "$agents" | json_query "j[0]['id'], [g['key'] for g in j[0]['gpus']]")"
# Slurm gave the job GPU index 0 (CUDA_VISIBLE_DEVICES=0): the agent offers that one only.
offered=$(echo "$agents" | json_query "' '.join(g['key'] for g in j[0]['gpus'])")
[[ $offered == gpu:GPU-51a00000-0000-4000-8000-000000000000 ]] ||
    die "the agent offers '$offered'; Slurm gave it GPU 0 only (CUDA_VISIBLE_DEVICES)"

# --- a sweep ----------------------------------------------------------------------------
cat >"$work/smoke.yaml" <<EOF
config_name: slurm-smoke
model_name: $model
max_input_tokens: 16
max_output_tokens: 2
num_input_prompts: 1
fp_precision: float32
num_cycles: 1
random_seed: 1
warmup_prompts: 0
idle_baseline_s: 0
batching_options:
  batch_size: 1
  strategy: static
decoder_config:
  preset: deterministic
prompt_source:
  type: synthetic
  input_tokens: 8
EOF
cycles=2
sweep_start=$SECONDS
lem sweep submit --cycles "$cycles" --name slurm-smoke "$work/smoke.yaml" >&2
progress() { lem status --json | json_query "json.dumps(j['sweeps'][0]['progress'])"; }
sweep_done() {
    lem status --json 2>/dev/null |
        json_query "(lambda p: p['accepted'] + p['failed'] == $cycles)(j['sweeps'][0]['progress'])" |
        grep -qx True
}
wait_for "the sweep's $cycles jobs" sweep_done
sweep_s=$((SECONDS - sweep_start))
final=$(progress)
accepted=$(echo "$final" | json_query "j['accepted']")
[[ $accepted == "$cycles" ]] || die "sweep progress $final: $accepted of $cycles jobs accepted"
say "sweep accepted after ${sweep_s}s: $final"

# --- scancel: the agent stops cleanly -----------------------------------------------------
cancel_start=$SECONDS
scancel "$job"
wait_for "job $job to leave squeue" job_gone
job=""
ended_s=$((SECONDS - cancel_start))
out=$(ls "$work"/submit/slurm-*.out)
grep -q "signal received" "$out" || die "the agent's log ($out) has no 'signal received'"
grep -q "INFO lem_agent::daemon: stopped" "$out" || die "the agent did not log a clean stop in $out"
# The coordinator marks an agent lost when it has not heard from it for its agent timeout.
agent_lost() {
    agent_json 2>/dev/null | json_query "j[0].get('alive') is False" | grep -qx True
}
wait_for "the coordinator to list the agent as lost" agent_lost
lost_s=$((SECONDS - cancel_start))
ok=1
say "agent joined after ${joined_s} s, sweep accepted after ${sweep_s} s, job ended ${ended_s} s after scancel, agent listed lost after ${lost_s} s"
