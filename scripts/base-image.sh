#!/usr/bin/env bash
# Make the local base image the server image builds FROM when no registry is reachable:
# a Debian bookworm root filesystem (python3 3.11) made with debootstrap and imported into the engine.
# The root filesystem tarball is cached under /var/cache/tui-profiler so a second run skips debootstrap.
set -euo pipefail
IMAGE=${TUI_PROFILER_BASE_IMAGE:-tui-profiler-base:bookworm}
CACHE=${TUI_PROFILER_CACHE:-/var/cache/tui-profiler}
TARBALL=$CACHE/base-bookworm.tar
log() { printf '[base-image] %s\n' "$*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE present"
  exit 0
fi
mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null 2>&1 || {
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  rootfs=$(mktemp -d /var/tmp/tui-profiler-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap bookworm (1-2 minutes)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,curl \
    bookworm "$rootfs" http://deb.debian.org/debian >/var/log/tui-profiler-debootstrap.log 2>&1 || {
      tail -n 20 /var/log/tui-profiler-debootstrap.log >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
fi
log "importing $TARBALL as $IMAGE"
docker import "$TARBALL" "$IMAGE" >/dev/null
log "$IMAGE ready"
