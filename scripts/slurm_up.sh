#!/usr/bin/env bash
# Start a real single-node SLURM cluster for the test suite (Debian 12, no systemd, run as root).
#
# Idempotent: installs the packages if missing, writes /etc/slurm/{slurm,gres,slurmdbd}.conf, and starts
#   munged (as user munge) -> mariadbd (127.0.0.1 only, private datadir) -> slurmdbd -> slurmctld -> slurmd,
# each only where its pid file does not point at a live process of that name. A rerun on a running
# cluster is a quick no-op. Clients need no environment variables (config is in /etc/slurm).
#
# State, logs and pid files live under $REPVGG_SLURM_DIR (default /var/lib/repvgg-slurm).
# Stop with scripts/slurm_down.sh (packages stay installed).
set -euo pipefail

STATE=${REPVGG_SLURM_DIR:-/var/lib/repvgg-slurm}
MYSQL_PORT=${REPVGG_SLURM_MYSQL_PORT:-33069}   # private MariaDB port, 127.0.0.1 only
WAIT_S=${REPVGG_SLURM_WAIT_S:-60}
CLUSTER=repvgg
PARTITION=debug
FAKE_GPUS=2
CONF_DIR=/etc/slurm
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

log() { echo "slurm_up: $*" >&2; }
die() { log "ERROR: $*"; dump_logs; exit 1; }

