#!/usr/bin/env bash
# Extra Docker engines for the fleet tests, each one a separate "host" that only this machine reaches:
#
#   scripts/engines.sh up N     engines tpf-e1..tpf-eN (an engine already up is kept)
#   scripts/engines.sh down     stop every tpf engine and sshd, remove their namespaces and veth pairs
#
# Engine i lives in network namespace tpf-e$i, joined to this machine by a veth pair (here: tpf-e${i}h
# 10.213.$i.1/30, there: tpf-e${i}n 10.213.$i.2/30). Its dockerd answers on unix:///run/tpf-e$i.sock and
# tcp://10.213.$i.2:2375, and an sshd on 10.213.$i.2:22 lets the docker SDK reach it as
# ssh://root@10.213.$i.2 with a key made here: the key's forced command is `docker system dial-stdio`
# against that namespace's engine. Clients set HOME=$ROOT/ssh/home (its .ssh/ holds config, known_hosts
# and the key; /root/.ssh is never touched).
#
# Traffic stays inside: no forwarding or NAT rule is added, IP forwarding is not switched on, the engines
# run with --bridge=none --iptables=false --ip-masq=false, and the /30 routes only between the two ends.
# `down` leaves the data roots under $ROOT as a cache: images loaded into an engine are there at the next
# `up`. Remove $ROOT by hand to start from nothing.
#
# Two traps (docs: /work/shared/docker-engine.md): `ip netns exec` remounts /sys and hides the cgroup
# hierarchy (dockerd then fails), so engines start through `nsenter --net=`; and a dockerd with
# --bridge=none in THIS machine's namespace would delete the main engine's docker0, so none ever starts here.
set -euo pipefail
ROOT=/var/lib/tui-profiler-engines
SSH_DIR=$ROOT/ssh
CLIENT_HOME=$SSH_DIR/home
log() { printf '[engines] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, dockerd)"
command -v dockerd >/dev/null || die "no dockerd: run scripts/engine.sh first (installs docker.io)"
DOCKER_CLI=$(command -v docker) || die "no docker CLI on PATH"

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
answers() { timeout 10 "$DOCKER_CLI" -H "unix:///run/tpf-e$1.sock" info >/dev/null 2>&1; }

ensure_sshd_installed() {
  [ -x /usr/sbin/sshd ] && return 0
  log "installing openssh-server"
  export DEBIAN_FRONTEND=noninteractive
  # No sshd may start on this machine's own addresses on install.
  local policy=/usr/sbin/policy-rc.d made=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made=1; fi
  apt-get install -y -qq openssh-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq openssh-server >/dev/null; }
  [ "$made" = 0 ] || rm -f "$policy"
}

