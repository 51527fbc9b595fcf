"""What the target's CPU did during each request: its cgroup's CPU usage and CFS throttling, read at every
request's start and end, attributed to the requests in flight (requests.csv `cpu_ms`, `throttled_ms`,
`throttled_periods`).

The reads are cheap: the counter files are opened once and read with `os.pread` (v1: cpuacct.usage and
cpu.stat; v2: cpu.stat alone), two or three syscalls a mark (`tui-profiler bench client` measures them).

Attribution (`CpuAttribution`, pure arithmetic): the counters are the container's, shared by the requests
in flight. Each mark (a request starting or ending) closes an interval since the previous mark; that
interval's deltas are split equally among the requests in flight during it. An interval with no request in
flight (between one request's end and the next one's start: the server finishing the previous answer, the
client's own gap) is carried into the next interval, and so to the requests in flight then. So the
per-request sums over a cell equal the cgroup's own delta from the cell's first request start to its last
request end, exactly (up to float rounding). At concurrency 1 a request carries the CPU of its own span
plus the gap before it. A request is "throttled" when its share of `nr_throttled` is above 0: the cgroup
ran out of quota at least once while it was in flight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tui_profiler.cgroups import CgroupPaths

# One reading: CPU usage (ns), throttled periods, throttled time (ns); the last two None without CFS stats.
Reading = tuple[int, int | None, int | None]


@dataclass(slots=True)
class RequestCpu:
    """One request's share: CPU time, throttled time (ns) and throttled periods (a fraction when shared)."""

    cpu_ns: float = 0.0
    throttled_ns: float | None = 0.0
    periods: float | None = 0.0

    @property
    def cpu_ms(self) -> float:
        return self.cpu_ns / 1e6

    @property
    def throttled_ms(self) -> float | None:
        return None if self.throttled_ns is None else self.throttled_ns / 1e6


class CpuAttribution:
    """Splits the deltas between successive readings among the requests in flight (see the module)."""

    def __init__(self) -> None:
        self._in_flight: dict[int, RequestCpu] = {}
        self._last: Reading | None = None
        self._first: Reading | None = None
        self._carry = [0.0, 0.0, 0.0]  # deltas of intervals with nothing in flight, not yet given out
        self._next_key = 0
        self.last_end: Reading | None = None  # the reading at the latest request end

    def _advance(self, reading: Reading) -> None:
        last = self._last
        self._last = reading
        if last is None:
            self._first = reading
            return
        d_cpu = float(reading[0] - last[0])
        d_n = float(reading[1] - last[1]) if reading[1] is not None and last[1] is not None else 0.0
        d_t = float(reading[2] - last[2]) if reading[2] is not None and last[2] is not None else 0.0
        carry = self._carry
        if not self._in_flight:
            carry[0] += d_cpu
            carry[1] += d_n
            carry[2] += d_t
            return
        share = 1.0 / len(self._in_flight)
        d_cpu, d_n, d_t = (d_cpu + carry[0]) * share, (d_n + carry[1]) * share, (d_t + carry[2]) * share
        carry[0] = carry[1] = carry[2] = 0.0
        for req in self._in_flight.values():
            req.cpu_ns += d_cpu
            if req.periods is not None:
                req.periods += d_n
            if req.throttled_ns is not None:
                req.throttled_ns += d_t

    def start(self, reading: Reading) -> int:
        """A request starts (the reading just before it is sent); returns its key for `end`."""
        self._advance(reading)
        key = self._next_key
        self._next_key += 1
        throttling = reading[1] is not None and reading[2] is not None
        self._in_flight[key] = RequestCpu(0.0, 0.0 if throttling else None, 0.0 if throttling else None)
        return key

    def end(self, key: int, reading: Reading) -> RequestCpu:
        """The request `key` ended (the reading just after its answer): its final share."""
        self._advance(reading)
        self.last_end = reading
        return self._in_flight.pop(key)

    def drop(self, key: int) -> None:
        """Forget a request whose end could not be read (it takes no further share)."""
        self._in_flight.pop(key, None)

    def span(self) -> tuple[Reading, Reading] | None:
        """(first start's reading, last end's reading): the per-request sums add up to their difference."""
        if self._first is None or self.last_end is None:
            return None
        return self._first, self.last_end


def _field(data: bytes, name: bytes) -> int | None:
    i = data.find(name + b" ")
    if i < 0:
        return None
    j = data.find(b"\n", i)
    return int(data[i + len(name) + 1 : j if j >= 0 else None])


class RequestCpuMeter:
    """Reads the target's CPU counters at each request's start and end and attributes them
    (`CpuAttribution`). `open` returns None when the cgroup's CPU usage cannot be read from here."""

    def __init__(self, usage_fd: int | None, stat_fd: int | None, version: int) -> None:
        self._usage_fd, self._stat_fd, self.version = usage_fd, stat_fd, version
        self.attribution = CpuAttribution()

    @classmethod
    def open(cls, paths: CgroupPaths | None) -> RequestCpuMeter | None:
        if paths is None or not paths.found:
            return None
        usage_path = stat_path = None
        if paths.version == 2:
            stat_path = f"{paths.v2_dir}/cpu.stat" if paths.v2_dir else None
        else:
            acct, cpu = paths.controller_dir("cpuacct"), paths.controller_dir("cpu")
            usage_path = f"{acct}/cpuacct.usage" if acct else None
            stat_path = f"{cpu}/cpu.stat" if cpu else None

        def fd_of(path: str | None) -> int | None:
            if path is None:
                return None
            try:
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None

        meter = cls(fd_of(usage_path), fd_of(stat_path), paths.version)
        if meter.read() is None:
            meter.close()
            return None
        return meter

    def read(self) -> Reading | None:
        """The counters now, None when they cannot be read (the cgroup went away)."""
        pread = os.pread
        try:
            stat = pread(self._stat_fd, 1024, 0) if self._stat_fd is not None else b""
            if self.version == 2:
                usec = _field(stat, b"usage_usec")
                if usec is None:
                    return None
                t_us = _field(stat, b"throttled_usec")
                return usec * 1000, _field(stat, b"nr_throttled"), None if t_us is None else t_us * 1000
            if self._usage_fd is None:
                return None
            usage = int(pread(self._usage_fd, 64, 0))
            return usage, _field(stat, b"nr_throttled"), _field(stat, b"throttled_time")
        except (OSError, ValueError):
            return None

    def start(self) -> int | None:
        """Mark a request's start; its key for `end` (None: the counters could not be read)."""
        reading = self.read()
        return None if reading is None else self.attribution.start(reading)

    def end(self, key: int | None) -> RequestCpu | None:
        """Mark a request's end: its share, None when it has none (the counters could not be read)."""
        if key is None:
            return None
        reading = self.read()
        if reading is None:
            self.attribution.drop(key)
            return None
        return self.attribution.end(key, reading)

    def close(self) -> None:
        for fd in (self._usage_fd, self._stat_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._usage_fd = self._stat_fd = None
