#!/usr/bin/env bash
# A one-node Slurm cluster on this machine: the way to try (and test) the Slurm executor without a cluster.
#
#   scripts/slurm_local_cluster.sh start    install (first time) and start munged, slurmctld and slurmd; idempotent
#   scripts/slurm_local_cluster.sh status   is it up? (exit 0: yes, 3: no)
#   scripts/slurm_local_cluster.sh stop     cancel its jobs and stop the three daemons (packages stay installed)
#
# Needs a Debian-like machine (apt-get) and root: it installs slurmctld, slurmd, slurm-client and munge from the
# distribution (Slurm 22.05 on Debian 12), writes a munge key if the package left none, writes /etc/slurm/slurm.conf
# (one node with this machine's cores and memory as `slurmd -C` detects them, one partition, select/cons_tres, no
# accounting, no cgroups) and starts the daemons by hand (no systemd). Slurm's state, spool, pid and log files live
# under $AIOLI_SLURM_HOME (default /var/lib/aioli-slurm), which this script owns. A slurm.conf it did not write is
# never touched: on a real cluster node the script refuses.
#
# Exit status: 0 done; 2 it cannot run here (the reason is printed as "cannot: ..."); 3 (status) not running;
# 1 something failed (the daemons' logs are named).
set -euo pipefail

HOME_DIR=${AIOLI_SLURM_HOME:-/var/lib/aioli-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by aioli-repro scripts/slurm_local_cluster.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "[slurm-local] $*"; }
cannot() { echo "cannot: $*"; exit 2; }
fail() { echo "failed: $*" >&2; exit 1; }

pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

check_machine() {
  [[ "$(uname -s)" == Linux ]] || cannot "not Linux ($(uname -s))"
  [[ $(id -u) -eq 0 ]] || cannot "not root (the daemons and the package install need root; run it with sudo)"
  command -v apt-get >/dev/null || cannot "no apt-get: not a Debian-like machine (install Slurm and munge yourself)"
  if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
    cannot "$CONF exists and was not written by this script: this machine has a Slurm setup of its own"
  fi
}

install() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  say "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts that would start services find no init system here (policy-rc.d 101: do not start).
  local policy=/usr/sbin/policy-rc.d added=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod 755 $policy; added=1; fi
  local log=/tmp/aioli-slurm-apt.log
  if ! { apt-get install -y --no-install-recommends "${missing[@]}" > $log 2>&1 \
         || { apt-get update > /dev/null 2>&1 && apt-get install -y --no-install-recommends "${missing[@]}" > $log 2>&1; }; }; then
    [[ $added -eq 1 ]] && rm -f $policy
    tail -5 $log
    cannot "apt-get could not install ${missing[*]} (log: $log)"
  fi
  [[ $added -eq 1 ]] && rm -f $policy
  return 0
}