# The keys, made once: the host key every tpf sshd shows and the client key the tests log in with.
ensure_keys() {
  mkdir -p "$CLIENT_HOME/.ssh"
  chmod 700 "$SSH_DIR" "$CLIENT_HOME" "$CLIENT_HOME/.ssh"
  [ -s "$SSH_DIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C tpf-engines-host -f "$SSH_DIR/host_ed25519"
  [ -s "$CLIENT_HOME/.ssh/id_ed25519" ] ||
    ssh-keygen -q -t ed25519 -N '' -C tpf-engines-client -f "$CLIENT_HOME/.ssh/id_ed25519"
  cat >"$CLIENT_HOME/.ssh/config" <<EOF
Host 10.213.*.2
  User root
  Port 22
  IdentityFile $CLIENT_HOME/.ssh/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $CLIENT_HOME/.ssh/known_hosts
  StrictHostKeyChecking yes
EOF
  chmod 600 "$CLIENT_HOME/.ssh/config"
}

netns_up() {
  local i=$1 ns=tpf-e$1
  [ -e "/run/netns/$ns" ] || ip netns add "$ns"
  if ! ip link show "tpf-e${i}h" >/dev/null 2>&1; then
    ip link add "tpf-e${i}h" type veth peer name "tpf-e${i}n" netns "$ns"
    ip addr add "10.213.$i.1/30" dev "tpf-e${i}h"
    ip link set "tpf-e${i}h" up
    ip -n "$ns" addr add "10.213.$i.2/30" dev "tpf-e${i}n"
    ip -n "$ns" link set "tpf-e${i}n" up
  fi
  ip -n "$ns" link set lo up
}

dockerd_up() {
  local i=$1
  if answers "$i"; then log "tpf-e$i: engine already up"; return 0; fi
  alive "/run/tpf-e$i.pid" && die "tpf-e$i: dockerd $(cat "/run/tpf-e$i.pid") runs but does not answer; run down first"
  rm -f "/run/tpf-e$i.pid" "/run/tpf-e$i.sock"
  mkdir -p "$ROOT/e$i"
  # Its own daemon.json, not /etc/docker's (the main engine's). The engine ID still comes from
  # /etc/docker/key.json, the same for every engine here: tell them apart by DockerRootDir.
  [ -s "$ROOT/e$i.daemon.json" ] || printf '{}\n' >"$ROOT/e$i.daemon.json"
  # --tls=false: said outright, or dockerd sleeps 15 s to warn about a plain tcp:// socket (reached only
  # from this machine, through the veth). setsid: the engine outlives this script and the test run that
  # called it, until `down`.
  setsid nsenter --net="/run/netns/tpf-e$i" dockerd \
    --data-root "$ROOT/e$i" --exec-root "/run/tpf-e$i" --pidfile "/run/tpf-e$i.pid" \
    --config-file "$ROOT/e$i.daemon.json" \
    -H "unix:///run/tpf-e$i.sock" -H "tcp://10.213.$i.2:2375" --tls=false \
    --bridge=none --iptables=false --ip-masq=false --storage-driver=overlay2 \
    >>"/var/log/tpf-e$i.log" 2>&1 </dev/null &
}

wait_engine() {
  local i=$1
  for _ in $(seq 1 120); do
    answers "$i" && return 0
    sleep 0.5
  done
  log "tpf-e$i: dockerd did not answer within 60 s; last log lines:"
  tail -n 20 "/var/log/tpf-e$i.log" >&2
  return 1
}

sshd_up() {
  local i=$1 conf=$SSH_DIR/sshd-e$1.conf keys=$SSH_DIR/authorized_keys-e$1
  # The forced command: whatever the client asks for, it gets a dial-stdio stream to THIS engine.
  printf 'command="DOCKER_HOST=unix:///run/tpf-e%s.sock exec %s system dial-stdio",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding %s\n' \
    "$i" "$DOCKER_CLI" "$(cat "$CLIENT_HOME/.ssh/id_ed25519.pub")" >"$keys"
  chmod 600 "$keys"
  cat >"$conf" <<EOF
ListenAddress 10.213.$i.2:22
HostKey $SSH_DIR/host_ed25519
PidFile /run/tpf-e$i-sshd.pid
AuthorizedKeysFile $keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
LogLevel ERROR
EOF
  # known_hosts: this address shows the one host key.
  local line
  line="10.213.$i.2 $(cut -d' ' -f1,2 "$SSH_DIR/host_ed25519.pub")"
  touch "$CLIENT_HOME/.ssh/known_hosts"
  grep -qxF "$line" "$CLIENT_HOME/.ssh/known_hosts" || {
    grep -v "^10\.213\.$i\.2 " "$CLIENT_HOME/.ssh/known_hosts" >"$CLIENT_HOME/.ssh/known_hosts.new" || true
    printf '%s\n' "$line" >>"$CLIENT_HOME/.ssh/known_hosts.new"
    mv "$CLIENT_HOME/.ssh/known_hosts.new" "$CLIENT_HOME/.ssh/known_hosts"
  }
  if alive "/run/tpf-e$i-sshd.pid"; then return 0; fi
  mkdir -p /run/sshd  # sshd's privilege-separation directory
  nsenter --net="/run/netns/tpf-e$i" /usr/sbin/sshd -f "$conf" -E "/var/log/tpf-e$i-sshd.log"
}

stop_pid() {  # stop the process in pid file $1 (TERM, then KILL after 20 s)
  local pidfile=$1 pid
  alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { log "pid $pid ($pidfile) ignored TERM: KILL"; kill -9 "$pid" 2>/dev/null || true; }
  rm -f "$pidfile"
}

up() {
  local n=${1:-2} i
  [[ "$n" =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 50 ] || die "up N: N is 1..50, not '$n'"
  ensure_sshd_installed
  ensure_keys
  for i in $(seq 1 "$n"); do
    netns_up "$i"
    dockerd_up "$i"
  done
  for i in $(seq 1 "$n"); do
    wait_engine "$i"
    sshd_up "$i"
    log "tpf-e$i: up at tcp://10.213.$i.2:2375, ssh://root@10.213.$i.2 (HOME=$CLIENT_HOME)"
  done
}

down() {
  local f i ns
  # All at once: each dockerd takes seconds to shut down.
  for f in /run/tpf-e*.pid; do [ -e "$f" ] && stop_pid "$f" & done
  wait
  for ns in $(ip netns list | awk '{print $1}' | grep -E '^tpf-e[0-9]+$' || true); do
    i=${ns#tpf-e}
    ip link del "tpf-e${i}h" 2>/dev/null || true  # takes its peer in the namespace along
    ip netns del "$ns"
    rm -f "/run/tpf-e$i.sock"
  done
  log "down (data roots kept under $ROOT as an image cache)"
}

case "${1:-}" in
  up) up "${2:-2}" ;;
  down) down ;;
  *) die "usage: $0 up N | down" ;;
esac
