"""This machine, in one place: usable cores (affinity and CPU quota), memory (and a cgroup limit), the cgroup
version, GPUs through NVML, the CPU model and package versions.

Every other module asks here; none reads /proc or /sys for a host fact, or probes NVML, on its own. The
cgroup facts behind them (its version, its limits, the affinity) are read through `tui_profiler.cgroups`.
A fact that cannot be read is None or says why ('not available: ...'), never 0.
"""

from __future__ import annotations

import functools
import os
import platform
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_profiler.cgroups import affinity_cores, cgroup_label, own_cgroup, read_cpu_limit, read_memory_limit

# ------------------------------------------------------------------------------------------------ memory


def memory_total() -> int | None:
    """MemTotal from /proc/meminfo, in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# ------------------------------------------------------------------------------------------------- NVML


@dataclass(frozen=True, slots=True)
class NvmlStatus:
    available: bool
    reason: str = ""  # why not, in plain words
    driver: str | None = None
    gpus: tuple[str, ...] = field(default_factory=tuple)  # "0: NVIDIA H100 80GB HBM3 (81559 MiB)"


_nvml_lock = threading.Lock()
_nvml_state: tuple[bool, str] | None = None


def nvml_module() -> Any:
    """The pynvml module (nvidia-ml-py). Tests replace it with a double here."""
    import pynvml

    return pynvml


def nvml_init() -> tuple[bool, str]:
    """nvmlInit once per process: (usable, why not). A failure is remembered, not retried each sample."""
    global _nvml_state
    with _nvml_lock:
        if _nvml_state is None:
            try:
                nv = nvml_module()
                nv.nvmlInit()
                count = nv.nvmlDeviceGetCount()
                _nvml_state = (True, "") if count > 0 else (False, "NVML reports no GPU")
            except ImportError:
                _nvml_state = (False, "nvidia-ml-py is not installed")
            except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
                _nvml_state = (False, f"NVML unavailable: {exc}")
        return _nvml_state


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_status() -> NvmlStatus:
    """Whether NVML answers here, the driver version and one line per GPU."""
    ok, reason = nvml_init()
    if not ok:
        return NvmlStatus(False, reason)
    nv = nvml_module()
    try:
        gpus = []
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            mem = nv.nvmlDeviceGetMemoryInfo(h).total // 2**20
            gpus.append(f"{i}: {_text(nv.nvmlDeviceGetName(h))} ({mem} MiB)")
        return NvmlStatus(True, "", _text(nv.nvmlSystemGetDriverVersion()), tuple(gpus))
    except Exception as exc:
        return NvmlStatus(False, f"NVML query failed: {exc}")


# ------------------------------------------------------------------------------------------ host limits


@dataclass(frozen=True, slots=True)
class HostLimits:
    """What this host can give a target."""

    cpus: float  # usable cores (affinity, lowered by a cgroup CPU quota)
    memory_gb: float  # GiB (total memory, lowered by a cgroup memory limit)
    gpus: int
    gpu_reason: str  # why gpus is what it is ("2 GPU(s) via NVML, driver 550.54", or why 0)


@functools.lru_cache(maxsize=1)
def host_limits() -> HostLimits:
    """Cores (affinity and cgroup quota), memory (GiB), GPUs (NVML). Cached: the host does not change."""
    cores = float(len(affinity_cores()))
    own = own_cgroup()
    quota = read_cpu_limit(own)
    if quota is not None:
        cores = min(cores, quota)
    mem = memory_total()
    limit = read_memory_limit(own)
    if limit is not None:
        mem = min(mem, limit) if mem else limit
    nv = nvml_status()
    if nv.available:
        gpus, reason = len(nv.gpus), f"{len(nv.gpus)} GPU(s) via NVML, driver {nv.driver}"
    else:
        gpus, reason = 0, f"not available ({nv.reason})"
    return HostLimits(cpus=cores, memory_gb=round((mem or 0) / 2**30, 2), gpus=gpus, gpu_reason=reason)


# -------------------------------------------------------------------------------------- host CPU use

PROC_STAT = Path("/proc/stat")
CPU_PRESSURE = Path("/proc/pressure/cpu")


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Cumulative CPU time of some of this machine's cores from /proc/stat, in clock ticks: `busy` (user,
    nice, system, irq, softirq and steal: a hypervisor's steal is time others took) and `total` (busy plus
    idle and iowait). `cores`: how many cores they cover. Two readings' difference says how busy those
    cores were between them: `cores * d_busy / d_total` cores on average."""

    busy: int
    total: int
    cores: int


def cpu_times(cores: Sequence[int] | None = None, path: Path = PROC_STAT) -> CpuTimes | None:
    """/proc/stat's times of `cores` (its `cpuN` lines), or of every core (its `cpu` line) when None; None
    when the file cannot be read or names none of them. Cheap: one small procfs read."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    wanted = None if cores is None else {f"cpu{c}" for c in cores}
    chosen: list[list[str]] = []
    n_cores = 0
    for line in lines:
        if not line.startswith("cpu"):
            break  # the cpu lines come first: `cpu` (the sum over every core), then one `cpuN` per core
        name, *fields = line.split()
        if name == "cpu":
            if wanted is None:
                chosen.append(fields)
            continue
        n_cores += 1
        if wanted is not None and name in wanted:
            chosen.append(fields)
    busy = total = 0
    for fields in chosen:
        try:
            user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        except ValueError:
            return None
        busy += user + nice + system + irq + softirq + steal
        total += user + nice + system + idle + iowait + irq + softirq + steal
    cores_read = n_cores if wanted is None else len(chosen)
    return CpuTimes(busy, total, cores_read) if chosen and cores_read else None


def cpu_pressure_some_us(path: Path = CPU_PRESSURE) -> int | None:
    """The kernel's CPU pressure (PSI, /proc/pressure/cpu): microseconds in which at least one runnable task
    waited for a CPU, since boot. None where the kernel does not report it (no PSI, or `psi=0`)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some "):
            for part in line.split():
                if part.startswith("total="):
                    try:
                        return int(part[6:])
                    except ValueError:
                        return None
    return None


# --------------------------------------------------------------------------------------- software facts


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (or what platform knows), None when neither says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def package_version(name: str) -> str | None:
    """An installed distribution's version, None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


RECORDED_PACKAGES = (
    "tui-profiler",
    "docker",
    "aiohttp",
    "numpy",
    "scipy",
    "pandas",
    "rich",
    "nvidia-ml-py",
    "torch",
    "torchvision",
)


def package_versions() -> dict[str, str | None]:
    return {name: package_version(name) for name in RECORDED_PACKAGES}


def host_facts() -> dict[str, Any]:
    """What meta.json says about the machine (blocking: call it in a thread from async code)."""
    from tui_profiler import __version__

    limits = host_limits()
    return {
        "tool_version": __version__,
        "host": {
            "hostname": platform.node(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "usable_cores": limits.cpus,
            "memory_gb": limits.memory_gb,
            "kernel": platform.release(),
            "os": platform.platform(),
            "python": platform.python_version(),
            "cgroup_version": cgroup_label(),
            "gpus": limits.gpus,
            "gpu": limits.gpu_reason,
        },
        "packages": package_versions(),
        "time": {
            "clock": "time.perf_counter (intervals); epoch ms for timestamp_ms",
            "started_epoch_s": time.time(),
        },
    }
