"""Percentile intervals, the log-bucketed histogram and the stop judge (tui_profiler.stats) against known
answers: simulated samples whose true percentiles are known, no timing.

Coverage is counted over many simulated cells; the tolerance is the binomial's (3 standard deviations of a
coverage estimate over `REPS` cells at the nominal 95%). What docs/statistics.md reports was measured with
2,000 cells per case (tests/test_stats_intervals.py runs fewer to stay in the fast tier)."""

from __future__ import annotations

import math
import tracemalloc
import zlib
from statistics import NormalDist

import numpy as np
import pytest

from tui_profiler.stats import (
    BatchedHistogram,
    LogHistogram,
    StopGoal,
    StopJudge,
    autocorrelation_time,
    indicator_dependence,
    order_statistic_ranks,
    quantile_interval,
    samples_for_bounded,
    stop_metric,
)

REPS = 400
SIGMA = 0.5  # lognormal(0, SIGMA) service times
_SD = math.sqrt(0.95 * 0.05 / REPS)


def _iid(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.lognormal(0, SIGMA, n)


def _queue(n: int, rng: np.random.Generator, c: int = 4) -> np.ndarray:
    """A closed loop of c workers on a server that serves one at a time (FIFO): each latency is the sum of
    c consecutive service times, so neighbours share c - 1 of them."""
    s = rng.lognormal(0, SIGMA, n + c - 1)
    return np.convolve(s, np.ones(c), "valid")


def _truth(kind: str, q: float) -> float:
    if kind == "iid":
        return math.exp(SIGMA * NormalDist().inv_cdf(q))
    rng = np.random.default_rng(12345)
    return float(np.quantile(rng.lognormal(0, SIGMA, (1_000_000, 4)).sum(axis=1), q))


@pytest.mark.parametrize(
    ("kind", "n", "q"),
    [("iid", 200, 0.5), ("iid", 200, 0.9), ("queue", 200, 0.5), ("queue", 200, 0.9), ("queue", 50, 0.5),
     ("queue", 1000, 0.99)],
)  # fmt: skip
def test_interval_covers_the_true_percentile_at_its_nominal_rate(kind: str, n: int, q: float) -> None:
    """Observed with 2,000 cells (docs/statistics.md): iid n=200 p50 96.8%, p90 97.6%; c=4 queue n=200
    p50 96.4%, p90 97.6%, n=50 p50 95.3%, n=1000 p99 99.1% (one-sided: p99 unbounded above there)."""
    rng = np.random.default_rng(zlib.crc32(f"{kind}{n}{q}".encode()))
    truth = _truth(kind, q)
    gen = _iid if kind == "iid" else _queue
    covered = 0
    for _ in range(REPS):
        iv = quantile_interval(gen(n, rng).tolist(), q)
        covered += (iv.lo is None or iv.lo <= truth) and (iv.hi is None or truth <= iv.hi)
    coverage = covered / REPS
    assert coverage >= 0.95 - 3 * _SD, coverage  # never well below nominal
    assert coverage <= 0.998, coverage  # and not an interval so wide it says nothing


def test_dependence_is_found_in_a_queue_and_not_in_independent_samples() -> None:
    """The median indicator's autocorrelation time: ~1 for iid, ~3 for c=4 (sum of 4 neighbours; the
    indicator of a Gaussian-like sum with lag correlations 3/4, 1/2, 1/4 has tau ~3.1)."""
    rng = np.random.default_rng(3)
    iid = [indicator_dependence(_iid(2000, rng).tolist()) for _ in range(20)]
    queue = [indicator_dependence(_queue(2000, rng).tolist()) for _ in range(20)]
    assert 1.0 <= float(np.median(iid)) < 1.3
    assert 2.5 < float(np.median(queue)) < 3.8
    assert autocorrelation_time([1.0] * 10) == 1.0  # a constant: no information, no inflation


def test_unbounded_sides_are_none_and_say_how_many_requests_a_bound_needs() -> None:
    assert samples_for_bounded(0.99) == 368
    assert order_statistic_ranks(367, 0.99)[1] is None and order_statistic_ranks(368, 0.99)[1] == 368
    iv = quantile_interval([float(i) for i in range(100)], 0.99, dependence=1.0)
    assert iv.lo is not None and iv.hi is None and not iv.bounded and iv.rel_halfwidth() is None
    assert iv.n_needed == 368
    dependent = quantile_interval([float(i) for i in range(100)], 0.99, dependence=2.5)
    assert dependent.n_needed == 920 and dependent.n_eff == 40
    bounded = quantile_interval([float(i) for i in range(400)], 0.99, dependence=1.0)
    assert bounded.bounded and bounded.n_needed is None
    empty = quantile_interval([], 0.5)
    assert empty.estimate is None and empty.lo is None and empty.hi is None and empty.n == 0


def test_histogram_quantiles_are_within_the_stated_relative_error() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.lognormal(-4, 1.5, 50_000), np.zeros(500)])
    h = LogHistogram()
    h.add_many(values[:30_000])
    for v in values[30_000:].tolist():
        h.add(v)
    for q in (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999):
        exact = float(np.quantile(values, q))
        got = h.quantile(q)
        assert got is not None
        assert abs(got - exact) <= LogHistogram.REL_ERROR * exact + LogHistogram.ZERO_BELOW, (q, got, exact)
    assert len(h.counts) < 1_000  # the range, not the count, sets its size
    assert LogHistogram().quantile(0.5) is None


