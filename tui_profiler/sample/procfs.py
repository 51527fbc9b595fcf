"""Last-resort sampler source for the `process` runtime when it could not create a cgroup: the target's
process group read from /proc. CPU is utime+stime summed over the group's live processes (a child that
exited takes its CPU time with it, so this can undercount); memory is the summed RSS, the peak the summed
VmHWM (an upper bound: each process's own high-water mark, not reached at the same moment)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(slots=True)
class ProcReading:
    cpu_usage_ns: int | None
    mem_bytes: int | None
    mem_peak_bytes: int | None


def group_pids(pgid: int) -> list[int]:
    """Live pids whose process group is `pgid`."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            out.append(int(name))
    return out


class ProcGroupReader:
    def __init__(self, pgid: int, refresh_s: float = 1.0) -> None:
        self.pgid = pgid
        self.refresh_s = refresh_s
        self._pids: list[int] = []
        self._refreshed = 0.0

    def pids(self) -> list[int]:
        now = time.perf_counter()
        if now - self._refreshed >= self.refresh_s or not self._pids:
            self._pids = group_pids(self.pgid)
            self._refreshed = now
        return self._pids

    def read(self) -> ProcReading:
        cpu_ticks = 0
        rss = 0
        hwm = 0
        alive = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    stat = f.read()
                with open(f"/proc/{pid}/status", "rb") as f:
                    status = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            cpu_ticks += int(fields[11]) + int(fields[12])  # utime, stime
            for line in status.splitlines():
                if line.startswith(b"VmRSS:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith(b"VmHWM:"):
                    hwm += int(line.split()[1]) * 1024
            alive += 1
        if not alive:
            return ProcReading(None, None, None)
        return ProcReading(int(cpu_ticks * TICK_NS), rss, hwm)
