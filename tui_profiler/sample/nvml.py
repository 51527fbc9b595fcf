"""GPU utilisation and the target's own VRAM through nvidia-ml-py (NVML).

NVML lists the processes on each GPU by host PID; the target's host PIDs come from its cgroup
(cgroup.procs) or, for the process runtime, its process group. Only memory used by those PIDs counts, so
another job on a shared GPU is not charged to the target. When NVML, its driver or a GPU is absent every
GPU field is None ('not available') with the reason, never 0 and never an exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tui_profiler import host


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
        ok, reason = host.nvml_init()
        self.available = ok
        self.reason = reason
        self._handles: list[Any] = []
        if ok:
            nv = host.nvml_module()  # through the module: a test double replaces it there
            try:
                self._handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
            except Exception as exc:
                self.available, self.reason = False, f"NVML query failed: {exc}"

    def processes(self) -> tuple[list[GpuProcess], dict[int, float | None]]:
        nv = host.nvml_module()  # through the module: a test double replaces it there
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
