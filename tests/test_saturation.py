"""The saturation judge (sweep/saturation.py), the trend test (stats.trend) and the host CPU readers, on
synthetic requests and CPU windows: pure, the fast tier. The live checks, where the kernel's own counters
decide, are in test_saturation_live.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tui_profiler.host import cpu_pressure_some_us, cpu_times
from tui_profiler.load.client import RequestResult
from tui_profiler.sample.contention import CpuWindow
from tui_profiler.session.schema import CELL_COLUMNS, SATURATION_COLUMNS, RequestStatus
from tui_profiler.stats import trend
from tui_profiler.sweep.saturation import (
    TREND_P,
    TREND_RISE,
    LoadShape,
    TargetCpu,
    not_measured,
    saturation_columns,
)

CLOSED = LoadShape()


def _req(t_send: float, latency: float, *, lag: float | None = None, ok: bool = True) -> RequestResult:
    """A timed request sent at `t_send` (actual), answered `latency` after its scheduled send (open loop:
    `lag` before `t_send`)."""
    start = t_send - (lag or 0.0)
    return RequestResult(
        timestamp_ms=0,
        t_send_s=t_send,
        t_recv_s=start + latency if ok else None,
        latency_s=latency if ok else None,
        status=200 if ok else None,
        ok=ok,
        outcome=RequestStatus.OK if ok else RequestStatus.ERROR,
        error="",
        warmup=False,
        worker=0,
        seq=0,
        scheduled_delay_s=lag,
    )


def _closed(latencies: list[float]) -> list[RequestResult]:
    """A closed loop at concurrency 1: each request sent when the previous answered."""
    out, t = [], 0.0
    for lat in latencies:
        out.append(_req(t, lat))
        t += lat
    return out


def _window(
    *,
    client: float = 0.1,
    allowed: float = 2.0,
    loop_busy: float | None = 0.1,
    host_busy: float | None = 1.0,
    host_cores: int = 2,
    psi: float | None = 1.0,
    affinity: tuple[int, ...] = (0, 1),
    watched: tuple[int, ...] | None = None,
) -> CpuWindow:
    return CpuWindow(
        wall_s=10.0,
        client_cpu_cores=client,
        client_cores_allowed=allowed,
        client_affinity=affinity,
        loop_busy=loop_busy,
        host_busy_cores=host_busy,
        host_cores=host_cores,
        host_core_ids=watched,
        cpu_pressure_some_pct=psi,
    )


STEADY = _closed([0.010] * 100)
TARGET = TargetCpu(used_cores=0.8, cap_cores=2.0)


# -- the trend ---------------------------------------------------------------------------------------------


def _flagged(values: np.ndarray) -> bool:
    t = trend(list(values))
    return t.p_rising is not None and t.rise is not None and t.p_rising < TREND_P and t.rise >= TREND_RISE


def test_steady_samples_are_not_a_trend_independent_or_not() -> None:
    """400 steady cells of 200 lognormal latencies (sigma 0.5), and 400 whose neighbours move together
    (an AR(1) of coefficient 0.8 in the log, as requests sharing a queue do): the judge's trend rule (p <
    0.001 and a rise of at least 25%) flagged 0 and 0 of them when written (seeds 0..399; at p < 0.01 with
    batches twice the dependence long it had flagged 3 and 10). The bound allows for a level of 0.1% plus
    the dependence the batches leave: P(Binomial(400, 0.005) > 6) is about 0.004."""
    iid = dependent = 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        iid += _flagged(rng.lognormal(np.log(0.01), 0.5, 200))
        z = np.empty(200)
        z[0] = rng.normal()
        for i in range(1, 200):
            z[i] = 0.8 * z[i - 1] + 0.6 * rng.normal()  # stationary: unit variance
        dependent += _flagged(np.exp(np.log(0.01) + 0.5 * z))
    assert iid <= 6 and dependent <= 6, (iid, dependent)


def test_a_latency_that_grows_by_arithmetic_is_a_trend() -> None:
    """10 ms + 0.1 ms per request over 200 requests, with lognormal noise (sigma 0.3): the line rises from
    10 to 30 ms, twice the median; flagged in each of 50 seeds."""
    for seed in range(50):
        rng = np.random.default_rng(seed)
        vals = (0.010 + 0.0001 * np.arange(200)) * rng.lognormal(0, 0.3, 200)
        t = trend(list(vals))
        assert _flagged(vals), t
        assert t.rise is not None and 0.8 < t.rise < 2.0  # the arithmetic: 20 ms over a ~20 ms median


def test_too_few_samples_have_no_trend() -> None:
    t = trend([0.01 * i for i in range(23)])
    assert t.batches == 0 and t.p_rising is None and t.rise is None


# -- the client --------------------------------------------------------------------------------------------


def test_a_comfortable_client_is_not_flagged() -> None:
    row = saturation_columns(STEADY, CLOSED, _window(), TARGET)
    assert row["saturation"] == "" and row["saturation_reason"] == ""
    assert row["client_cpu_util"] == pytest.approx(0.1)  # 0.1 cores of one event loop's core
    assert set(row) == set(SATURATION_COLUMNS)


@pytest.mark.parametrize(
    ("window", "words"),
    [
        (_window(client=0.95), "used 95% of its 1 core"),
        (_window(client=0.5, loop_busy=0.97), "busy or waiting for a CPU 97%"),
        (_window(client=0.95, allowed=1.0), "used 95% of its 1 core"),
    ],
)
def test_a_client_without_idle_time_is_flagged(window: CpuWindow, words: str) -> None:
    row = saturation_columns(STEADY, CLOSED, window, TARGET)
    assert row["saturation"] == "client" and words in row["saturation_reason"]


def test_several_client_processes_count_one_core_each() -> None:
    """`load.processes = 4` on 8 cores: 3.8 cores of client CPU is 95% of 4 event loops' worth."""
    shape = LoadShape(loops=4)
    row = saturation_columns(STEADY, shape, _window(client=3.8, allowed=8.0, host_cores=8), TARGET)
    assert row["client_cpu_util"] == pytest.approx(0.95) and "client" in row["saturation"]


