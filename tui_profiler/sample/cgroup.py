"""Read a target's cgroup counters (v1 and v2) cheaply enough to sample at >= 10 Hz.

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
from dataclasses import dataclass, field
from pathlib import Path

from tui_profiler.host import CGROUP_ROOT, cgroup_version

V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "cpuset", "pids")
UNLIMITED_V1 = 1 << 62  # v1 reports 'no limit' as a huge page-aligned number (9223372036854771712)


@dataclass(slots=True)
class CgroupPaths:
    """Where a target's cgroup lives on the host: one dir (v2) or one dir per v1 controller."""

    version: int
    v2_dir: str | None = None
    v1_dirs: dict[str, str] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.v2_dir) or bool(self.v1_dirs)

    def controller_dir(self, controller: str) -> str | None:
        if self.version == 2:
            return self.v2_dir
        return self.v1_dirs.get(controller)


def _v1_mounts(root: Path) -> dict[str, Path]:
    """controller -> mount dir, handling co-mounted hierarchies such as cpu,cpuacct."""
    mounts: dict[str, Path] = {}
    try:
        entries = list(root.iterdir())
    except OSError:
        return mounts
    for entry in entries:
        if not entry.is_dir():
            continue
        for ctrl in entry.name.split(","):
            if ctrl in V1_CONTROLLERS and ctrl not in mounts:
                mounts[ctrl] = entry
    return mounts


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
    mounts = _v1_mounts(root)
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
    for ctrl, mount in _v1_mounts(root).items():
        for r in rel:
            if (mount / r).is_dir():
                dirs[ctrl] = str(mount / r)
                break
    return CgroupPaths(1, v1_dirs=dirs)


def read_text(path: str | Path) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


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


def read_cpu_limit(paths: CgroupPaths) -> float | None:
    """The CPU quota in cores from the cgroup itself, or None when unlimited / unreadable."""
    if paths.version == 2:
        text = read_text(Path(paths.v2_dir or "/nonexistent") / "cpu.max")
        if not text:
            return None
        quota, _, period = text.strip().partition(" ")
        if quota == "max" or not period:
            return None
        return int(quota) / int(period)
    d = paths.controller_dir("cpu")
    if not d:
        return None
    quota_us, period_us = read_text(Path(d) / "cpu.cfs_quota_us"), read_text(Path(d) / "cpu.cfs_period_us")
    if quota_us is None or period_us is None or int(quota_us) <= 0:
        return None
    return int(quota_us) / int(period_us)


def read_memory_limit(paths: CgroupPaths) -> int | None:
    """The memory limit in bytes from the cgroup itself, or None when unlimited / unreadable."""
    if paths.version == 2:
        text = read_text(Path(paths.v2_dir or "/nonexistent") / "memory.max")
        if not text or text.strip() == "max":
            return None
        return int(text)
    d = paths.controller_dir("memory")
    text = read_text(Path(d) / "memory.limit_in_bytes") if d else None
    if text is None or int(text) >= UNLIMITED_V1:
        return None
    return int(text)


def read_cpuset(paths: CgroupPaths) -> str | None:
    d = paths.controller_dir("cpuset")
    if not d:
        return None
    name = "cpuset.cpus.effective" if paths.version == 2 else "cpuset.cpus"
    text = read_text(Path(d) / name)
    return text.strip() if text else None


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
