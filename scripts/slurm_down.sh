#!/usr/bin/env bash
# Stop the single-node test SLURM cluster started by scripts/slurm_up.sh (packages stay installed).
# Stops slurmd, slurmctld, slurmdbd, mariadbd and munged by the pids in their pid files, each only
# where /proc/PID/comm names that daemon; never by process name. Job state and accounting data are
# kept under $REPVGG_SLURM_DIR (default /var/lib/repvgg-slurm), so a later slurm_up.sh resumes them.
# Job steps (slurmstepd) that are still running are left alone; cancel jobs first (scancel -u root)
# if they should not outlive the cluster.
set -uo pipefail

STATE=${REPVGG_SLURM_DIR:-/var/lib/repvgg-slurm}

[[ $(id -u) -eq 0 ]] || { echo "slurm_down: must run as root" >&2; exit 1; }
mkdir -p /run/lock
exec 9>/run/lock/repvgg-slurm.lock
flock -w 300 9 || { echo "slurm_down: could not take /run/lock/repvgg-slurm.lock" >&2; exit 1; }

# stop PIDFILE COMM
stop() {
    local pidfile=$1 comm=$2 pid i
    if [[ ! -s $pidfile ]]; then
        echo "slurm_down: $comm: no pid file" >&2
        return 0
    fi
    pid=$(head -n1 "$pidfile" 2>/dev/null | tr -dc '0-9')
    if [[ -z $pid || ! -r /proc/$pid/comm || $(cat "/proc/$pid/comm" 2>/dev/null) != "$comm" ]]; then
        echo "slurm_down: $comm: not running" >&2
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]]; then
        echo "slurm_down: $comm (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
    echo "slurm_down: stopped $comm (pid $pid)" >&2
}

stop "$STATE/run/slurmd.pid" slurmd
stop "$STATE/run/slurmctld.pid" slurmctld
stop "$STATE/run/slurmdbd.pid" slurmdbd
stop "$STATE/run/mariadbd.pid" mariadbd
stop "$STATE/munge/munged.pid" munged
echo "slurm: down"
