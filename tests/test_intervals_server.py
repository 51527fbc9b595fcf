"""Percentile intervals and `[load.stop]` through the real load generator (`run_load`) against a stdlib
HTTP server whose service times are drawn from a known, seeded distribution. The server (`testing.known_server`)
serves one request at a time in arrival order (FIFO, on a fixed schedule): at concurrency 1 latencies
are independent draws; at concurrency c they queue, and each latency is the sum of c consecutive service
times (the dependence the intervals must count).

The truth, honestly: a service time is a sleep, and sleeps overshoot; the answer also crosses the loopback
and the client. So the true latency percentile is bracketed: from below by the percentile of the drawn
times (known exactly: lognormal, or by Monte Carlo the sum of c of them), from above by that plus c times
the 99th percentile of the extra time measured at concurrency 1 (latency minus the drawn service time the
server reports in its Server-Timing header). An interval covers the truth when it meets that bracket."""

from __future__ import annotations

import math
from collections.abc import Iterator
from statistics import NormalDist

import numpy as np
import pytest

from tui_profiler.load.client import run_load
from tui_profiler.load.inputs import InputSpec
from tui_profiler.load.patterns import LoadPattern, StopWhenStable
from tui_profiler.load.template import build_payload, default_template
from tui_profiler.stats import StopGoal, quantile
from tui_profiler.sweep.outcome import interval_columns
from tui_profiler.testing.known_server import known_server

MEDIAN_S = 0.02  # service times: lognormal, this median (large against the box's scheduling noise)
SIGMA = 0.5


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with known_server(f"lognormal:{MEDIAN_S}:{SIGMA}", seed=20) as base:
        yield base


@pytest.fixture(scope="module")
def narrow_server() -> Iterator[str]:
    with known_server(f"lognormal:{MEDIAN_S}:0.05", seed=21) as base:
        yield base


async def _cell(base: str, **pattern: object) -> list:  # type: ignore[type-arg]
    tpl = default_template()
    payload = build_payload(InputSpec(kind="tensor", base_size=(16,), dtype="float32"), tpl)
    given = {"warmup": 2, "arrival": "constant", "timeout_s": 30.0, **pattern}
    return await run_load(base, tpl, payload, LoadPattern(**given))  # type: ignore[arg-type]


def _true_quantile(q: float, c: int) -> float:
    if c == 1:
        return MEDIAN_S * math.exp(SIGMA * NormalDist().inv_cdf(q))
    rng = np.random.default_rng(99)
    return float(np.quantile(rng.lognormal(math.log(MEDIAN_S), SIGMA, (1_000_000, c)).sum(axis=1), q))


# -- coverage -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_intervals_cover_the_true_percentile_through_the_load_generator(server: str) -> None:
    """20 cells of 40 requests at concurrency 1, then 20 cells of 60 at concurrency 3 (queued), p50 and
    p90: 80 intervals. Tolerance from the binomial: at a true 95% the misses are Binomial(80, 0.05), mean
    4; 11 or more has probability < 0.3%. Observed on the 2-core dev VM (load average 4-12, other
    sessions' tests beside it): 2 misses of 80 (97.5%); the extra time's median 0.66 ms and p99 6.9 ms
    against service times of 20 ms; the c=3 cells' median dependence 2.3 (a FIFO queue of 3: ~2.3). About
    60 s: marked slow."""
    misses = checked = 0
    extra: list[float] = []
    dependence: list[float] = []
    for c, cells, n in ((1, 20, 40), (3, 20, 60)):
        for _ in range(cells):
            results = await _cell(server, concurrency=c, requests=n)
            timed = [r for r in results if not r.warmup]
            assert len(timed) == n and all(r.ok for r in timed)
            if c == 1:
                extra += [r.latency_s - r.decode_ms / 1000 for r in timed]  # type: ignore[operator]
            else:
                dependence.append(interval_columns(timed, stop_reason="requests")["latency_dependence"])
            row = interval_columns(timed, stop_reason=results.stop_reason)  # type: ignore[attr-defined]
            assert row["stop_reason"] == "requests" and row["timed_requests"] == n
            slack = c * (quantile(extra, 0.99) or 0.0)
            for q, name in ((0.5, "p50"), (0.9, "p90")):
                truth = _true_quantile(q, c)
                lo, hi = row[f"{name}_lo_s"], row[f"{name}_hi_s"]
                checked += 1
                misses += (lo is not None and lo > truth + slack) or (hi is not None and hi < truth)
    assert checked == 80
    assert misses < 11, (misses, quantile(extra, 0.99), dependence)
    assert 1.5 < float(np.median(dependence)) < 4.5, dependence  # the queue's dependence was seen


# -- stopping when sure -------------------------------------------------------------------------------------------


async def test_a_cell_with_load_stop_converges_on_a_narrow_distribution(narrow_server: str) -> None:
    goal = StopGoal("p50", rel_halfwidth=0.1, min_requests=20)
    results = await _cell(narrow_server, concurrency=1, requests=2000, stop_goals=(goal,))
    timed = [r for r in results if not r.warmup]
    assert results.stop_reason == "converged"  # type: ignore[attr-defined]
    assert 20 <= len(timed) < 2000
    row = interval_columns(timed, stop_reason=results.stop_reason)  # type: ignore[attr-defined]
    assert row["stop_reason"] == "converged" and row["timed_requests"] == len(timed)
    assert row["p50_lo_s"] is not None and row["p50_hi_s"] is not None


async def test_an_impossible_target_ends_at_max_requests(narrow_server: str) -> None:
    goal = StopGoal("p99", rel_halfwidth=1e-6, min_requests=20)
    results = await _cell(narrow_server, concurrency=2, requests=60, stop_goals=(goal,))
    assert results.stop_reason == "max_requests"  # type: ignore[attr-defined]
    assert sum(not r.warmup for r in results) == 60
    fixed = await _cell(narrow_server, concurrency=1, requests=10)
    assert fixed.stop_reason == "requests"  # type: ignore[attr-defined]
    timed = await _cell(narrow_server, concurrency=1, requests=None, duration_s=0.2, stop_goals=(goal,))
    assert timed.stop_reason == "max_duration"  # type: ignore[attr-defined]


async def test_load_stop_in_an_open_loop_and_over_several_processes(narrow_server: str) -> None:
    goal = StopGoal("p50", rel_halfwidth=0.1, min_requests=20)
    # 20/s against a one-at-a-time server of 20 ms: 40% busy, so a loaded box cannot push it into a queue
    # that grows (at 40/s, 80% busy, a busy box sometimes did, and the cell never converged)
    open_loop = await _cell(
        narrow_server, mode="open", rate=20.0, concurrency=4, requests=600, stop_goals=(goal,)
    )
    assert open_loop.stop_reason == "converged"  # type: ignore[attr-defined]
    assert sum(not r.warmup for r in open_loop) < 600
    split = await _cell(
        narrow_server, concurrency=2, processes=2, requests=3000,
        stop_when_stable=StopWhenStable(rel_halfwidth=0.1, min_requests=20),
    )  # fmt: skip
    assert split.stop_reason == "converged"  # type: ignore[attr-defined]
    assert sum(not r.warmup for r in split) < 3000