write_conf() {
  local host node
  host=$(hostname -s)
  # What slurmd detects here: "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1
  # RealMemory=24000"; the node is declared with exactly that (a node that claims more than it has is drained).
  node=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ *UpTime=.*//')
  [[ $node == *CPUs=* ]] || fail "slurmd -C did not describe this node: $node"
  mkdir -p /etc/slurm "$HOME_DIR"/{state,spool,log,run}
  cat > "$CONF.tmp" <<EOF
$MARK; it is rewritten at every start.
ClusterName=aioli-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$HOME_DIR/state
SlurmdSpoolDir=$HOME_DIR/spool
SlurmctldPidFile=$HOME_DIR/run/slurmctld.pid
SlurmdPidFile=$HOME_DIR/run/slurmd.pid
SlurmctldLogFile=$HOME_DIR/log/slurmctld.log
SlurmdLogFile=$HOME_DIR/log/slurmd.log
# No systemd and no cgroups needed: processes are tracked by parentage, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# No accounting (slurmdbd needs a database): sacct does not work here; submitit's status then comes from squeue
# (aioli_repro/slurm.py chooses).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# A job that ignores SIGTERM (submitit's jobs do: they wait for the time-limit signal) is killed 5 s later (default 30).
KillWait=5
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

munge_key() {
  local key=/etc/munge/munge.key
  if [[ ! -s $key ]]; then
    say "writing a munge key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=$key --force
    else dd if=/dev/urandom of=$key bs=1024 count=1 status=none; fi
  fi
  chown munge:munge $key /etc/munge
  chmod 0400 $key
  chmod 0700 /etc/munge
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
}

start_munge() {
  if pid_alive /run/munge/munged.pid && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  munge_key
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged --force 9>&- || fail "munged did not start (log: /var/log/munge/munged.log)"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "munge does not answer (log: /var/log/munge/munged.log)"
}

node_ready() { [[ "$(sinfo -h -N -o %t 2>/dev/null | head -1)" =~ ^(idle|mix|alloc)$ ]]; }

start() {
  check_machine
  exec 9> /run/aioli-slurm.lock   # one start or stop at a time (the daemons must not inherit it: 9>&-)
  flock 9
  local t0; t0=$(date +%s%3N)
  install
  write_conf
  start_munge
  if ! pid_alive "$HOME_DIR/run/slurmctld.pid"; then
    slurmctld 9>&- || fail "slurmctld did not start (log: $HOME_DIR/log/slurmctld.log)"
  elif ! cmp -s "$CONF" "$HOME_DIR/run/slurm.conf.running"; then
    scontrol reconfigure >/dev/null 2>&1 || true   # the detected node changed since the daemons started
  fi
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q "is UP" && break; sleep 0.1; done
  scontrol ping 2>/dev/null | grep -q "is UP" || fail "slurmctld does not answer (log: $HOME_DIR/log/slurmctld.log)"
  if ! pid_alive "$HOME_DIR/run/slurmd.pid"; then
    slurmd 9>&- || fail "slurmd did not start (log: $HOME_DIR/log/slurmd.log)"
  fi
  cp "$CONF" "$HOME_DIR/run/slurm.conf.running"
  for _ in $(seq 300); do node_ready && break; sleep 0.1; done
  if ! node_ready; then
    # A node drained by an earlier run (e.g. the machine's memory changed) is given back to service.
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    for _ in $(seq 100); do node_ready && break; sleep 0.1; done
  fi
  node_ready || fail "node $(hostname -s) is not up: $(sinfo -h -N -o '%t %E') (logs: $HOME_DIR/log/)"
  say "up in $(awk -v ms=$(( $(date +%s%3N) - t0 )) 'BEGIN { printf "%.1f", ms / 1000 }') s: $(sinfo -h -N -o 'node %N, %c CPUs, %m MB, partition %P, %t')"
}

status() {
  local up=0
  for d in slurmctld slurmd; do
    if pid_alive "$HOME_DIR/run/$d.pid"; then say "$d running (pid $(cat "$HOME_DIR/run/$d.pid"))"; else say "$d not running"; up=3; fi
  done
  if pid_alive /run/munge/munged.pid; then say "munged running"; else say "munged not running"; up=3; fi
  if [[ $up -eq 0 ]] && node_ready; then
    sinfo -N -o '%N %c %m %P %t'
  else
    up=3
  fi
  return $up
}

stop() {
  check_machine
  exec 9> /run/aioli-slurm.lock
  flock 9
  if pid_alive "$HOME_DIR/run/slurmctld.pid"; then
    # This cluster is this script's own: every job on it is a leftover of a test or a try.
    squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
  fi
  for d in slurmd slurmctld; do
    local pidfile="$HOME_DIR/run/$d.pid"
    if pid_alive "$pidfile"; then
      local pid; pid=$(cat "$pidfile")
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      say "stopped $d"
    fi
  done
  rm -f "$HOME_DIR/run/slurm.conf.running"
  if pid_alive /run/munge/munged.pid; then
    local pid; pid=$(cat /run/munge/munged.pid)
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    say "stopped munged"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 64 ;;
esac
