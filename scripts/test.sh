#!/usr/bin/env bash
# The test command: installs everything the tests need on a fresh machine (Python packages, a Docker
# engine when none is reachable, the local base and server images) and runs them. Exits non-zero on any
# failure. Extra arguments go to pytest (e.g. `-m "not slow"`, `-k server`).
#
# `--fast` (first argument): the developer's tier on an installed machine, about a minute. No set-up step
# that needs root, Docker or images; ruff and ruff format only; then every test that needs neither a Docker
# engine nor a model server (the tier marks, see tests/conftest.py and docs/development.md).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s (%s)\n' "$*" "$(date +%H:%M:%S)"; }
SECONDS=0
FAST_TIER="not docker and not server and not fleet and not slow and not faults and not bench"

if [ "${1:-}" = "--fast" ]; then
  shift
  if ! python3 -c 'import tui_profiler, pytest_asyncio, xdist, hypothesis, syrupy' 2>/dev/null; then
    step "python packages"
    python3 -m pip install -q --disable-pip-version-check -e '.[server,test]'
  fi
  step "lint"
  python3 -m ruff check -q .
  step "format"
  python3 -m ruff format -q --check .
  step "tests (fast tier)"
  set +e
  # No Docker engine answers here: an unmarked test that needs one fails loudly instead of slowing the tier.
  # Three workers on two cores: several tests wait (probes, subprocesses) rather than compute.
  DOCKER_HOST=unix:///nonexistent/fast-tier.sock python3 -m pytest -q -n 3 -m "$FAST_TIER" "$@"
  rc=$?
  set -e
  printf '\n== done in %ss (pytest exit %s)\n' "$SECONDS" "$rc"
  exit $rc
fi

step "python packages (torch from the local wheels; ~2 min the first time)"
python3 -m pip install -q --disable-pip-version-check -e '.[server,test]'

if [ "$(id -u)" = 0 ]; then
  step "debian packages the tests use"
  need=()
  # (g++ and cmake build llama-cpp-python's wheel for the llamacpp stack, once per machine; chromium opens
  # `report --html` in the browser test)
  for p in debootstrap docker-registry tmux wrk hey nginx-light openssh-server iproute2 g++ cmake chromium; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # No service may start on install (nginx on :80, docker-registry on :5000): tests start their own,
    # bound to 127.0.0.1, and stop them.
    policy=/usr/sbin/policy-rc.d
    [ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; }
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

step "docker engine"
bash scripts/engine.sh
step "base image"
bash scripts/base-image.sh
step "server image"
tui-profiler images build
step "server image, TensorFlow variant (tf: models; ~3 min the first time, then cached)"
tui-profiler images build --variant tf
step "serving stacks (MLServer, LitServe, llama-cpp-python from PyPI; ~2 min plus llama-cpp-python's wheel, up to 20 min on 2 cores, the first time, then cached)"
bash scripts/stacks.sh

step "lint"
python3 -m ruff check .
step "format"
python3 -m ruff format --check .
step "import contracts"
lint-imports
step "types"
python3 -m mypy

step "tests"
set +e
if [ $# -gt 0 ]; then
  python3 -m pytest "$@"
  rc=$?
else
  # The default run leaves out the opt-in fault-injection and benchmark suites (see docs/development.md).
  # First on two pytest-xdist workers: the engine tests on one of them in order, the rest shared
  # (tests/conftest.py), the 20 slowest listed; then the few `alone` tests, which compare CPU caps, one at a time.
  python3 -m pytest -n 2 --dist loadgroup --durations=20 -m "not faults and not bench and not alone"
  rc=$?
  python3 -m pytest -m "alone and not faults and not bench"
  rc2=$?
  [ $rc -ne 0 ] || rc=$rc2
fi
set -e
printf '\n== done in %ss (pytest exit %s)\n' "$SECONDS" "$rc"
exit $rc
