"""Cgroup facts, in one place: where the tree is and its version, a cgroup's limits (CPU quota, memory
limit, cpuset; v1 and v2), whether an asked-for cap took effect, and which cores a cpuset cap pins.

The host's limits (`host`), the sampler's counters (`sample.cgroup`), the runtimes' cap confirmation and
the benchmarks' core choice all read here. A limit that cannot be read, or is not set, is None, never 0.
Imports nothing from tui_profiler: the bottom layer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "cpuset", "pids")

# cgroup v1 writes "no memory limit" as the largest page count in bytes: LONG_MAX rounded down to a page,
# 2**63 minus one page (9223372036854771712 with 4 KiB pages). Every page size leaves that above 2**62,
# and no machine has 4 EiB of memory, so anything at or above 2**62 is "unlimited".
V1_UNLIMITED = 1 << 62


def _page_size() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 4096


# When a cap counts as enforced: the kernel's CPU quota within 0.01 cores of the asked one (the runtimes
# write whole microseconds of a 100 ms period, at least 1 ms), and its memory limit less than two pages
# from the asked bytes (the kernel keeps the limit in whole pages, rounding down).
CPU_TOLERANCE_CORES = 0.01
MEMORY_TOLERANCE_BYTES = 2 * _page_size()


# ------------------------------------------------------------------------------------------ where, which


def cgroup_version(root: Path = CGROUP_ROOT) -> int:
    """2 for the unified hierarchy mounted at `root`, 1 otherwise (v1 or hybrid)."""
    return 2 if (root / "cgroup.controllers").exists() else 1


def cgroup_label(root: Path = CGROUP_ROOT) -> str:
    """'v1' / 'v2' as meta.json and `doctor` write it, or 'not available' without a cgroup file system."""
    if (root / "cgroup.controllers").exists():
        return "v2"
    if (root / "memory").is_dir() or (root / "cpu").is_dir():
        return "v1"
    return "not available"


@dataclass(slots=True)
class CgroupPaths:
    """Where a cgroup lives on the host: one dir (v2) or one dir per v1 controller."""

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


def v1_mounts(root: Path = CGROUP_ROOT) -> dict[str, Path]:
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


def own_cgroup(root: Path = CGROUP_ROOT) -> CgroupPaths:
    """This process's cgroup as the tree at `root` shows it: a container's (namespaced) tree starts at its
    own cgroup, so its limits are the root's files (v2) or those of each controller's mount (v1)."""
    if cgroup_version(root) == 2:
        return CgroupPaths(2, v2_dir=str(root))
    return CgroupPaths(1, v1_dirs={ctrl: str(d) for ctrl, d in v1_mounts(root).items()})


# ---------------------------------------------------------------------------------------------- limits


def read_text(path: str | Path) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def read_cpu_limit(paths: CgroupPaths) -> float | None:
    """The CPU quota in cores (quota / period), None when unlimited or unreadable."""
    if paths.version == 2:
        text = read_text(Path(paths.v2_dir) / "cpu.max") if paths.v2_dir else None
        quota, _, period = (text or "").strip().partition(" ")
        q, p = _int(quota), _int(period)  # "max" (no quota) reads as None
    else:
        d = paths.controller_dir("cpu")
        q = _int(read_text(Path(d) / "cpu.cfs_quota_us")) if d else None  # -1: no quota
        p = _int(read_text(Path(d) / "cpu.cfs_period_us")) if d else None
    if q is None or p is None or q <= 0 or p <= 0:
        return None
    return q / p


def read_memory_limit(paths: CgroupPaths) -> int | None:
    """The memory limit in bytes, None when unlimited ("max" in v2, `V1_UNLIMITED` in v1) or unreadable."""
    if paths.version == 2:
        d = paths.v2_dir
        return _int(read_text(Path(d) / "memory.max")) if d else None  # "max" reads as None
    d = paths.controller_dir("memory")
    value = _int(read_text(Path(d) / "memory.limit_in_bytes")) if d else None
    return value if value is not None and value < V1_UNLIMITED else None


def read_cpuset(paths: CgroupPaths) -> str | None:
    """The cores the cgroup may run on, as the kernel writes them ("0-3,6"), None when unreadable."""
    d = paths.controller_dir("cpuset")
    if not d:
        return None
    name = "cpuset.cpus.effective" if paths.version == 2 else "cpuset.cpus"
    text = read_text(Path(d) / name)
    return text.strip() if text else None


# ----------------------------------------------------------------------------------- cap confirmation


@dataclass(slots=True)
class CapConfirmation:
    """What a cgroup's own files say of the asked caps. A cap not asked for is not confirmed."""

    cpus: bool = False  # the CPU quota is within CPU_TOLERANCE_CORES of the asked cores
    memory: bool = False  # the memory limit is within MEMORY_TOLERANCE_BYTES of the asked bytes
    cpuset: str | None = None  # the pinned cores as the kernel reads them (asked with a CPU cap only)
    cpus_note: str = ""  # why the CPU cap is not confirmed ("" when it is, or was not asked)
    memory_note: str = ""


def confirm_caps(
    paths: CgroupPaths, *, cpus: float | None, memory_bytes: int | None, cpuset: bool = False
) -> CapConfirmation:
    """Whether the kernel enforces the caps asked for (`cpus` cores, `memory_bytes`, a cpuset pin), read
    from the cgroup's files: the one tolerance every runtime confirms with."""
    out = CapConfirmation()
    if cpus:
        got = read_cpu_limit(paths)
        out.cpus = got is not None and abs(got - cpus) <= CPU_TOLERANCE_CORES
        if not out.cpus:
            out.cpus_note = f"cpus: cgroup quota reads {got} cores, asked {cpus}"
        if cpuset:
            out.cpuset = read_cpuset(paths)
    if memory_bytes:
        got_mem = read_memory_limit(paths)
        out.memory = got_mem is not None and abs(got_mem - memory_bytes) < MEMORY_TOLERANCE_BYTES
        if not out.memory:
            out.memory_note = f"memory: cgroup limit reads {got_mem}, asked {memory_bytes}"
    return out


# ----------------------------------------------------------------------------------------------- cores


def affinity_cores() -> list[int]:
    """The CPUs this process may run on (its affinity, which its cpuset bounds)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def cpuset_cores(cpuset: str) -> list[int]:
    """The cores a cpuset string ("0-3,6") names, in order."""
    cores: list[int] = []
    for part in cpuset.split(","):
        lo, _, hi = part.partition("-")
        cores.extend(range(int(lo), int(hi or lo) + 1))
    return cores


def cpuset_text(cores: Iterable[int]) -> str:
    """Cores as a cpuset string, runs as ranges: [0, 1, 2, 3, 6] -> "0-3,6"."""
    parts: list[str] = []
    run: list[int] = []
    for core in sorted(set(cores)):
        if run and core != run[-1] + 1:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(core)
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


def pinned_cores(cpus: float, cores: Sequence[int] | None = None) -> list[int]:
    """The cores a cpuset cap of `cpus` pins: the first ceil(cpus) of `cores` (default: this process's
    `affinity_cores`), all of them when there are fewer."""
    available = list(cores) if cores is not None else affinity_cores()
    return available[: max(1, math.ceil(cpus))]
