#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests marked `slurm` (tests/slurm/).
#
#   bash tests/slurm/cluster.sh start    # install Debian's SLURM packages if missing, start it
#   bash tests/slurm/cluster.sh status   # exit 0 iff sinfo answers and the node takes jobs
#   bash tests/slurm/cluster.sh stop     # stop every daemon this script started
#
# For CI and throw-away machines (Debian-like, as root, without systemd): it writes
# /etc/slurm/slurm.conf and slurmdbd.conf, and refuses to touch a slurm.conf it did not write.
# Daemons: munged, mariadbd (accounting storage), slurmdbd (so that `sacct` works: Snakemake's
# SLURM plugin polls job states with it), slurmctld and slurmd. `start` is idempotent: with
# everything up it returns at once; a daemon whose PID file is stale (this machine's /run is on
# disk and outlives the processes) is started again. One partition, `debug`, holds the node.
set -euo pipefail

CLUSTER=fdrl
ACCOUNT=fdrl
PARTITION=debug
STATE=/run/fdrl-slurm      # the PID of each daemon this script started, as NAME.pid
MARK="# Written by fdrl's tests/slurm/cluster.sh"
SLURM_CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
# Started in this order, stopped in the reverse one.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

die() { echo "cluster.sh: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*"; }

# ---- processes ---------------------------------------------------------------------------------

# The live PID recorded for daemon $1 (empty if none): the process must exist, have that command
# name and not be a zombie, since a PID file in /run can outlive its process and its PID be reused.
live_pid() {
    local name=$1 pid state
    pid=$(cat "$STATE/$name.pid" 2>/dev/null) || return 0
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 0
    state=$(sed -E 's/^[0-9]+ \(.*\) (\S).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 0
    if [[ $state != Z ]]; then echo "$pid"; fi
}

# Records the PID that daemon $1 wrote to its own PID file $2 (waiting up to 30 s for it).
record_pid() {
    local name=$1 file=$2 pid
    for _ in $(seq 300); do
        pid=$(cat "$file" 2>/dev/null || true)
        if [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
            echo "$pid" > "$STATE/$name.pid"
            return 0
        fi
        sleep 0.1
    done
    die "$name did not start; see its log ($(log_of "$name"))"
}

log_of() {
    case $1 in
        munged) echo /var/log/munge/munged.log ;;
        mariadbd) echo /var/log/mysql/fdrl-mariadbd.log ;;
        *) echo "/var/log/slurm/$1.log" ;;
    esac
}

