#!/usr/bin/env bash
# Start a PostgreSQL server for the test suite (Debian 12, no systemd, run as root).
#
# Idempotent: installs Debian's postgresql if missing, creates a dedicated cluster "repvgg" (so the
# distribution's "main" cluster on 5432 is left alone) listening on 127.0.0.1:$REPVGG_PG_PORT
# (default 54329) only, starts it with pg_ctlcluster, creates role repvgg (password repvgg) and
# database repvgg_optuna owned by it. A rerun on a running server is a quick no-op.
# The last line printed is the SQLAlchemy URL. Stop with scripts/postgres_down.sh.
set -euo pipefail

PORT=${REPVGG_PG_PORT:-54329}
CLUSTER=repvgg
ROLE=repvgg
PASSWORD=repvgg
DB=repvgg_optuna
WAIT_S=${REPVGG_PG_WAIT_S:-30}

log() { echo "postgres_up: $*" >&2; }

[[ $(id -u) -eq 0 ]] || { echo "postgres_up: must run as root" >&2; exit 1; }
mkdir -p /run/lock
exec 9>/run/lock/repvgg-postgres.lock
flock -w 300 9 || { echo "postgres_up: could not take /run/lock/repvgg-postgres.lock" >&2; exit 1; }

if ! dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q 'install ok installed'; then
    log "installing postgresql"
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # keep apt from starting the default cluster
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    rc=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; } || rc=$?
    ((created_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || { log "apt-get failed (rc=$rc)"; exit 1; }
fi

VER=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n1)
[[ -x /usr/lib/postgresql/$VER/bin/postgres ]] || { log "no PostgreSQL server binary found"; exit 1; }
mkdir -p /run/postgresql
chown postgres:postgres /run/postgresql
chmod 2775 /run/postgresql

if [[ ! -f /etc/postgresql/$VER/$CLUSTER/postgresql.conf ]]; then
    log "creating cluster $VER/$CLUSTER on port $PORT"
    # pg_dropcluster leaves the directory behind when conf.d holds our file; clear that leftover.
    rm -rf "/etc/postgresql/$VER/$CLUSTER"
    pg_createcluster "$VER" "$CLUSTER" --port="$PORT" --start-conf=manual >/dev/null
fi
conf=/etc/postgresql/$VER/$CLUSTER/conf.d/repvgg.conf
want="# Written by repvgg-search scripts/postgres_up.sh
listen_addresses = '127.0.0.1'
port = $PORT
synchronous_commit = off
max_connections = 200"
if [[ ! -f $conf || $(cat "$conf") != "$want" ]]; then
    printf '%s\n' "$want" >"$conf"
    chown postgres:postgres "$conf"
    if pg_lsclusters -h "$VER" "$CLUSTER" | awk '{print $4}' | grep -q online; then
        log "config changed: restarting cluster $VER/$CLUSTER"
        pg_ctlcluster "$VER" "$CLUSTER" restart 9>&-
    fi
fi

status=$(pg_lsclusters -h "$VER" "$CLUSTER" | awk '{print $4}')
if [[ $status != online* ]]; then
    log "starting cluster $VER/$CLUSTER"
    pg_ctlcluster "$VER" "$CLUSTER" start 9>&- || {
        tail -n 30 "/var/log/postgresql/postgresql-$VER-$CLUSTER.log" >&2 || true
        exit 1
    }
fi

ready=0
for ((i = 0; i < WAIT_S * 5; i++)); do
    if pg_isready -q -h 127.0.0.1 -p "$PORT"; then ready=1; break; fi
    sleep 0.2
done
if ((!ready)); then
    log "server not ready on 127.0.0.1:$PORT after ${WAIT_S}s"
    tail -n 30 "/var/log/postgresql/postgresql-$VER-$CLUSTER.log" >&2 || true
    exit 1
fi

psql_admin() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -h /run/postgresql "$@"; }
if [[ $(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname='$ROLE'") != 1 ]]; then
    log "creating role $ROLE"
    psql_admin -c "CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'"
fi
if [[ $(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'") != 1 ]]; then
    log "creating database $DB"
    psql_admin -c "CREATE DATABASE $DB OWNER $ROLE"
fi

echo "postgres: up, cluster $VER/$CLUSTER on 127.0.0.1:$PORT" >&2
echo "postgresql+psycopg2://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
