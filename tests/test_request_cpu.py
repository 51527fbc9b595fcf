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


# ------------------------------------------------------------------ the cell's tail columns (sweep.outcome)


def _result(latency: float, cpu_ms: float | None, periods: float | None, queue_ms: float | None = None):  # type: ignore[no-untyped-def]
    from tui_profiler.load.client import RequestResult
    from tui_profiler.session.schema import RequestStatus

    return RequestResult(
        timestamp_ms=0, t_send_s=0.0, t_recv_s=latency, latency_s=latency, status=200, ok=True,
        outcome=RequestStatus.OK, error="", warmup=False, worker=0, seq=0, queue_ms=queue_ms,
        cpu_ms=cpu_ms, throttled_ms=None if periods is None else periods * 10.0, throttled_periods=periods,
    )  # fmt: skip


def _setting(cpus: float | None):  # type: ignore[no-untyped-def]
    from tui_profiler.plan import Cell
    from tui_profiler.runtime.base import EnforcedCaps
    from tui_profiler.sweep.outcome import CellSetting

    cell = Cell(0, cpus, None, 0, None, None, 1, None, 0, 0)
    return CellSetting(cell, "m", 1, EnforcedCaps(), 0)


def test_the_tail_of_a_throttled_cell_is_said_in_words() -> None:
    from tui_profiler.sweep.outcome import tail_columns

    fast = [_result(0.020, 8.0, 0) for _ in range(90)]
    slow = [_result(0.070, 9.0, 1) for _ in range(9)] + [_result(0.069, 9.0, 0)]
    row = tail_columns(_setting(0.5), fast + slow)
    assert row["tail_throttled_share"] == pytest.approx(0.9)
    assert row["cpu_ms_p50"] == pytest.approx(8.0)
    assert row["cpu_ms_mean"] == pytest.approx((90 * 8 + 10 * 9) / 100)
    assert row["p99_throttled_s"] == pytest.approx(0.070)
    assert row["p99_unthrottled_s"] is not None and row["p99_unthrottled_s"] <= 0.069
    assert "9 of the 10 slowest requests were throttled — the 0.5-CPU quota binds" in row["tail_verdict"]
    assert row["tail_verdict"].startswith("p99 +")


def test_an_unthrottled_cell_says_so_and_a_cell_without_counters_says_nothing() -> None:
    from tui_profiler.sweep.outcome import tail_columns

    row = tail_columns(_setting(None), [_result(0.01 + i * 1e-4, 5.0, 0, queue_ms=0.0) for i in range(50)])
    assert row["tail_throttled_share"] == 0 and row["p99_throttled_s"] is None
    assert "none of the 5 slowest requests was throttled — not the CPU quota" in row["tail_verdict"]
    assert row["queue_ms_mean"] == 0.0
    empty = tail_columns(_setting(2), [_result(0.01, None, None) for _ in range(5)])
    assert empty["tail_verdict"] is None and empty["cpu_ms_p50"] is None
    assert empty["tail_throttled_share"] is None and empty["server_metrics"] is None


# ------------------------------------------------------------------ fit --target cpu (analysis.fit)


def test_fit_models_cpu_seconds_per_request_against_input_size() -> None:
    """Per-request rows whose cpu_ms grows linearly with pixels (CPU time does not shrink with cores):
    `--target cpu` models the mean CPU-seconds per request, not the latency."""
    import numpy as np
    import pandas as pd

    from tui_profiler.analysis.fit import build_cells, fit_frame
    from tui_profiler.analysis.importers import TIDY_COLUMNS, fit_rows

    rng = np.random.default_rng(0)
    rows = []
    for cpus in (1.0, 2.0, 4.0):
        for pixels in (10_000.0, 40_000.0, 90_000.0, 160_000.0):
            for _ in range(5):
                cpu_s = 0.005 + 1e-7 * pixels
                rows.append({"model": "m", "task": "pixels", "gpu_mode": "off", "cpu_cores": cpus,
                             "mem_cap_gb": 4.0, "pixels": pixels, "latency_s": cpu_s / cpus + 0.001,
                             "cpu_ms": cpu_s * 1000 * float(np.exp(rng.normal(0, 0.01))),
                             "warmup": False, "status": "ok", "row_kind": "request", "source": "s"})  # fmt: skip
    df = pd.DataFrame(rows)
    for col in TIDY_COLUMNS:
        if col not in df:
            df[col] = np.nan
    cells, _ = build_cells(fit_rows(df[TIDY_COLUMNS]), "cpu")
    one = cells[(cells["cpu_cores"] == 2.0) & (cells["size"] == 90_000.0)]["y"].iloc[0]
    assert one == pytest.approx(0.014, rel=0.03)  # CPU-seconds, whatever the cores
    report = fit_frame(df[TIDY_COLUMNS], target="cpu")
    assert report.target == "cpu" and report.groups


def test_recommend_reports_the_cores_one_request_per_second_takes_where_it_was_measured() -> None:
    """`recommend`'s cores per request/s: the chosen configuration's measured CPU-seconds per request at
    the measured size nearest the one asked (the median of its requests' `cpu_ms`; a cells.csv row's
    `cpu_ms_mean` where it has no requests), None where the CPU per request was not read."""
    import pandas as pd

    from tui_profiler.analysis.recommend import Candidate, cores_per_rps

    rows = pd.DataFrame(
        {
            "cpu_cores": [1.0, 1.0, 1.0, 2.0, 1.0],
            "gpu_mode": ["off"] * 5,
            "pixels": [100.0, 100.0, 400.0, 100.0, 400.0],
            "cpu_ms": [20.0, 30.0, 80.0, 11.0, None],
            "cpu_ms_mean": [None, None, None, None, 90.0],
        }
    )
    best = Candidate("off", 1.0, 2.0, 0.05, 1.25, True, False)
    assert cores_per_rps(rows, best, "pixels", 120.0) == 0.025  # median of 20 and 30 ms at 100 pixels
    assert cores_per_rps(rows, best, "pixels", 390.0) == 0.085  # 80 ms (a request) and 90 ms (a cell)
    assert cores_per_rps(rows.drop(columns=["cpu_ms", "cpu_ms_mean"]), best, "pixels", 120.0) is None
    assert cores_per_rps(rows, Candidate("off", 4.0, 8.0, 0.05, 5.0, True, False), "pixels", 120.0) is None
