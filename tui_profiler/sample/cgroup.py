"""Find a target's cgroup and read its counters (v1 and v2) cheaply enough to sample at >= 10 Hz. Its
limits, and what "unlimited" reads as, come from `tui_profiler.cgroups`.

Every counter file is opened once and read with `os.pread` (no reopen, no seek), so one sample costs a
handful of syscalls. Values the kernel does not expose here are None ('not available'), never 0.

Units: CPU usage in nanoseconds (v1 cpuacct.usage; v2 cpu.stat usage_usec x 1000), memory in bytes
(v1 memory.usage_in_bytes / v2 memory.current: what the kernel compares against the limit, page cache
included), the peak from the cgroup's own counter (v1 memory.max_usage_in_bytes, v2 memory.peak where the
kernel has it), throttling from cpu.stat (v1 throttled_time ns, v2 throttled_usec), OOM kills from
v1 memory.oom_control `oom_kill` / v2 memory.events `oom_kill`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tui_profiler.cgroups import (
    CGROUP_ROOT,
    CgroupPaths,
    cgroup_version,
    read_cpu_limit,
    read_memory_limit,
    read_text,
    v1_mounts,
)


def cgroup_of_pid(pid: int, root: Path = CGROUP_ROOT) -> CgroupPaths:
    """The cgroup of a host pid, from /proc/<pid>/cgroup (works for cgroupfs and systemd drivers)."""
    version = cgroup_version(root)
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return CgroupPaths(version)
    if version == 2:
        for line in lines:
            if line.startswith("0::"):
                d = root / line[3:].lstrip("/")
                return CgroupPaths(2, v2_dir=str(d)) if d.is_dir() else CgroupPaths(2)
        return CgroupPaths(2)
    mounts = v1_mounts(root)
    dirs: dict[str, str] = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for ctrl in parts[1].split(","):
            if ctrl in mounts:
                d = mounts[ctrl] / parts[2].lstrip("/")
                if d.is_dir():
                    dirs[ctrl] = str(d)
    return CgroupPaths(1, v1_dirs=dirs)


def find_container_cgroup(container_id: str, pid: int | None = None, root: Path = CGROUP_ROOT) -> CgroupPaths:
    """A container's cgroup dirs: from its init pid when known (any driver), else the usual places:
    v1 cgroupfs `<ctrl>/docker/<id>`, v1 systemd `<ctrl>/system.slice/docker-<id>.scope`,
    v2 `system.slice/docker-<id>.scope` or `docker/<id>`."""
    if pid:
        found = cgroup_of_pid(pid, root)
        if found.found:
            return found
    version = cgroup_version(root)
    rel = [f"docker/{container_id}", f"system.slice/docker-{container_id}.scope"]
    if version == 2:
        for r in rel:
            if (root / r).is_dir():
                return CgroupPaths(2, v2_dir=str(root / r))
        return CgroupPaths(2)
    dirs = {}
    for ctrl, mount in v1_mounts(root).items():
        for r in rel:
            if (mount / r).is_dir():
                dirs[ctrl] = str(mount / r)
                break
    return CgroupPaths(1, v1_dirs=dirs)


def _parse_kv(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


@dataclass(slots=True)
class CgroupReading:
    """One read of the counters. Cumulative counters (cpu, throttling, oom) are since the cgroup began."""

    cpu_usage_ns: int | None = None
    mem_bytes: int | None = None
    mem_peak_bytes: int | None = None
    mem_limit_bytes: int | None = None
    nr_periods: int | None = None
    nr_throttled: int | None = None
    throttled_ns: int | None = None
    oom_kills: int | None = None


class CgroupReader:
    """Keeps the counter files of one cgroup open and reads them with pread."""

    def __init__(self, paths: CgroupPaths) -> None:
        self.paths = paths
        self.version = paths.version
        self._fds: dict[str, int] = {}
        self.cpu_limit_cores = read_cpu_limit(paths)
        self.mem_limit_bytes = read_memory_limit(paths)
        if paths.version == 2:
            d = paths.v2_dir
            files = {
                "cpu.stat": f"{d}/cpu.stat",
                "memory.current": f"{d}/memory.current",
                "memory.peak": f"{d}/memory.peak",
                "memory.events": f"{d}/memory.events",
            }
        else:
            cpu, acct, mem = (paths.controller_dir(c) for c in ("cpu", "cpuacct", "memory"))
            files = {}
            if acct:
                files["cpuacct.usage"] = f"{acct}/cpuacct.usage"
            if cpu:
                files["cpu.stat"] = f"{cpu}/cpu.stat"
            if mem:
                files["memory.usage_in_bytes"] = f"{mem}/memory.usage_in_bytes"
                files["memory.max_usage_in_bytes"] = f"{mem}/memory.max_usage_in_bytes"
                files["memory.oom_control"] = f"{mem}/memory.oom_control"
        for key, path in files.items():
            try:
                self._fds[key] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass  # that counter is 'not available'

    @property
    def readable(self) -> bool:
        """True when at least CPU usage and memory usage can be read."""
        if self.version == 2:
            return "cpu.stat" in self._fds and "memory.current" in self._fds
        return "cpuacct.usage" in self._fds and "memory.usage_in_bytes" in self._fds

    def _read(self, key: str) -> str | None:
        fd = self._fds.get(key)
        if fd is None:
            return None
        try:
            return os.pread(fd, 4096, 0).decode()
        except OSError:
            return None  # the cgroup went away (target exited)

    def _int(self, key: str) -> int | None:
        text = self._read(key)
        try:
            return int(text) if text else None
        except ValueError:
            return None

    def usage_reader(self) -> Callable[[], tuple[bytes, bytes]]:
        """A function returning CPU usage and memory as the kernel wrote them, unparsed: all a 20 Hz
        sampler's tick does (`parse_usage` turns them into numbers later, in a batch). b"" where a file
        cannot be read. The file descriptors are bound once: a freshly woken thread pays for every lookup."""
        pread = os.pread
        cpu_fd = self._fds.get("cpu.stat" if self.version == 2 else "cpuacct.usage")
        mem_fd = self._fds.get("memory.current" if self.version == 2 else "memory.usage_in_bytes")
        cpu_size = 4096 if self.version == 2 else 64  # v2's cpu.stat has several lines; v1's is one number

        def read_usage_raw() -> tuple[bytes, bytes]:
            try:
                return (
                    pread(cpu_fd, cpu_size, 0) if cpu_fd is not None else b"",
                    pread(mem_fd, 64, 0) if mem_fd is not None else b"",
                )
            except OSError:
                return b"", b""  # the cgroup went away (target exited)

        return read_usage_raw

    def parse_usage(self, raw: tuple[bytes, bytes]) -> tuple[int | None, int | None]:
        """(CPU usage ns, memory bytes) from a `usage_reader()` reading; None where not available."""
        cpu_text, mem_text = raw
        cpu_ns: int | None = None
        try:
            if self.version == 2:
                usec = _parse_kv(cpu_text.decode()).get("usage_usec") if cpu_text else None
                cpu_ns = usec * 1000 if usec is not None else None
            elif cpu_text:
                cpu_ns = int(cpu_text)
        except ValueError:
            pass
        try:
            mem = int(mem_text) if mem_text else None
        except ValueError:
            mem = None
        return cpu_ns, mem

    def read(self) -> CgroupReading:
        """Every counter: CPU usage and memory, and the cumulative ones (peak, throttling, OOM kills). A
        20 Hz sampler reads only the first two on most ticks (`usage_reader`)."""
        r = CgroupReading(mem_limit_bytes=self.mem_limit_bytes)
        stat_text = self._read("cpu.stat")
        stat = _parse_kv(stat_text) if stat_text else {}
        if self.version == 2:
            if "usage_usec" in stat:
                r.cpu_usage_ns = stat["usage_usec"] * 1000
            r.mem_bytes = self._int("memory.current")
            r.mem_peak_bytes = self._int("memory.peak")
            if "throttled_usec" in stat:
                r.throttled_ns = stat["throttled_usec"] * 1000
            events = self._read("memory.events")
            if events:
                r.oom_kills = _parse_kv(events).get("oom_kill")
        else:
            r.cpu_usage_ns = self._int("cpuacct.usage")
            r.mem_bytes = self._int("memory.usage_in_bytes")
            r.mem_peak_bytes = self._int("memory.max_usage_in_bytes")
            if "throttled_time" in stat:
                r.throttled_ns = stat["throttled_time"]
            oom = self._read("memory.oom_control")
            if oom:
                r.oom_kills = _parse_kv(oom).get("oom_kill")
        r.nr_periods = stat.get("nr_periods")
        r.nr_throttled = stat.get("nr_throttled")
        return r

    def pids(self) -> list[int]:
        """Host pids in the cgroup (all of the target's processes, for NVML mapping)."""
        d = self.paths.controller_dir("memory") or self.paths.controller_dir("cpu") or self.paths.v2_dir
        text = read_text(Path(d) / "cgroup.procs") if d else None
        return [int(x) for x in text.split()] if text else []

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    def __enter__(self) -> CgroupReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
