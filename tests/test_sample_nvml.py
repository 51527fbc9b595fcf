"""GPU sampling. This machine has no GPU and no NVML library, so the real path checked here is 'not
available' (None, with a reason; never 0, never a crash). The PID-mapping logic is checked against a TEST
DOUBLE of the pynvml module (`tests.doubles.FakeNvml`) because no GPU can exist here; it stands in for pynvml only, nowhere else."""

from __future__ import annotations

import pytest

from tests.doubles import FakeNvml
from tui_profiler import host
from tui_profiler.host import nvml_status
from tui_profiler.sample.nvml import GpuProcess, NvmlReader, attribute_to_target


def test_nvml_absent_is_not_available() -> None:
    status = nvml_status()
    if status.available:  # pragma: no cover - only on a GPU machine
        pytest.skip("a GPU is present here; this test is about machines without one")
    assert status.reason and not status.gpus
    reader = NvmlReader()
    assert reader.available is False and reader.reason
    reading = reader.read([1, 2, 3])
    assert reading.gpu_util_pct is None and reading.vram_bytes is None


def test_attribution_keeps_only_the_targets_processes() -> None:
    procs = [
        GpuProcess(0, 100, 1_000),  # the target, GPU 0
        GpuProcess(0, 200, 5_000),  # another job on the same GPU: not charged to the target
        GpuProcess(1, 101, 2_000),  # the target's second process, GPU 1
        GpuProcess(1, 300, None),  # NVML cannot tell this one's memory
    ]
    r = attribute_to_target(procs, [100, 101], {0: 30.0, 1: 75.0})
    assert r.vram_bytes == 3_000 and r.gpu_util_pct == 75.0
    none = attribute_to_target(procs, [999], {0: 30.0, 1: 75.0})
    assert none.vram_bytes is None and none.gpu_util_pct is None  # no presence: not available, not 0
    unknown = attribute_to_target([GpuProcess(0, 5, None)], [5], {0: None})
    assert unknown.vram_bytes is None and unknown.gpu_util_pct is None


def test_pid_mapping_with_nvml_double(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml({0: [(4242, 512 * 2**20), (7, 2**30)], 1: [(4243, None)]}, util=[55, 90])
    monkeypatch.setattr(host, "nvml_module", lambda: fake)
    monkeypatch.setattr(host, "_nvml_state", None)
    reader = NvmlReader()
    assert reader.available
    r = reader.read([4242, 4243])  # the target's host pids (from its cgroup.procs)
    assert r.vram_bytes == 512 * 2**20  # pid 7 is someone else's; 4243's memory is unknown
    assert r.gpu_util_pct == 90.0  # the busiest GPU hosting one of the target's processes
    assert reader.read([1]).vram_bytes is None
