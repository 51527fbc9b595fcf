#!/usr/bin/env bash
# Make a Docker engine reachable. Uses one that already answers; otherwise, as root, installs Debian's
# docker.io and starts dockerd in the background (log: /var/log/tui-profiler-dockerd.log).
set -euo pipefail
log() { printf '[engine] %s\n' "$*" >&2; }

if timeout 10 docker info >/dev/null 2>&1; then
  log "engine reachable: $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "no Docker engine is reachable and this is not root: start one, or add this user to the docker group"
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
  log "installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi
log "starting dockerd"
setsid dockerd --storage-driver=overlay2 -H unix:///var/run/docker.sock \
  >>/var/log/tui-profiler-dockerd.log 2>&1 < /dev/null &
for _ in $(seq 1 120); do
  if timeout 5 docker info >/dev/null 2>&1; then
    log "engine up: $(docker version --format '{{.Server.Version}}')"
    exit 0
  fi
  sleep 0.5
done
log "dockerd did not answer within 60 s; last log lines:"
tail -n 20 /var/log/tui-profiler-dockerd.log >&2
exit 1
