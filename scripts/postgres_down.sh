#!/usr/bin/env bash
# Stop the PostgreSQL cluster "repvgg" started by scripts/postgres_up.sh (data and packages stay).
set -euo pipefail
CLUSTER=repvgg
[[ $(id -u) -eq 0 ]] || { echo "postgres_down: must run as root" >&2; exit 1; }
mkdir -p /run/lock
exec 9>/run/lock/repvgg-postgres.lock
flock -w 300 9 || { echo "postgres_down: could not take /run/lock/repvgg-postgres.lock" >&2; exit 1; }
command -v pg_lsclusters >/dev/null || { echo "postgres: down (not installed)"; exit 0; }
VER=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -n | tail -n1)
if [[ -n $VER && -d /etc/postgresql/$VER/$CLUSTER ]] &&
    pg_lsclusters -h "$VER" "$CLUSTER" | awk '{print $4}' | grep -q online; then
    # pg_ctl stop -m fast: signals the postmaster named in the cluster's pid file.
    pg_ctlcluster "$VER" "$CLUSTER" stop -m fast
fi
echo "postgres: down"
