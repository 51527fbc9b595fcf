"""TEST DOUBLES, only for what cannot exist on these machines: a GPU (pynvml's view of one)."""

from __future__ import annotations

from types import SimpleNamespace


class FakeNvml:
    """TEST DOUBLE of the pynvml module: GPUs with their utilisation (%) and, per GPU, the host PIDs NVML
    lists with their memory (bytes, or None when NVML cannot tell). Each GPU's first process is listed again
    among its graphics processes, as NVML may list one process twice (it must count once)."""

    def __init__(self, procs: dict[int, list[tuple[int, int | None]]], util: list[int]) -> None:
        self.procs = {
            h: [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in ps] for h, ps in procs.items()
        }
        self.util = util

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.util)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=self.util[h])

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return self.procs.get(h, [])

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return self.procs.get(h, [])[:1]
