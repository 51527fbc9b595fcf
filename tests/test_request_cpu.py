"""Per-request CPU attribution (`sample.request_cpu`): the arithmetic by hand, and the reader on this
process's own cgroup (fast tier: no container, no threshold on time)."""

from __future__ import annotations

import math

import pytest

from tui_profiler.cgroups import CgroupPaths
from tui_profiler.sample.cgroup import cgroup_of_pid
from tui_profiler.sample.request_cpu import CpuAttribution, RequestCpuMeter


def test_one_at_a_time_each_request_carries_its_span_and_the_gap_before_it() -> None:
    a = CpuAttribution()
    k1 = a.start((1000, 0, 0))
    r1 = a.end(k1, (1500, 1, 40))  # 500 ns of CPU, one throttled period of 40 ns
    k2 = a.start((1600, 1, 40))  # 100 ns between the two requests: carried into the second
    r2 = a.end(k2, (1900, 1, 40))
    assert (r1.cpu_ns, r1.periods, r1.throttled_ns) == (500, 1, 40)
    assert (r2.cpu_ns, r2.periods, r2.throttled_ns) == (400, 0, 0)
    assert a.span() == ((1000, 0, 0), (1900, 1, 40))


def test_overlapping_requests_split_each_interval_equally_and_the_sums_are_exact() -> None:
    a = CpuAttribution()
    k1 = a.start((0, 0, 0))
    k2 = a.start((100, 0, 0))  # [0, 100]: k1 alone
    k3 = a.start((400, 3, 30))  # [100, 400]: k1, k2 share 300 ns, 3 periods, 30 ns
    r2 = a.end(k2, (700, 3, 30))  # [400, 700]: k1, k2, k3 share 300 ns
    r1 = a.end(k1, (900, 5, 50))  # [700, 900]: k1, k3 share 200 ns, 2 periods, 20 ns
    r3 = a.end(k3, (1000, 5, 50))  # [900, 1000]: k3 alone
    assert r1.cpu_ns == pytest.approx(100 + 150 + 100 + 100)
    assert r2.cpu_ns == pytest.approx(150 + 100)
    assert r3.cpu_ns == pytest.approx(100 + 100 + 100)
    assert r1.periods == pytest.approx(1.5 + 1) and r2.periods == pytest.approx(1.5) and r3.periods == 1
    total = sum(r.cpu_ns for r in (r1, r2, r3))
    first, last = a.span() or ((0, 0, 0), (0, 0, 0))
    assert total == pytest.approx(last[0] - first[0])
    assert sum(r.throttled_ns or 0 for r in (r1, r2, r3)) == pytest.approx(50)


def test_without_cfs_statistics_throttling_is_not_available() -> None:
    a = CpuAttribution()
    k = a.start((0, None, None))
    r = a.end(k, (10, None, None))
    assert r.cpu_ns == 10 and r.throttled_ms is None and r.periods is None


def test_a_cgroup_that_cannot_be_read_gives_no_meter() -> None:
    assert RequestCpuMeter.open(None) is None
    assert RequestCpuMeter.open(CgroupPaths(1, v1_dirs={"cpuacct": "/nonexistent"})) is None


def test_the_meter_reads_this_process_cgroup_and_its_sums_match_its_span() -> None:
    import os

    meter = RequestCpuMeter.open(cgroup_of_pid(os.getpid()))
    if meter is None:
        pytest.skip("this process's cgroup CPU counters cannot be read here")
    try:
        shares = []
        for _ in range(50):
            key = meter.start()
            sum(i * i for i in range(20_000))  # some CPU of our own, in the cgroup
            shares.append(meter.end(key))
        span = meter.attribution.span()
        assert span is not None and all(s is not None for s in shares)
        total = sum(s.cpu_ns for s in shares if s is not None)
        assert math.isclose(total, span[1][0] - span[0][0], rel_tol=1e-9)
        # the kernel folds a running task's time into the counters at ticks and switches, so a share may
        # be 0 here (this process never sleeps between marks); the whole is there
        assert all(s is not None and s.cpu_ms >= 0 for s in shares) and total > 0
    finally:
        meter.close()
