"""GPU utilisation and the target's own VRAM through nvidia-ml-py (NVML).

NVML lists the processes on each GPU by host PID; the target's host PIDs come from its cgroup
(cgroup.procs) or, for the process runtime, its process group. Only memory used by those PIDs counts, so
another job on a shared GPU is not charged to the target. When NVML, its driver or a GPU is absent every
GPU field is None ('not available') with the reason, never 0 and never an exception.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class NvmlStatus:
    available: bool
    reason: str = ""  # why not, in plain words
    driver: str | None = None
    gpus: list[str] = field(default_factory=list)  # "0: NVIDIA H100 80GB HBM3 (81559 MiB)"


_lock = threading.Lock()
_init_state: tuple[bool, str] | None = None


def _nvml() -> Any:
    import pynvml

    return pynvml


def _ensure_init() -> tuple[bool, str]:
    """nvmlInit once per process; remembers a failure (with its reason) instead of retrying each sample."""
    global _init_state
    with _lock:
        if _init_state is None:
            try:
                nv = _nvml()
                nv.nvmlInit()
                count = nv.nvmlDeviceGetCount()
                _init_state = (True, "") if count > 0 else (False, "NVML reports no GPU")
            except ImportError:
                _init_state = (False, "nvidia-ml-py is not installed")
            except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
                _init_state = (False, f"NVML unavailable: {exc}")
        return _init_state


def nvml_status() -> NvmlStatus:
    ok, reason = _ensure_init()
    if not ok:
        return NvmlStatus(False, reason)
    nv = _nvml()
    try:
        driver = nv.nvmlSystemGetDriverVersion()
        gpus = []
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            name = nv.nvmlDeviceGetName(h)
            mem = nv.nvmlDeviceGetMemoryInfo(h).total // 2**20
            gpus.append(f"{i}: {name if isinstance(name, str) else name.decode()} ({mem} MiB)")
        return NvmlStatus(True, "", driver if isinstance(driver, str) else driver.decode(), gpus)
    except Exception as exc:
        return NvmlStatus(False, f"NVML query failed: {exc}")


@dataclass(slots=True)
class GpuProcess:
    """What NVML says about one process on one GPU (host PID; used_bytes None when NVML cannot tell)."""

    gpu_index: int
    pid: int
    used_bytes: int | None


@dataclass(slots=True)
class GpuReading:
    gpu_util_pct: float | None = None  # the busiest GPU that hosts one of the target's processes
    vram_bytes: int | None = None  # the target's own processes, summed over GPUs


def attribute_to_target(
    processes: Iterable[GpuProcess], target_pids: Iterable[int], util_by_gpu: dict[int, float | None]
) -> GpuReading:
    """Keep only the target's processes (by host PID): their VRAM summed, and the utilisation of the GPUs
    they are on. No process of the target on any GPU -> VRAM None and utilisation None (not 0: the
    target simply has no GPU presence to measure)."""
    wanted = set(target_pids)
    mine = [p for p in processes if p.pid in wanted]
    if not mine:
        return GpuReading()
    known = [p.used_bytes for p in mine if p.used_bytes is not None]
    vram = sum(known) if known else None
    utils = [u for u in (util_by_gpu.get(p.gpu_index) for p in mine) if u is not None]
    return GpuReading(gpu_util_pct=max(utils) if utils else None, vram_bytes=vram)


class NvmlReader:
    """Reads GPU processes and utilisation each sample. `available` False -> read() returns all None."""

    def __init__(self) -> None:
        ok, reason = _ensure_init()
        self.available = ok
        self.reason = reason
        self._handles: list[Any] = []
        if ok:
            nv = _nvml()
            try:
                self._handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
            except Exception as exc:
                self.available, self.reason = False, f"NVML query failed: {exc}"

    def processes(self) -> tuple[list[GpuProcess], dict[int, float | None]]:
        nv = _nvml()
        procs: list[GpuProcess] = []
        util: dict[int, float | None] = {}
        for i, h in enumerate(self._handles):
            try:
                util[i] = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
            except Exception:
                util[i] = None
            seen: set[int] = set()
            for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                try:
                    infos = getattr(nv, getter)(h)
                except Exception:
                    continue
                for info in infos:
                    if info.pid in seen:
                        continue
                    seen.add(info.pid)
                    used = getattr(info, "usedGpuMemory", None)
                    procs.append(GpuProcess(i, int(info.pid), int(used) if isinstance(used, int) else None))
        return procs, util

    def read(self, target_pids: Iterable[int]) -> GpuReading:
        if not self.available:
            return GpuReading()
        try:
            procs, util = self.processes()
        except Exception:
            return GpuReading()
        return attribute_to_target(procs, target_pids, util)
