#!/usr/bin/env bash
# Stop the one-node SLURM cluster that start-cluster.sh runs from STATE_DIR.
#
# Usage: slurm/stop-cluster.sh [STATE_DIR]   (default: ${MHGD_SLURM_DIR:-/tmp/mhgd-slurm})
#
# Daemons are stopped through their PID files, consumers before the services they depend on,
# and each is waited for. Logs stay in STATE_DIR/log. Calling it twice is harmless.
# Running jobs are left alone, as on a real cluster: their slurmstepd outlives slurmd.
#
# start-cluster.sh sources this file for daemon_pid and stop_cluster.
set -euo pipefail

# Daemon names in shutdown order; each has STATE_DIR/run/<name>.pid.
DAEMONS_STOP_ORDER=(slurmd slurmctld slurmdbd mariadbd munged)

# Print the PID of a daemon that is running from STATE_DIR, or nothing.
# The process name is checked too, so a stale PID file whose PID was reused by an unrelated
# process never gets that process killed.
daemon_pid() {
  local state_dir=$1 name=$2
  local pid_file="$state_dir/run/$name.pid" pid
  [[ -s $pid_file && -r $pid_file ]] || return 0
  pid=$(tr -dc '0-9' <"$pid_file")
  [[ -n $pid && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] && echo "$pid"
  return 0
}

# Ask one daemon to exit (SIGTERM), wait for it, and SIGKILL it if it will not go.
stop_daemon() {
  local state_dir=$1 name=$2
  local pid waited=0
  local timeout_tenths=300 # mariadbd flushes InnoDB on shutdown; the others exit at once.
  pid=$(daemon_pid "$state_dir" "$name")
  if [[ -z $pid ]]; then
    echo "$name: not running"
    rm -f "$state_dir/run/$name.pid"
    return 0
  fi
  if ! kill -TERM "$pid" 2>/dev/null && [[ -d /proc/$pid ]]; then
    echo "stop-cluster: not allowed to stop $name (pid $pid); rerun as root" >&2
    return 1
  fi
  while kill -0 "$pid" 2>/dev/null && ((waited < timeout_tenths)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name: still running $((timeout_tenths / 10)) s after SIGTERM, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$state_dir/run/$name.pid"
  echo "$name: stopped (pid $pid)"
}

stop_cluster() {
  local state_dir=$1 name
  for name in "${DAEMONS_STOP_ORDER[@]}"; do
    stop_daemon "$state_dir" "$name"
  done
}

main() {
  local state_dir=${1:-${MHGD_SLURM_DIR:-/tmp/mhgd-slurm}}
  if [[ ! -d $state_dir ]]; then
    echo "No cluster state in $state_dir: nothing to stop."
    return 0
  fi
  stop_cluster "$state_dir"
}

# Run only when executed, not when sourced by start-cluster.sh.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