def _open_loop(
    n: int, rate: float, *, lag: float, service: float, growing_lag: bool = False
) -> list[RequestResult]:
    out = []
    for i in range(n):
        sched = i / rate
        this_lag = lag * i / n if growing_lag else lag
        out.append(_req(sched + this_lag, this_lag + service, lag=this_lag))
    return out


def test_an_open_loop_late_with_connections_free_is_the_client() -> None:
    """100 rps, 1 ms answers over 32 connections (never more than one in flight), each sent 50 ms late:
    the limit is two gaps (20 ms)."""
    results = _open_loop(200, 100.0, lag=0.050, service=0.001)
    row = saturation_columns(results, LoadShape(True, 100.0, 32), _window(), TARGET)
    assert row["saturation"] == "client", row
    assert row["send_lag_p50_s"] == pytest.approx(0.050)
    assert "with a connection free" in row["saturation_reason"]


def test_an_open_loop_late_because_every_connection_is_busy_is_the_server() -> None:
    """One connection, a server that answers in 20 ms, arrivals every 10 ms: each arrival waits for the one
    connection, so its lag is the server's; the answers come at half the scheduled rate."""
    rate, service = 100.0, 0.020
    results, free_at = [], 0.0
    for i in range(200):
        sched = i / rate
        send = max(sched, free_at)
        free_at = send + service
        results.append(_req(send, free_at - sched, lag=send - sched))
    row = saturation_columns(results, LoadShape(True, rate, 1), _window(), TARGET)
    assert row["saturation"] == "server", row
    assert row["achieved_rate_rps"] == pytest.approx(50.0, rel=0.01)
    assert row["scheduled_rate_rps"] == pytest.approx(100.0)
    assert "answers at 50 rps against 100 scheduled" in row["saturation_reason"]


def test_an_open_loop_that_keeps_up_is_not_flagged() -> None:
    results = _open_loop(200, 100.0, lag=0.0005, service=0.005)
    row = saturation_columns(results, LoadShape(True, 100.0, 32), _window(), TARGET)
    assert row["saturation"] == "", row
    assert row["achieved_rate_rps"] == pytest.approx(100.0)


def test_a_client_that_falls_behind_is_not_also_called_a_slow_server() -> None:
    """The client's lag grows to 2 s over the cell while the server answers in 1 ms: latency from the
    scheduled send rises, but from the actual send it does not — `client` only."""
    results = _open_loop(400, 100.0, lag=2.0, service=0.001, growing_lag=True)
    row = saturation_columns(results, LoadShape(True, 100.0, 32), _window(loop_busy=0.99), TARGET)
    assert row["saturation"] == "client", row


# -- the server --------------------------------------------------------------------------------------------


def test_a_server_whose_service_time_grows_is_flagged() -> None:
    row = saturation_columns(_closed([0.010 + 0.0001 * i for i in range(200)]), CLOSED, _window(), TARGET)
    assert row["saturation"] == "server" and "latency rose" in row["saturation_reason"]
    assert row["latency_trend"] > TREND_RISE and row["latency_trend_p"] < TREND_P


def test_few_answers_leave_the_trend_unjudged() -> None:
    row = saturation_columns(_closed([0.01] * 12), CLOSED, _window(), TARGET)
    assert (
        row["latency_trend"] is None
        and "latency trend: 12 answers, at least 24 needed" in row["saturation_not_judged"]
    )


# -- the host ----------------------------------------------------------------------------------------------