dump_logs() {
    local f
    for f in "$STATE"/log/*.log "$STATE"/munge/munged.log; do
        [[ -f $f ]] || continue
        echo "----- tail $f -----" >&2
        tail -n 30 "$f" >&2 || true
    done
}

[[ $(id -u) -eq 0 ]] || { echo "slurm_up: must run as root" >&2; exit 1; }

# Serialise concurrent callers (e.g. several test workers) so that no daemon is started twice.
# Daemons are started with fd 9 closed so that they do not keep holding the lock.
mkdir -p /run/lock
exec 9>/run/lock/repvgg-slurm.lock
flock -w 300 9 || { log "could not take /run/lock/repvgg-slurm.lock"; exit 1; }

# ---------------------------------------------------------------- install
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    # Keep package maintainer scripts from starting daemons with default configs (no systemd here).
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    rc=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null; } || rc=$?
    ((created_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || { log "apt-get failed (rc=$rc)"; exit 1; }
fi

# ---------------------------------------------------------------- helpers
# alive PIDFILE COMM -> 0 if the pid file names a live process whose /proc/PID/comm is COMM
alive() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(head -n1 "$1" 2>/dev/null | tr -dc '0-9')
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}

# wait_for SECONDS DESCRIPTION CMD... -> poll CMD every 0.2 s
wait_for() {
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "timed out after ${secs}s waiting for $what"
}

# install_if_changed SRC DEST MODE -> 0 (true) if DEST changed
install_if_changed() {
    if [[ -f $2 ]] && cmp -s "$1" "$2"; then
        rm -f "$1"
        return 1
    fi
    install -m "$3" "$1" "$2"
    rm -f "$1"
    return 0
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- directories
HOST=$(hostname -s)
NCPU=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
REAL_MB=$((MEM_MB * 9 / 10))
DEF_MEM=$((REAL_MB / NCPU / 4))   # several jobs fit at once when they ask for no memory
((DEF_MEM > 2048)) && DEF_MEM=2048

mkdir -p "$STATE"/{log,run,ctld,slurmd,munge} "$CONF_DIR" /run/munge
chmod 755 "$STATE"
chown munge:munge "$STATE/munge" /run/munge
chmod 700 "$STATE/munge"
chmod 755 /run/munge

if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating munge key"
    dd if=/dev/urandom bs=1024 count=1 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key

# ---------------------------------------------------------------- config
tmp=$(mktemp)
cat >"$tmp" <<EOF
# Written by repvgg-search scripts/slurm_up.sh; single-node test cluster. Edits are overwritten.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
JobRequeue=1
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MessageTimeout=10
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=10
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$NCPU RealMemory=$REAL_MB Gres=gpu:$FAKE_GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=60 State=UP
EOF
changed=0
install_if_changed "$tmp" "$CONF_DIR/slurm.conf" 644 && changed=1

# Fake GPUs: one device file per GPU (Slurm rejects a repeated File=), each a copy of /dev/null
# (char 1,3) under $STATE/dev; the trailing digit becomes the CUDA_VISIBLE_DEVICES index.
mkdir -p "$STATE/dev"
for ((i = 0; i < FAKE_GPUS; i++)); do
    f=$STATE/dev/gpu$i
    if [[ ! -c $f ]]; then
        rm -f "$f"
        mknod -m 666 "$f" c 1 3 || die "mknod $f failed"
    fi
done
tmp=$(mktemp)
{
    echo "# Fake GPUs (no device behind them) so that --gpus / --gres=gpu paths can be exercised."
    for ((i = 0; i < FAKE_GPUS; i++)); do echo "NodeName=$HOST Name=gpu File=$STATE/dev/gpu$i"; done
} >"$tmp"
install_if_changed "$tmp" "$CONF_DIR/gres.conf" 644 && changed=1

tmp=$(mktemp)
cat >"$tmp" <<EOF
# Written by repvgg-search scripts/slurm_up.sh. Edits are overwritten.
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
AuthType=auth/munge
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
install_if_changed "$tmp" "$CONF_DIR/slurmdbd.conf" 600 && changed=1

if ((changed)); then
    # Daemons started with an older config must be restarted to pick up the new one.
    for d in slurmd:slurmd slurmctld:slurmctld slurmdbd:slurmdbd; do
        if alive "$STATE/run/${d%%:*}.pid" "${d##*:}"; then
            log "config changed: restarting ${d%%:*}"
            pid=$(head -n1 "$STATE/run/${d%%:*}.pid")
            kill "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
        fi
    done
fi

# ---------------------------------------------------------------- munge
if ! alive "$STATE/munge/munged.pid" munged; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --force \
        --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" 9>&- \
        || die "munged failed to start"
fi
wait_for 10 munge bash -c 'munge -n | unmunge'

# ---------------------------------------------------------------- mariadb
MYSQL_DIR=$STATE/mysql
MYSQL_SOCK=$STATE/run/mysqld.sock
mysql_q() { mariadb --no-defaults --socket="$MYSQL_SOCK" -uroot "$@"; }
if [[ ! -d $MYSQL_DIR/mysql ]]; then
    log "initialising MariaDB datadir $MYSQL_DIR"
    rm -rf "$MYSQL_DIR"
    mkdir -p "$MYSQL_DIR"
    chown mysql:mysql "$MYSQL_DIR"
    mariadb-install-db --no-defaults --user=mysql --datadir="$MYSQL_DIR" \
        --auth-root-authentication-method=socket --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed (see $STATE/log/mariadb-install.log)"
fi
chown mysql:mysql "$STATE/run" 2>/dev/null || true
chmod 755 "$STATE/run"
if ! alive "$STATE/run/mariadbd.pid" mariadbd; then
    log "starting mariadbd on 127.0.0.1:$MYSQL_PORT"
    touch "$STATE/log/mariadbd.log"
    chown mysql:mysql "$STATE/log/mariadbd.log"
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$MYSQL_DIR" \
        --bind-address=127.0.0.1 --port="$MYSQL_PORT" --socket="$MYSQL_SOCK" \
        --pid-file="$STATE/run/mariadbd.pid" --log-error="$STATE/log/mariadbd.log" \
        --innodb-buffer-pool-size=1G --innodb-lock-wait-timeout=900 --innodb-log-file-size=64M \
        </dev/null >/dev/null 2>&1 9>&- &
    wait_for 30 "MariaDB" mariadb-admin --no-defaults --socket="$MYSQL_SOCK" -uroot ping
fi
if ! mysql_q -N -e "SELECT 1 FROM mysql.user WHERE User='slurm' AND Host='127.0.0.1'" 2>/dev/null | grep -q 1; then
    log "creating slurm_acct_db and user slurm"
    mysql_q <<'SQL' || die "creating the slurm database failed"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
fi

# ---------------------------------------------------------------- slurm daemons
if ! alive "$STATE/run/slurmdbd.pid" slurmdbd; then
    log "starting slurmdbd"
    /usr/sbin/slurmdbd 9>&- || die "slurmdbd failed to start"
fi
wait_for 30 "slurmdbd on port 6819" port_open 6819

if ! alive "$STATE/run/slurmctld.pid" slurmctld; then
    log "starting slurmctld"
    /usr/sbin/slurmctld 9>&- || die "slurmctld failed to start"
fi
wait_for 30 "slurmctld" timeout 5 scontrol ping

if ! alive "$STATE/run/slurmd.pid" slurmd; then
    log "starting slurmd"
    /usr/sbin/slurmd 9>&- || die "slurmd failed to start"
fi

# ---------------------------------------------------------------- wait for the node
state=""
resumed=0
for ((i = 0; i < WAIT_S * 2; i++)); do
    state=$(timeout 5 sinfo -h -N -n "$HOST" -p "$PARTITION" -o '%T' 2>/dev/null | head -n1 || true)
    case $state in
        idle | mixed | allocated | completing) break ;;
        down* | drain* | fail*)
            if ((!resumed && i >= 10)); then
                log "node state '$state'; trying to resume it"
                timeout 5 scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi
            ;;
    esac
    sleep 0.5
done
case $state in
    idle | mixed | allocated | completing) ;;
    *)
        timeout 5 scontrol show node "$HOST" >&2 || true
        die "node $HOST not up after ${WAIT_S}s (state '${state:-none}')"
        ;;
esac

# The cluster must be registered with slurmdbd, else sacct reports nothing.
if ! timeout 10 sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
    die "cluster $CLUSTER not registered in slurmdbd"
fi

echo "slurm: up, partition $PARTITION, node $HOST $state, $NCPU cpus, ${REAL_MB} MB, gpu:$FAKE_GPUS (fake), state in $STATE"