def _pool(requests: int, gaps_per_request: int, seed: int = 0) -> BatchedHistogram:
    """The path the load generator takes: one answer's gaps at a time into the cell's pool."""
    rng = np.random.default_rng(seed)
    pool = BatchedHistogram()
    for _ in range(requests):
        speed = rng.lognormal(0, 0.3)
        pool.add_group(speed * rng.lognormal(-3, 0.3, gaps_per_request))
    return pool


def test_pooled_gaps_take_memory_that_does_not_grow_with_the_gaps() -> None:
    """1e5 and 1e6 gaps (the same 1,000-gap answers, 100 vs 1,000 of them) through `add_group`: the pool
    kept afterwards is the same size within 2x (a list of floats would be 10x: ~8 MB more)."""
    sizes = []
    for requests in (100, 1_000):
        tracemalloc.start()
        pool = _pool(requests, 1_000)
        kept, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert pool.n == requests * 1_000
        sizes.append(kept)
    assert sizes[1] < 2 * sizes[0] + 100_000, sizes
    assert sizes[1] < 2_000_000, sizes


def test_pooled_gaps_merge_across_processes_and_give_an_interval() -> None:
    whole = _pool(400, 50, seed=1)
    a, b = _pool(200, 50, seed=2), _pool(200, 50, seed=3)
    a.merge(b)
    assert a.n == 400 * 50 and len(a.batches) <= BatchedHistogram.MAX_BATCHES
    for pool in (whole, a):
        iv = pool.interval(0.5)
        assert iv.bounded and iv.lo is not None and iv.hi is not None and iv.estimate is not None
        assert iv.lo < iv.estimate < iv.hi and iv.n_needed is None
    few = _pool(3, 5).interval(0.99)
    assert not few.bounded and few.n_needed is not None and few.n_needed > 15


def test_stop_judge_converges_on_a_narrow_distribution_and_not_on_an_impossible_target() -> None:
    rng = np.random.default_rng(7)
    judge = StopJudge([StopGoal("p99", 0.05, min_requests=50), StopGoal("mean", 0.02)])
    n = 0
    for x in rng.normal(1.0, 0.01, 5000).tolist():
        n += 1
        if judge.add(x):
            break
    assert judge.converged and 368 <= n < 1000, n  # p99 needs 368 before it has an upper bound
    assert all(w is not None and w <= 0.05 for w in judge.halfwidths.values())
    hopeless = StopJudge([StopGoal("p50", 1e-6)])
    assert not any(hopeless.add(x) for x in rng.lognormal(0, 1, 2000).tolist())
    ttft = StopJudge([StopGoal("ttft_p50", 0.05, min_requests=10)])
    assert not ttft.add(1.0, None, None)  # a value not measured is not a sample
    assert ttft.series["ttft"].ordered == []


def test_stop_metrics_parse() -> None:
    assert stop_metric("p99") == ("latency", 0.99)
    assert stop_metric("mean") == ("latency", None)
    assert stop_metric("ttft_p50") == ("ttft", 0.5)
    assert stop_metric("tpot_p90") == ("tpot", 0.9)
    with pytest.raises(ValueError, match="stop metric"):
        stop_metric("p42")
