"""Start llama-cpp-python's OpenAI-compatible server on the model made at build time, with as many threads
as the container's CPU quota allows (llama.cpp would take half the host's cores, whatever the cap).

Threads: TUI_PROFILER_THREADS when it is a number (tui-profiler sets it; `auto`: the quota), else the
cgroup's CPU quota rounded up (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), else the CPUs in the affinity mask.
Every other argument goes to `python3 -m llama_cpp.server` unchanged. That server loads the model before
it opens its port, so `GET /v1/models` answers only once the model is loaded."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path


def quota_cpus() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 else None
    except (OSError, ValueError):
        return None


def threads() -> int:
    setting = os.environ.get("TUI_PROFILER_THREADS", "auto")
    if setting.isdigit() and int(setting) > 0:
        return int(setting)
    cpus = len(os.sched_getaffinity(0))
    quota = quota_cpus()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def main() -> None:
    n = str(threads())
    argv = [sys.executable, "-m", "llama_cpp.server", "--n_threads", n, "--n_threads_batch", n, *sys.argv[1:]]
    print(f"serve.py: {' '.join(argv[1:])}", flush=True)
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