# Waits up to $1 tenths of a second for the command that follows to succeed.
wait_for() {
    local tries=$1
    shift
    for _ in $(seq "$tries"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

node_ready() {
    # idle, mixed or allocated, and responding (`idle*` is a node slurmctld cannot reach).
    local states
    states=$(sinfo -h -p "$PARTITION" -o '%T' 2>/dev/null) || return 1
    grep -qE '^(idle|mixed|allocated)-?$' <<<"$states"
}

# ---- installing and configuring ------------------------------------------------------------------

check_host() {
    [[ $(id -u) == 0 ]] || die "must run as root, since it installs packages and starts system daemons."
    if [[ ! -f /etc/debian_version ]] || ! command -v apt-get >/dev/null; then
        die "needs a Debian-like system (apt-get and /etc/debian_version) to install SLURM."
    fi
}

install_packages() {
    local missing=()
    for bin in munged mungekey slurmctld slurmd sinfo sbatch sacct sacctmgr slurmdbd mariadbd; do
        command -v "$bin" >/dev/null || missing+=("$bin")
    done
    [[ ${#missing[@]} == 0 ]] && return 0
    log "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Maintainer scripts cannot start the daemons here (no systemd; policy-rc.d refuses).
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

# Writes $2 to file $1 (mode $3, owner $4) if it differs; returns 0 if it changed.
write_if_changed() {
    local file=$1 text=$2 mode=$3 owner=$4
    if [[ -f $file ]] && [[ $(cat "$file") == "$text" ]]; then
        return 1
    fi
    if [[ -f $file ]] && ! grep -qF "$MARK" "$file"; then
        die "$file exists and was not written by this script, which will not replace a real cluster's configuration."
    fi
    printf '%s\n' "$text" > "$file.tmp"
    chmod "$mode" "$file.tmp"
    chown "$owner" "$file.tmp"
    mv "$file.tmp" "$file"
}

# The cluster's configuration; returns 0 if a file changed (running daemons must then restart).
write_configs() {
    local host node cpus memory password changed=1
    host=$(hostname -s)
    node=$(slurmd -C | head -1)
    cpus=$(grep -oP '\bCPUs=\K[0-9]+' <<<"$node")
    memory=$(grep -oP '\bRealMemory=\K[0-9]+' <<<"$node")
    [[ -n $cpus && -n $memory ]] || die "cannot read CPUs and RealMemory from \`slurmd -C\`: $node"
    # The database password: made once, kept in slurmdbd.conf (mode 600), reused on later starts.
    password=$(grep -oP '^StoragePass=\K.*' "$DBD_CONF" 2>/dev/null || true)
    [[ -n $password ]] || password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    mkdir -p /etc/slurm
    write_if_changed "$SLURM_CONF" "$MARK: a one-node cluster for the tests.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$(log_of slurmctld)
SlurmdLogFile=$(log_of slurmd)
# No cgroups here: processes tracked by parentage, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
# Schedule every 5 s rather than every 30-60 s, and let a requeued job start again 20 s after it
# was stopped (the credential lifetime; default 120 s): the tests wait for both.
SchedulerParameters=sched_interval=5,bf_interval=5
AuthInfo=cred_expire=20
MailProg=/bin/true
# Cores and memory are consumable; a job that names no memory gets DefMemPerCPU per CPU rather
# than the whole node, so 1-CPU jobs run side by side, one per CPU.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# The node comes back by itself after a restart; finished jobs stay visible to squeue for 5 min.
ReturnToService=2
MinJobAge=300
# A killed or requeued job gets SIGKILL 5 s after SIGTERM (default 30 s).
KillWait=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# The node as slurm.conf says, whatever topology slurmd detects: CPUs alone make each CPU a
# schedulable core, so hyperthreads do not halve the jobs that run at once.
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP" 644 root:root && changed=0
    write_if_changed "$DBD_CONF" "$MARK: accounting for the tests' cluster.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurm/slurmdbd.pid
LogFile=$(log_of slurmdbd)
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$password" 600 slurm:slurm && changed=0
    return $changed
}

# ---- starting ------------------------------------------------------------------------------------

start_munged() {
    [[ -n $(live_pid munged) ]] && return 0
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --force --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 755 /run/munge
    rm -f /run/munge/munged.pid
    # --force: a socket or lock left by a munged that died with the machine's last session.
    runuser -u munge -- munged --force
    record_pid munged /run/munge/munged.pid
    wait_for 100 bash -c 'munge -n | unmunge' || die "munged does not answer; see $(log_of munged)"
}

start_mariadbd() {
    [[ -n $(live_pid mariadbd) ]] && return 0
    install -d -o mysql -g mysql -m 755 /run/mysqld
    rm -f /run/mysqld/mysqld.pid
    touch "$(log_of mariadbd)"
    chown mysql:mysql "$(log_of mariadbd)"
    # mariadbd does not daemonize: setsid detaches it from this shell and its terminal.
    setsid mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
        --log-error="$(log_of mariadbd)" </dev/null >/dev/null 2>&1 &
    record_pid mariadbd /run/mysqld/mysqld.pid
    wait_for 300 mariadb-admin ping || die "mariadbd does not answer; see $(log_of mariadbd)"
}

setup_database() {
    local password
    password=$(grep -oP '^StoragePass=\K.*' "$DBD_CONF")
    mariadb <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$password';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
}

start_slurm_daemon() {
    local name=$1
    [[ -n $(live_pid "$name") ]] && return 0
    rm -f "/run/slurm/$name.pid"
    "$name"
    record_pid "$name" "/run/slurm/$name.pid"
}

register_accounting() {
    wait_for 200 sacctmgr -n show cluster || die "slurmdbd does not answer; see $(log_of slurmdbd)"
    if [[ -z $(sacctmgr -nP show cluster "$CLUSTER" format=cluster) ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    if [[ -z $(sacctmgr -nP show account "$ACCOUNT" format=account) ]]; then
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=tests organization=fdrl >/dev/null
    fi
    if [[ -z $(sacctmgr -nP show user root format=user) ]] ||
        [[ -z $(sacctmgr -nP show association user=root account="$ACCOUNT" format=user) ]]; then
        sacctmgr -i add user root account="$ACCOUNT" defaultaccount="$ACCOUNT" >/dev/null
    fi
}

start() {
    check_host
    install_packages
    local all_up=1
    for d in "${DAEMONS[@]}"; do [[ -n $(live_pid "$d") ]] || all_up=0; done
    if [[ $all_up == 1 ]] && write_configs; then
        log "the configuration changed: restarting the daemons"
        stop
    elif [[ $all_up == 1 ]] && node_ready; then
        log "already running"
        return 0
    fi
    install -d -m 755 "$STATE"
    install -d -o slurm -g slurm -m 755 /run/slurm /var/log/slurm /var/lib/slurm/slurmctld
    install -d -m 755 /var/lib/slurm/slurmd
    install -d -o mysql -g mysql -m 755 /var/log/mysql
    write_configs || true
    start_munged
    start_mariadbd
    setup_database
    start_slurm_daemon slurmdbd
    register_accounting
    start_slurm_daemon slurmctld
    wait_for 200 scontrol ping || die "slurmctld does not answer; see $(log_of slurmctld)"
    start_slurm_daemon slurmd
    # A node left DOWN or DRAINED by a previous life of the cluster (ReturnToService=2 covers
    # most cases; a drain needs saying).
    if sinfo -h -N -o '%T' | grep -qE '^(down|drain)'; then
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    fi
    wait_for 300 node_ready || die "the node did not become idle; see $(log_of slurmd) and \`sinfo -R\`"
    log "cluster $CLUSTER is up: partition $PARTITION, node $(hostname -s)"
}

stop() {
    local pid stopped=()
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        local d=${DAEMONS[i]}
        pid=$(live_pid "$d")
        rm -f "$STATE/$d.pid"
        [[ -n $pid ]] || continue
        kill -TERM "$pid" 2>/dev/null || true
        # Wait for it to go (up to 20 s), then insist.
        for _ in $(seq 200); do
            [[ -d /proc/$pid && $(sed -E 's/^[0-9]+ \(.*\) (\S).*/\1/' "/proc/$pid/stat" 2>/dev/null) != Z ]] || break
            sleep 0.1
        done
        if [[ -d /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
        stopped+=("$d")
    done
    log "stopped: ${stopped[*]:-nothing was running}"
}

status() {
    command -v sinfo >/dev/null || { echo "SLURM is not installed"; return 1; }
    node_ready || { echo "no SLURM cluster answers with a usable node"; return 1; }
    sinfo -p "$PARTITION"
}

case ${1:-} in
    start) start ;;
    stop) check_host; stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
