#!/usr/bin/env bash
# Boot a real one-node SLURM cluster with accounting on this machine, for tests, CI and trying
# the cluster workflow on a laptop.
#
# Usage: slurm/start-cluster.sh [STATE_DIR]   (default: ${MHGD_SLURM_DIR:-/tmp/mhgd-slurm})
#
# Everything lives in STATE_DIR: configs, munge key and socket, a private MariaDB, SLURM state,
# PID files and logs. Nothing in /etc is used or changed, so the cluster does not disturb (and is
# not disturbed by) a system-wide SLURM or MariaDB. Daemons run as root, which is why this needs
# root. When done, it prints the line to export and writes it to STATE_DIR/env.
# Stop with slurm/stop-cluster.sh [STATE_DIR].
set -Eeuo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=stop-cluster.sh
source "$SCRIPT_DIR/stop-cluster.sh"

CLUSTER_NAME=mhgd
NODE_NAME=localnode
PARTITION_NAME=local
ACCOUNTING_DB=slurm_acct_db
DEBIAN_PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server-core
  mariadb-client-core)
REQUIRED_COMMANDS=(slurmctld slurmd slurmdbd sbatch sinfo sacct sacctmgr scontrol munged mungekey
  mariadbd mariadb-install-db mariadb)
# Bounds on each wait, in seconds.
DAEMON_START_TIMEOUT=30
NODE_READY_TIMEOUT=60

STATE_DIR=$(realpath -m "${1:-${MHGD_SLURM_DIR:-/tmp/mhgd-slurm}}")
LOG_DIR=$STATE_DIR/log
RUN_DIR=$STATE_DIR/run
SLURM_CONF_FILE=$STATE_DIR/slurm.conf
SLURMDBD_CONF_FILE=$STATE_DIR/slurmdbd.conf
MUNGE_DIR=$STATE_DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
MARIADB_DIR=$STATE_DIR/mariadb
MARIADB_SOCKET=$MARIADB_DIR/mariadbd.sock
MARIADB_PASSWORD_FILE=$MARIADB_DIR/slurm-user.password
EXPORT_LINE="export SLURM_CONF=$SLURM_CONF_FILE"

# Set once this run starts daemons: only then does a failure have something to tear down.
DAEMONS_LAUNCHED=0

say() { echo "start-cluster: $*"; }

# Print what went wrong and the end of the logs that explain it, stop whatever part of the
# cluster did come up (logs stay), and exit non-zero.
fail() {
  local message=$1 log_file
  shift
  trap - ERR
  echo "start-cluster: ERROR: $message" >&2
  for log_file in "$@"; do
    [[ -s $log_file ]] || continue
    echo "---- last lines of $log_file ----" >&2
    tail -n 25 "$log_file" >&2
    echo "----" >&2
  done
  if ((DAEMONS_LAUNCHED)); then
    stop_cluster "$STATE_DIR" >/dev/null 2>&1 || true
  fi
  exit 1
}
trap 'fail "command failed (line $LINENO): $BASH_COMMAND"' ERR

# Poll a command until it succeeds; once the timeout (seconds) passes, fail with the tails of
# the logs (a space-separated list: paths here never contain whitespace).
wait_until() {
  local what=$1 timeout_s=$2 log_files
  read -ra log_files <<<"$3"
  shift 3
  local deadline=$((SECONDS + timeout_s))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) ||
      fail "timed out after $timeout_s s waiting for $what" "${log_files[@]}"
    sleep 0.2
  done
}

daemon_running() {
  [[ -n $(daemon_pid "$STATE_DIR" "$1") ]]
}

wait_for_daemon() {
  local name=$1 log_file=$2
  wait_until "$name to write its PID file" "$DAEMON_START_TIMEOUT" "$log_file" \
    daemon_running "$name"
}

