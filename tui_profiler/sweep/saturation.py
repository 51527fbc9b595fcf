"""Saturation and interference, never silent: whether a cell's numbers are the target's at all. A pure judge
(no I/O) of what the cell measured — its requests, the resource sampler's summary and the load's
`CpuWindow` (`sample.contention`) — into the cells.csv columns of `SATURATION_COLUMNS`.

Three flags, joined by "+" in `saturation` (docs/sessions.md, "Saturation"):
- `client`: the load generator could not keep up, so the numbers are partly the client's. Its CPU use
  reached CLIENT_CPU_UTIL of what it may use, or its event loop was on a CPU or waiting for one
  LOOP_BUSY of the cell (no idle moment: it could not have sent or read any sooner), or (open loop) the
  arrivals that found a connection free still left a median CLIENT_LAG_GAPS arrival gaps (at least
  CLIENT_LAG_FLOOR_S) after their scheduled time.
- `server`: overloaded, no steady-state latency. Latency keeps rising through the cell (Mann-Kendall on
  batch means, `stats.trend`: p below TREND_P, and a rise across the cell of at least TREND_RISE of the
  typical latency), or, open loop with the client fine, the answers came at less than RATE_SHORTFALL of the
  scheduled rate by more than the latency's own spread can explain.
- `host`: other processes took the cores the target was allowed. Over the cores the target may run on,
  what neither the target (its cgroup's CPU) nor the client used was at least HOST_OTHER_MIN_CORES, while
  those cores had less than HOST_IDLE_MAX_CORES idle or the kernel's CPU pressure ("some") was at least
  HOST_PSI_SOME_PCT: the cap was enforced, but the target could not get it.

What could not be judged, and why, is in `saturation_not_judged` (e.g. the target's CPU with `--url`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tui_profiler.session.schema import SATURATION_COLUMNS
from tui_profiler.stats import TREND_MIN_SAMPLES, percentile, trend

if TYPE_CHECKING:
    from tui_profiler.load.client import RequestResult
    from tui_profiler.sample.contention import CpuWindow

# -- thresholds (docs/sessions.md, "Saturation", says why each) ----------------------------------------------
CLIENT_CPU_UTIL = 0.9  # the client's CPU over what it may use (its cores, and one core per event loop)
LOOP_BUSY = 0.9  # the event loop thread on a CPU or waiting for one, share of the cell
CLIENT_LAG_GAPS = 2.0  # open loop: median send lag, in scheduled arrival gaps, with a connection free ...
CLIENT_LAG_FLOOR_S = 0.005  # ... and at least this (asyncio's timers and a busy box's wake-ups)
CLIENT_LAG_MIN_ARRIVALS = 10  # arrivals that found a connection free, needed to judge the lag
TREND_P = 0.001  # one-sided Mann-Kendall p-value of rising batch means
TREND_RISE = 0.25  # the Theil-Sen rise across the cell, over the median batch mean
RATE_SHORTFALL = 0.9  # open loop: answers per second over the scheduled rate
RATE_SPREAD = 3.0  # ... and the missing time beyond this many (p90 - p50) of the first half's latency
RATE_MIN_ANSWERS = 20
HOST_OTHER_MIN_CORES = 0.25  # others' CPU on the target's cores
HOST_IDLE_MAX_CORES = 0.25  # ... while those cores had less than this idle
HOST_PSI_SOME_PCT = 25.0  # ... or some task waited for a CPU this share of the cell


@dataclass(frozen=True, slots=True)
class LoadShape:
    """How the cell's load was sent: open loop at `rate` over `connections`, or closed; `loops`: the client
    event loops driving it (`load.processes` client processes, else 1)."""

    open_loop: bool = False
    rate: float | None = None
    connections: int | None = None
    loops: int = 1


@dataclass(frozen=True, slots=True)
class TargetCpu:
    """The target's CPU over the cell: `used_cores` (its cgroup's mean; None: not measured, e.g. `--url`),
    `cap_cores` (its enforced CPU cap; None: uncapped)."""

    used_cores: float | None = None
    cap_cores: float | None = None
    why_not: str = ""  # why `used_cores` is None


def not_measured(why: str = "") -> dict[str, Any]:
    """The columns of a cell whose load never ran."""
    row: dict[str, Any] = dict.fromkeys(SATURATION_COLUMNS)
    row.update(saturation="", saturation_reason="", saturation_not_judged=why)
    return row


def saturation_columns(
    results: Sequence[RequestResult],
    shape: LoadShape,
    window: CpuWindow | None,
    target: TargetCpu,
) -> dict[str, Any]:
    """The cell's SATURATION_COLUMNS from its results (warm-up included; it is left out here), how its load
    was sent, the load's CPU window (None: not measured) and the target's CPU."""
    timed = [r for r in results if not r.warmup]
    row = not_measured()
    flags: list[str] = []
    reasons: list[str] = []
    unjudged: list[str] = []

    # the client
    client_flag = False
    if window is not None:
        capacity = min(window.client_cores_allowed, float(max(1, shape.loops)))
        util = window.client_cpu_cores / capacity if capacity > 0 else None
        row.update(
            client_cpu_cores=window.client_cpu_cores, client_cpu_util=util, client_loop_busy=window.loop_busy
        )
        if util is not None and util >= CLIENT_CPU_UTIL:
            client_flag = True
            reasons.append(f"client used {util:.0%} of its {capacity:g} core(s)")
        if window.loop_busy is not None and window.loop_busy >= LOOP_BUSY:
            client_flag = True
            reasons.append(f"client event loop busy or waiting for a CPU {window.loop_busy:.0%} of the cell")
    else:
        unjudged.append("client CPU: not measured")
    open_facts = _open_loop(timed, shape) if shape.open_loop else None
    if open_facts is not None:
        row.update(
            send_lag_p50_s=open_facts.lag_p50,
            send_lag_p99_s=open_facts.lag_p99,
            achieved_rate_rps=open_facts.achieved_rps,
            scheduled_rate_rps=open_facts.scheduled_rps,
        )
        free_lag = open_facts.free_lag_p50
        if free_lag is not None and open_facts.scheduled_rps:
            limit = max(CLIENT_LAG_GAPS / open_facts.scheduled_rps, CLIENT_LAG_FLOOR_S)
            if free_lag > limit:
                client_flag = True
                reasons.append(
                    f"client sent {free_lag * 1e3:.1f} ms late (median) with a connection free "
                    f"(limit {limit * 1e3:.1f} ms)"
                )
    if client_flag:
        flags.append("client")

    # the server
    server_reasons: list[str] = []
    series = _latency_series(timed, subtract_lag=client_flag and shape.open_loop)
    tr = trend(series)
    row.update(latency_trend=tr.rise, latency_trend_p=tr.p_rising)
    if tr.batches == 0:
        unjudged.append(f"latency trend: {tr.n} answers, at least {TREND_MIN_SAMPLES} needed")
    elif tr.p_rising is not None and tr.rise is not None and tr.p_rising < TREND_P and tr.rise >= TREND_RISE:
        server_reasons.append(f"latency rose {tr.rise:+.0%} through the cell (trend p={tr.p_rising:.1g})")
    if open_facts is not None and open_facts.shortfall and not client_flag:
        server_reasons.append(
            f"answers at {open_facts.achieved_rps:.3g} rps against {open_facts.scheduled_rps:.3g} scheduled"
        )
    if server_reasons:
        flags.append("server")
        reasons.extend(server_reasons)

    # the host
    host_reason, host_unjudged = _host(window, target, row)
    if host_reason:
        flags.append("host")
        reasons.append(host_reason)
    if host_unjudged:
        unjudged.append(host_unjudged)

    row.update(
        saturation="+".join(flags),
        saturation_reason="; ".join(reasons),
        saturation_not_judged="; ".join(unjudged),
    )
    return row


def _latency_series(timed: Sequence[RequestResult], *, subtract_lag: bool) -> list[float]:
    """The answered requests' latencies in the order they were sent; with `subtract_lag`, counted from the
    actual send (a client that fell behind makes the scheduled-send latency rise on its own)."""
    answered = sorted((r for r in timed if r.ok and r.latency_s is not None), key=lambda r: r.t_send_s)
    out = []
    for r in answered:
        assert r.latency_s is not None
        lag = (r.scheduled_delay_s or 0.0) if subtract_lag else 0.0
        out.append(r.latency_s - lag)
    return out


@dataclass(frozen=True, slots=True)
class _OpenLoop:
    lag_p50: float | None
    lag_p99: float | None
    free_lag_p50: float | None  # the lag of arrivals that found a connection free (None: too few)
    achieved_rps: float | None
    scheduled_rps: float | None
    shortfall: bool  # answers fell short of the schedule beyond the latency's spread


def _open_loop(timed: Sequence[RequestResult], shape: LoadShape) -> _OpenLoop:
    """An open loop's send lag, its lag where a connection was free, and its answer rate against the
    schedule it drew (Poisson arrivals vary; comparing with the realised schedule takes that out)."""
    sent = [r for r in timed if r.scheduled_delay_s is not None]
    lags = [r.scheduled_delay_s for r in sent if r.scheduled_delay_s is not None]
    sched = sorted(r.t_send_s - (r.scheduled_delay_s or 0.0) for r in timed)
    scheduled_rps = (
        (len(sched) - 1) / (sched[-1] - sched[0]) if len(sched) > 1 and sched[-1] > sched[0] else None
    )
    # in flight at a moment: sent by then and not yet answered (requests that never answered are left out)
    done = [r for r in sent if r.t_recv_s is not None]
    sends = sorted(r.t_send_s for r in done)
    recvs = sorted(r.t_recv_s for r in done if r.t_recv_s is not None)
    free: list[float] = []
    for r in sent:
        assert r.scheduled_delay_s is not None
        t = r.t_send_s - r.scheduled_delay_s
        in_flight = bisect.bisect_right(sends, t) - bisect.bisect_right(recvs, t)
        if shape.connections is None or in_flight < shape.connections:
            free.append(r.scheduled_delay_s)
    free_p50 = percentile(free, 50) if len(free) >= CLIENT_LAG_MIN_ARRIVALS else None
    ok = sorted((r for r in timed if r.ok and r.t_recv_s is not None), key=lambda r: r.t_send_s)
    achieved = shortfall = None
    if len(ok) >= 2:
        answers = sorted(r.t_recv_s for r in ok if r.t_recv_s is not None)
        span = answers[-1] - answers[0]
        achieved = (len(ok) - 1) / span if span > 0 else None
    if achieved is not None and scheduled_rps and len(ok) >= RATE_MIN_ANSWERS:
        # the time the answers took beyond the schedule's, against how much the latency varies anyway
        missing = (len(ok) - 1) / achieved - (len(ok) - 1) / scheduled_rps
        first = [r.latency_s for r in ok[: len(ok) // 2] if r.latency_s is not None]
        p50, p90 = percentile(first, 50), percentile(first, 90)
        spread = (p90 - p50) if p50 is not None and p90 is not None else 0.0
        shortfall = achieved < RATE_SHORTFALL * scheduled_rps and missing > RATE_SPREAD * spread
    return _OpenLoop(
        lag_p50=percentile(lags, 50),
        lag_p99=percentile(lags, 99),
        free_lag_p50=free_p50,
        achieved_rps=achieved,
        scheduled_rps=scheduled_rps,
        shortfall=bool(shortfall),
    )


def _host(window: CpuWindow | None, target: TargetCpu, row: dict[str, Any]) -> tuple[str, str]:
    """(why the cell is flagged `host`, or "", what kept it from being judged, or ""); fills the host
    columns of `row`."""
    if window is None or window.host_busy_cores is None or window.host_cores is None:
        return "", "host: /proc/stat not read"
    busy, cores = window.host_busy_cores, window.host_cores
    row.update(host_busy_cpu_cores=busy, cpu_pressure_some_pct=window.cpu_pressure_some_pct)
    if target.used_cores is None:
        return "", f"host: {target.why_not or 'the target CPU was not measured'}"
    # the client's CPU lands on the watched cores when it may run there (all of it: an upper bound)
    watched = set(window.host_core_ids) if window.host_core_ids is not None else None
    client_there = watched is None or bool(watched & set(window.client_affinity))
    other = busy - target.used_cores - (window.client_cpu_cores if client_there else 0.0)
    other = max(other, 0.0)
    row["host_other_cpu_cores"] = other
    idle = cores - busy
    psi = window.cpu_pressure_some_pct
    if other < HOST_OTHER_MIN_CORES:
        return "", ""
    if idle < HOST_IDLE_MAX_CORES or (psi is not None and psi >= HOST_PSI_SOME_PCT):
        cap = f"{target.cap_cores:g}" if target.cap_cores is not None else "uncapped"
        pressure = f", CPU pressure {psi:.0f}%" if psi is not None else ""
        return (
            f"other processes used {other:.2f} of {cores} core(s), {max(idle, 0.0):.2f} idle{pressure}: "
            f"the target (cap {cap}) could not get its cores"
        ), ""
    return "", ""
