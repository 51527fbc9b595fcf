"""Who had the CPUs during a cell's load: the load generator's own CPU time and its event loop's wait for a
CPU, the host's busy cores, and the kernel's CPU pressure. Two snapshots, one before the load and one
after (`CpuProbe.snapshot`, a few small procfs reads: run it in a thread from async code); their difference
is a `CpuWindow`, which `sweep.saturation` judges.

- The client: this process's CPU time (`os.times`: every thread, the resource sampler's included) and that
  of its children reaped in between (the client processes of `load.processes > 1`, which exit at the end of
  the load), against the cores it may use (`host.host_limits().cpus`: affinity and its own cgroup quota).
- Its event loop: the thread that builds the probe (`threading.get_native_id`, on the loop) and its
  /proc/self/task/<tid>/schedstat — nanoseconds on a CPU and nanoseconds runnable but waiting for one. Their
  sum over the wall time is how much of the cell the loop had no idle moment: a loop near 1.0 could not
  send or read any sooner, whether it was busy itself or a neighbour on its core had the CPU.
- The host: /proc/stat's busy time of the cores the target may run on (`host.cpu_times`), and PSI's
  "some" CPU pressure (`host.cpu_pressure_some_us`) where the kernel reports it. In a container (a fleet's
  measuring side) both files are the host's own unless something like lxcfs rewrites them.

Whatever cannot be read is None, never 0.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tui_profiler.cgroups import affinity_cores
from tui_profiler.host import CpuTimes, cpu_pressure_some_us, cpu_times, host_limits

__all__ = ["CpuProbe", "CpuSnapshot", "CpuWindow"]


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    t: float  # perf_counter
    process_cpu_s: float  # this process: user + system, every thread
    children_cpu_s: float  # its reaped children (and theirs)
    loop_run_ns: int | None  # the event loop thread: on a CPU
    loop_wait_ns: int | None  # ... runnable, waiting for a CPU
    host: CpuTimes | None  # /proc/stat of the cores watched
    psi_some_us: int | None


@dataclass(frozen=True, slots=True)
class CpuWindow:
    """The CPUs over one cell's load (the difference of two `CpuSnapshot`s). Rates are in cores (CPU
    seconds per second); None where not available."""

    wall_s: float
    client_cpu_cores: float  # this process and its children reaped in the window
    client_cores_allowed: float  # what it may use: affinity, lowered by its own cgroup quota
    client_affinity: tuple[int, ...]  # the cores it may run on
    loop_busy: float | None  # the event loop thread's (on CPU + waiting for one) / wall
    host_busy_cores: float | None  # busy cores among `host_cores`
    host_cores: int | None  # the cores /proc/stat was read for (the target's cpuset, else all)
    host_core_ids: tuple[int, ...] | None  # which ones (None: every core)
    cpu_pressure_some_pct: float | None  # % of the window some task waited for a CPU (PSI)


def _schedstat(tid: int) -> tuple[int | None, int | None]:
    try:
        fields = Path(f"/proc/self/task/{tid}/schedstat").read_text().split()
        return int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None, None


class CpuProbe:
    """Build it on the event loop's thread (it remembers that thread); `snapshot()` may run anywhere.
    `cores`: the cores to read /proc/stat for (the target's cpuset), None for every core."""

    def __init__(self, cores: Sequence[int] | None = None) -> None:
        self.loop_tid = threading.get_native_id()
        self.cores = tuple(cores) if cores else None

    def snapshot(self) -> CpuSnapshot:
        t = os.times()
        run, wait = _schedstat(self.loop_tid)
        return CpuSnapshot(
            t=time.perf_counter(),
            process_cpu_s=t.user + t.system,
            children_cpu_s=t.children_user + t.children_system,
            loop_run_ns=run,
            loop_wait_ns=wait,
            host=cpu_times(self.cores),
            psi_some_us=cpu_pressure_some_us(),
        )

    def window(self, a: CpuSnapshot, b: CpuSnapshot) -> CpuWindow:
        """What happened between snapshot `a` and the later `b` (blocking on first use: `host_limits`)."""
        wall = max(b.t - a.t, 1e-9)
        client = (b.process_cpu_s - a.process_cpu_s) + (b.children_cpu_s - a.children_cpu_s)
        loop_busy = None
        if None not in (a.loop_run_ns, a.loop_wait_ns, b.loop_run_ns, b.loop_wait_ns):
            assert a.loop_run_ns is not None and a.loop_wait_ns is not None
            assert b.loop_run_ns is not None and b.loop_wait_ns is not None
            loop_ns = (b.loop_run_ns - a.loop_run_ns) + (b.loop_wait_ns - a.loop_wait_ns)
            loop_busy = loop_ns / 1e9 / wall
        host_busy = host_cores = None
        if a.host is not None and b.host is not None and b.host.total > a.host.total:
            host_cores = b.host.cores
            host_busy = host_cores * (b.host.busy - a.host.busy) / (b.host.total - a.host.total)
        psi = None
        if a.psi_some_us is not None and b.psi_some_us is not None:
            psi = 100.0 * (b.psi_some_us - a.psi_some_us) / 1e6 / wall
        return CpuWindow(
            wall_s=wall,
            client_cpu_cores=client / wall,
            client_cores_allowed=host_limits().cpus,
            client_affinity=tuple(affinity_cores()),
            loop_busy=loop_busy,
            host_busy_cores=host_busy,
            host_cores=host_cores,
            host_core_ids=self.cores,
            cpu_pressure_some_pct=psi,
        )
