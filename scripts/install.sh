#!/usr/bin/env bash
# Installs tui-profiler (with the model-server extra, used by the `process` runtime) and, as root on a
# machine without a reachable Docker engine, Debian's docker.io. Then `tui-profiler` opens the TUI.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "[install] python package (torch comes with the [server] extra; a few minutes the first time)"
python3 -m pip install -q --disable-pip-version-check -e '.[server]'
if [ "$(id -u)" = 0 ]; then
  bash scripts/engine.sh || echo "[install] no Docker engine: tui-profiler will use the process runtime"
else
  timeout 10 docker info >/dev/null 2>&1 || echo "[install] no Docker engine reachable: tui-profiler will use the process runtime"
fi
echo "[install] done: run 'tui-profiler' (or 'tui-profiler doctor' to see what this machine can enforce)"