def test_other_processes_on_a_full_host_are_flagged() -> None:
    """2 cores all busy: the target 0.8, the client 0.1, so 1.1 cores went to others."""
    row = saturation_columns(STEADY, CLOSED, _window(host_busy=2.0), TARGET)
    assert row["saturation"] == "host", row
    assert row["host_other_cpu_cores"] == pytest.approx(1.1)
    assert "could not get its cores" in row["saturation_reason"] and "cap 2" in row["saturation_reason"]


def test_cpu_pressure_flags_a_host_with_idle_time_left() -> None:
    row = saturation_columns(STEADY, CLOSED, _window(host_busy=1.5, psi=40.0), TARGET)
    assert row["saturation"] == "host" and "CPU pressure 40%" in row["saturation_reason"]


@pytest.mark.parametrize(
    "window",
    [
        _window(host_busy=1.0),  # 0.1 cores of others, 1 core idle
        _window(host_busy=1.5, psi=5.0),  # others took 0.6, but 0.5 idle and little waiting
        _window(host_busy=0.85, psi=None),  # no PSI: the idle condition alone
    ],
)
def test_a_host_with_room_is_not_flagged(window: CpuWindow) -> None:
    assert saturation_columns(STEADY, CLOSED, window, TARGET)["saturation"] == ""


def test_a_client_pinned_elsewhere_is_not_counted_on_the_targets_cores() -> None:
    """The target pinned to core 1, the client to core 0: the client's 0.9 cores are not on core 1, so the
    0.1 cores beside the target's 0.8 on it are others' (below the line)."""
    window = _window(client=0.9, host_busy=0.9, host_cores=1, affinity=(0,), watched=(1,), loop_busy=0.5)
    row = saturation_columns(STEADY, CLOSED, window, TargetCpu(0.8, 1.0))
    assert row["host_other_cpu_cores"] == pytest.approx(0.1)


def test_without_the_targets_cpu_the_host_is_not_judged() -> None:
    row = saturation_columns(
        STEADY, CLOSED, _window(host_busy=2.0), TargetCpu(None, None, "--url: not measured")
    )
    assert row["saturation"] == "" and row["host_other_cpu_cores"] is None
    assert row["host_busy_cpu_cores"] == 2.0 and "host: --url: not measured" in row["saturation_not_judged"]


def test_without_a_window_nothing_cpu_is_judged() -> None:
    row = saturation_columns(STEADY, CLOSED, None, TARGET)
    assert row["client_cpu_util"] is None and "client CPU: not measured" in row["saturation_not_judged"]


def test_several_flags_are_joined() -> None:
    results = _closed([0.010 + 0.0001 * i for i in range(200)])
    row = saturation_columns(results, CLOSED, _window(client=0.95, host_busy=2.0), TargetCpu(0.5, 2.0))
    assert row["saturation"] == "client+server+host"
    assert row["saturation_reason"].count(";") == 2


def test_a_cell_that_never_ran_has_empty_columns_in_the_schema() -> None:
    row = not_measured("the load did not run")
    assert list(row) == list(SATURATION_COLUMNS)
    assert row["saturation"] == "" and row["client_cpu_util"] is None
    assert [c for c in SATURATION_COLUMNS if c not in CELL_COLUMNS] == []


# -- the host's CPU readers --------------------------------------------------------------------------------

PROC_STAT = """cpu  300 0 100 500 10 0 0 5 0 0
cpu0 100 0 50 300 5 0 0 0 0 0
cpu1 200 0 50 200 5 0 0 5 0 0
intr 1 2 3
"""


def test_cpu_times_sum_the_cores_asked_for(tmp_path: Path) -> None:
    f = tmp_path / "stat"
    f.write_text(PROC_STAT)
    every = cpu_times(None, f)
    assert every is not None and (every.busy, every.total, every.cores) == (405, 915, 2)
    one = cpu_times([1], f)
    assert one is not None and (one.busy, one.total, one.cores) == (255, 460, 1)  # steal is busy
    assert cpu_times([7], f) is None and cpu_times(None, tmp_path / "missing") is None


def test_cpu_pressure_reads_some_total_or_none(tmp_path: Path) -> None:
    f = tmp_path / "cpu"
    f.write_text(
        "some avg10=1.00 avg60=0.50 avg300=0.10 total=123456\nfull avg10=0 avg60=0 avg300=0 total=0\n"
    )
    assert cpu_pressure_some_us(f) == 123456
    assert cpu_pressure_some_us(tmp_path / "missing") is None


def test_this_box_reads_its_own_cpu_times() -> None:
    """Here: /proc/stat is always there; /proc/pressure/cpu where the kernel has PSI (this box: cgroup v1,
    PSI on)."""
    now = cpu_times()
    assert now is not None and now.cores >= 1 and now.total > now.busy >= 0