check_state_dir_path() {
  # SLURM config values cannot be quoted, and a unix socket path must fit in 108 bytes.
  [[ $STATE_DIR != *[[:space:]]* ]] ||
    fail "STATE_DIR '$STATE_DIR' contains whitespace; choose a path without it"
  ((${#MARIADB_SOCKET} < 100)) ||
    fail "STATE_DIR '$STATE_DIR' is too long for unix sockets; choose one under 70 characters"
}

commands_missing() {
  local command
  for command in "${REQUIRED_COMMANDS[@]}"; do
    command -v "$command" >/dev/null || return 0
  done
  return 1
}

install_packages() {
  commands_missing || return 0
  local apt_log=$LOG_DIR/apt.log
  ((EUID == 0)) ||
    fail "SLURM, munge or MariaDB is missing and installing them needs root; rerun as root"
  local without_apt="SLURM, munge or MariaDB is missing and there is no apt-get to install them;"
  without_apt+=" install SLURM 22.05+ (slurmctld, slurmd, slurmdbd, clients), munge and MariaDB"
  command -v apt-get >/dev/null || fail "$without_apt"
  say "installing ${DEBIAN_PACKAGES[*]} (log: $apt_log)"
  apt-get update >"$apt_log" 2>&1 || fail "apt-get update failed" "$apt_log"
  # Under systemd the packages' own services may start (munge) or fail for want of
  # /etc/slurm/slurm.conf; neither matters, this cluster has its own sockets and ports.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${DEBIAN_PACKAGES[@]}" >>"$apt_log" 2>&1 || fail "apt-get install failed" "$apt_log"
}

# Print the first TCP port from $1 upwards that nothing on 127.0.0.1 listens on and that is not
# in the remaining arguments (ports already picked for this cluster).
free_port() {
  local port=$1
  shift
  while [[ " $* " == *" $port "* ]] || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  echo "$port"
}

cluster_is_up() {
  local name
  for name in "${DAEMONS_STOP_ORDER[@]}"; do
    daemon_running "$name" || return 1
  done
  SLURM_CONF=$SLURM_CONF_FILE scontrol ping >/dev/null 2>&1 &&
    SLURM_CONF=$SLURM_CONF_FILE sacct -n -X >/dev/null 2>&1
}

start_munged() {
  mkdir -p "$MUNGE_DIR"
  chmod 755 "$MUNGE_DIR" # the key stays 0600; users other than root need the socket
  [[ -s $MUNGE_DIR/munge.key ]] || mungekey --create --keyfile="$MUNGE_DIR/munge.key"
  # --force: munged refuses to run as root otherwise.
  munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$RUN_DIR/munged.pid" --log-file="$LOG_DIR/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed" </dev/null >>"$LOG_DIR/munged.out" 2>&1 ||
    fail "munged did not start" "$LOG_DIR/munged.out" "$LOG_DIR/munged.log"
  wait_for_daemon munged "$LOG_DIR/munged.log"
}

mariadb_sql() {
  mariadb --no-defaults --socket="$MARIADB_SOCKET" --user=root "$@"
}

start_mariadbd() {
  local port=$1 log_file=$LOG_DIR/mariadbd.log
  mkdir -p "$MARIADB_DIR"
  chmod 700 "$MARIADB_DIR"
  if [[ ! -d $MARIADB_DIR/data/mysql ]]; then
    say "creating the accounting database server in $MARIADB_DIR/data"
    mariadb-install-db --no-defaults --user=root --datadir="$MARIADB_DIR/data" \
      --auth-root-authentication-method=socket --skip-test-db \
      >"$LOG_DIR/mariadb-install-db.log" 2>&1 ||
      fail "mariadb-install-db failed" "$LOG_DIR/mariadb-install-db.log"
  fi
  # innodb_lock_wait_timeout is the value slurmdbd asks for (it warns at the default of 50).
  setsid mariadbd --no-defaults --user=root --datadir="$MARIADB_DIR/data" \
    --socket="$MARIADB_SOCKET" --bind-address=127.0.0.1 --port="$port" --skip-name-resolve \
    --pid-file="$RUN_DIR/mariadbd.pid" --log-error="$log_file" \
    --innodb-lock-wait-timeout=900 </dev/null >>"$LOG_DIR/mariadbd.out" 2>&1 &
  wait_for_daemon mariadbd "$log_file"
  # mariadbd makes its PID file 0660; other users read it to see whether the cluster is up.
  chmod 644 "$RUN_DIR/mariadbd.pid"
  wait_until "MariaDB to accept connections" "$DAEMON_START_TIMEOUT" "$log_file" \
    mariadb_sql --execute="SELECT 1"
}

# slurmdbd connects over TCP as its own user; the password is made once and kept in STATE_DIR.
# CREATE OR REPLACE keeps the user's password in step with that file.
create_accounting_database() {
  [[ -s $MARIADB_PASSWORD_FILE ]] ||
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$MARIADB_PASSWORD_FILE")
  local password
  password=$(<"$MARIADB_PASSWORD_FILE")
  mariadb_sql --batch >>"$LOG_DIR/mariadb-setup.log" 2>&1 <<SQL ||
CREATE DATABASE IF NOT EXISTS $ACCOUNTING_DB;
CREATE OR REPLACE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT ALL ON $ACCOUNTING_DB.* TO 'slurm'@'127.0.0.1';
SQL
    fail "could not create the accounting database" "$LOG_DIR/mariadb-setup.log"
}

write_slurmdbd_conf() {
  local dbd_port=$1 mariadb_port=$2
  (
    umask 077 # slurmdbd refuses a config readable by others: it holds the database password.
    cat >"$SLURMDBD_CONF_FILE" <<CONF
# Generated by slurm/start-cluster.sh; rewritten on every start.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$mariadb_port
StorageUser=slurm
StoragePass=$(<"$MARIADB_PASSWORD_FILE")
StorageLoc=$ACCOUNTING_DB
CONF
  )
}

# The node's hardware line as slurmd itself detects it (CPUs, sockets, cores, RealMemory), so
# slurmctld never drains the node for claiming more than it has.
node_hardware() {
  slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //'
}

write_slurm_conf() {
  local ctld_port=$1 slurmd_port=$2 dbd_port=$3 hardware
  hardware=$(node_hardware)
  [[ $hardware == *CPUs=*RealMemory=* ]] ||
    fail "could not read this machine's CPUs and memory from 'slurmd -C' (got: '$hardware')"
  cat >"$SLURM_CONF_FILE" <<CONF
# Generated by slurm/start-cluster.sh; rewritten on every start.
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job restarts ~10 s after it ends instead of ~120 s.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10

StateSaveLocation=$STATE_DIR/slurmctld-state
SlurmdSpoolDir=$STATE_DIR/slurmd-spool
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log

# No systemd or cgroups needed.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MailProg=/bin/true
JobRequeue=1
KillWait=5
# A node that was down (e.g. slurmd stopped) returns to service when slurmd registers again.
ReturnToService=2

# Start batch jobs at once and re-plan every 2 s (a requeued job waits for the next pass).
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=2
# CPUs are the only consumable resource, so jobs that ask for no memory can share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU

AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
# For slurmdbd connections this names the munge socket; AuthInfo does not apply to them.
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/linux

NodeName=$NODE_NAME NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=$PARTITION_NAME Nodes=$NODE_NAME Default=YES MaxTime=INFINITE State=UP
CONF
}

start_slurmdbd() {
  # slurmdbd has no config option: it reads slurmdbd.conf next to \$SLURM_CONF.
  slurmdbd </dev/null >>"$LOG_DIR/slurmdbd.out" 2>&1 ||
    fail "slurmdbd did not start" "$LOG_DIR/slurmdbd.out" "$LOG_DIR/slurmdbd.log"
  wait_for_daemon slurmdbd "$LOG_DIR/slurmdbd.log"
  wait_until "slurmdbd to answer" "$DAEMON_START_TIMEOUT" "$LOG_DIR/slurmdbd.log" \
    sacctmgr --noheader list cluster
}

register_cluster() {
  [[ -n $(sacctmgr --noheader --parsable2 list cluster "$CLUSTER_NAME" format=cluster) ]] &&
    return 0
  sacctmgr -i add cluster "$CLUSTER_NAME" >>"$LOG_DIR/sacctmgr.log" 2>&1 ||
    fail "could not register cluster $CLUSTER_NAME with slurmdbd" "$LOG_DIR/sacctmgr.log"
}

start_slurmctld() {
  mkdir -p "$STATE_DIR/slurmctld-state"
  slurmctld -f "$SLURM_CONF_FILE" </dev/null >>"$LOG_DIR/slurmctld.out" 2>&1 ||
    fail "slurmctld did not start" "$LOG_DIR/slurmctld.out" "$LOG_DIR/slurmctld.log"
  wait_for_daemon slurmctld "$LOG_DIR/slurmctld.log"
}

start_slurmd() {
  mkdir -p "$STATE_DIR/slurmd-spool"
  # -N: the node is named in slurm.conf, whatever this machine's host name is.
  slurmd -f "$SLURM_CONF_FILE" -N "$NODE_NAME" </dev/null >>"$LOG_DIR/slurmd.out" 2>&1 ||
    fail "slurmd did not start" "$LOG_DIR/slurmd.out" "$LOG_DIR/slurmd.log"
  wait_for_daemon slurmd "$LOG_DIR/slurmd.log"
}

node_is_usable() {
  # A trailing '*' means the node is not responding; idle, mixed and allocated are all fine.
  [[ $(sinfo --noheader --node="$NODE_NAME" --format=%T) =~ ^(idle|mixed|allocated)$ ]]
}

wait_until_ready() {
  wait_until "node $NODE_NAME to come up (idle) in sinfo" "$NODE_READY_TIMEOUT" \
    "$LOG_DIR/slurmd.log $LOG_DIR/slurmctld.log" \
    node_is_usable
  wait_until "sacct to answer" "$DAEMON_START_TIMEOUT" "$LOG_DIR/slurmdbd.log" sacct -n -X
}

main() {
  check_state_dir_path
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  export PATH=$PATH:/usr/sbin:/sbin
  export SLURM_CONF=$SLURM_CONF_FILE

  if cluster_is_up; then
    say "cluster in $STATE_DIR is already up"
    echo "$EXPORT_LINE"
    return 0
  fi
  ((EUID == 0)) || fail "the cluster's daemons run as root; rerun as root (e.g. with sudo)"
  # Whatever part of an earlier cluster is still running would hold its ports and PID files.
  stop_cluster "$STATE_DIR" >/dev/null
  install_packages

  local started=$SECONDS ctld_port slurmd_port dbd_port mariadb_port
  ctld_port=$(free_port 6817)
  slurmd_port=$(free_port $((ctld_port + 1)) "$ctld_port")
  dbd_port=$(free_port $((slurmd_port + 1)) "$ctld_port" "$slurmd_port")
  mariadb_port=$(free_port 3306)

  DAEMONS_LAUNCHED=1
  start_munged
  start_mariadbd "$mariadb_port"
  create_accounting_database
  write_slurmdbd_conf "$dbd_port" "$mariadb_port"
  write_slurm_conf "$ctld_port" "$slurmd_port" "$dbd_port"
  start_slurmdbd
  register_cluster
  start_slurmctld
  start_slurmd
  wait_until_ready
  say "cluster $CLUSTER_NAME is up in $((SECONDS - started)) s (state and logs: $STATE_DIR)"
  echo "$EXPORT_LINE" >"$STATE_DIR/env"
  echo "$EXPORT_LINE"
}

main
