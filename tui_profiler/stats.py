"""Summary statistics of latency samples: mean, std, quantiles, 95% confidence intervals. The package's one
quantile: every percentile it computes or shows (cells.csv, the TUI, the headless progress, the benchmarks)
comes from `quantile_sorted`.

Quantiles use linear interpolation between order statistics (numpy's default method, Hyndman & Fan type 7),
so p50 of [1, 2] is 1.5; the arithmetic is numpy's own, so results equal `numpy.percentile` to the bit.
The CI of the mean uses Student's t (exact for normal data; the usual choice for small n); a bootstrap CI
is available for skewed data. With fewer than two samples there is no CI (None), never a zero-width one.
"""

from __future__ import annotations

import bisect
import functools
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    mean: float | None
    std: float | None  # sample standard deviation (ddof=1)
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    min: float | None
    max: float | None
    ci95_low: float | None
    ci95_high: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def quantile_sorted(sorted_values: Sequence[float], q: float) -> float:
    """The `q` quantile (0 <= q <= 1) of values already sorted ascending, for callers that sort once and ask
    several quantiles (the TUI's redraw, a cell summary). Linear interpolation between the order statistics
    around position (n - 1) * q, computed as numpy does (from the upper neighbour when the weight is >= 0.5),
    so it equals `numpy.quantile(values, q)` exactly. Raises IndexError on an empty sequence."""
    n = len(sorted_values)
    if n == 0:
        raise IndexError("quantile of no values")
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    weight = pos - lo
    a, b = float(sorted_values[lo]), float(sorted_values[hi])
    diff = b - a
    return b - diff * (1 - weight) if weight >= 0.5 else a + diff * weight


def quantile(values: Iterable[float], q: float) -> float | None:
    """The `q` quantile (0 <= q <= 1) of `values` in any order (see `quantile_sorted`); None for none."""
    ordered = sorted(float(v) for v in values)
    return quantile_sorted(ordered, q) if ordered else None


def median(values: Iterable[float]) -> float:
    """The median (`quantile_sorted` at 0.5: the mean of the middle two of an even count). Raises
    IndexError on no values, like an empty list's index."""
    return quantile_sorted(sorted(float(v) for v in values), 0.5)


def percentile(values: Iterable[float], p: float) -> float | None:
    """The `p` percentile (0 <= p <= 100) of `values`: `quantile(values, p / 100)`; None for none."""
    return quantile(values, p / 100)


# Student's t 0.975 quantiles (two-sided 95%) for df = 1..30, to 6 decimals (scipy.stats.t.ppf).
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
    2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
    2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip
_Z975 = 1.959963984540054


def t_quantile_975(df: float) -> float:
    """Student's t 0.975 quantile (the half-width factor of a 95% CI), without scipy: importing
    scipy.stats costs ~1.6 s per process, paid inside the first cell of a sweep. A table up to 30
    degrees of freedom, then the Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5; error < 1e-7)."""
    if df < 1:
        return math.inf
    if df <= len(_T975) and float(df).is_integer():
        return _T975[int(df) - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def t_ci95(values: Sequence[float]) -> tuple[float, float] | None:
    """95% CI of the mean by Student's t; None with fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    sem = float(arr.std(ddof=1)) / math.sqrt(n)
    half = t_quantile_975(n - 1) * sem
    return mean - half, mean + half


def bootstrap_ci95(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """95% percentile-bootstrap CI of the mean; None with fewer than two values."""
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    arr = np.asarray(values, dtype=float)
    means = sorted(rng.choice(arr, size=(resamples, arr.size), replace=True).mean(axis=1).tolist())
    return quantile_sorted(means, 2.5 / 100), quantile_sorted(means, 97.5 / 100)


def summarise(values: Sequence[float]) -> Summary:
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(vals)
    if n == 0:
        return Summary(0, None, None, None, None, None, None, None, None, None, None)
    arr = np.asarray(vals)
    ordered = sorted(vals)
    p50, p90, p95, p99 = (quantile_sorted(ordered, p / 100) for p in (50, 90, 95, 99))
    ci = t_ci95(vals)
    return Summary(
        n=n,
        mean=float(arr.mean()),
        std=float(arr.std(ddof=1)) if n > 1 else None,
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        min=float(arr.min()),
        max=float(arr.max()),
        ci95_low=ci[0] if ci else None,
        ci95_high=ci[1] if ci else None,
    )


# ---------------------------------------------------------------------------------- percentile intervals
#
# The method (docs/statistics.md): the distribution-free order-statistic interval of a quantile, the one
# that holds for any distribution of independent samples (the binomial count of samples below the true
# quantile gives the ranks), taken at an effective sample size n / tau. The requests of one cell are not
# independent: a closed loop of c workers on a server that serves one at a time gives latencies that share
# c - 1 neighbours' service times. tau, the integrated autocorrelation time of the indicator series
# 1{x_i <= median} in completion order, is how much that dependence inflates the variance of the count
# that sets the ranks (Geyer's initial positive sequence estimator, 1992). Measured coverage: within 1-2
# points of nominal (never below ~93.5% at 95%) for iid lognormal and a c=4 FIFO queue at n = 50..3000.


@dataclass(frozen=True, slots=True)
class QuantileInterval:
    """A percentile of one cell's sample with its confidence interval. `lo` / `hi`: the bounds, each None
    where the sample cannot bound it ('not available', never a guess); `n`: the sample's size; `n_eff`: its
    effective size once the dependence between neighbouring requests is counted (n / `dependence`);
    `n_needed`: how many requests a two-sided bounded interval needs at this dependence (None when both
    bounds exist)."""

    q: float
    estimate: float | None
    lo: float | None
    hi: float | None
    n: int
    n_eff: float
    dependence: float  # the integrated autocorrelation time of the sample's indicator series (>= 1)
    n_needed: int | None
    confidence: float = 0.95

    @property
    def bounded(self) -> bool:
        return self.lo is not None and self.hi is not None

    def rel_halfwidth(self) -> float | None:
        """The interval's larger half-width over the estimate; None when not bounded or the estimate is 0."""
        if self.lo is None or self.hi is None or not self.estimate:
            return None
        return max(self.hi - self.estimate, self.estimate - self.lo) / abs(self.estimate)


def _binomial_cdf(n: int, p: float, ks: np.ndarray) -> np.ndarray:
    """P(B <= k) for B ~ Binomial(n, p), at each k of `ks` (ints in 0..n), in log space (no scipy)."""
    k_all = np.arange(0, n + 1, dtype=float)
    log_factorial = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=float)))))
    log_pmf = (
        log_factorial[n]
        - (log_factorial + log_factorial[::-1])
        + k_all * math.log(p)
        + (n - k_all) * math.log1p(-p)
    )
    cdf = np.cumsum(np.exp(log_pmf - log_pmf.max())) * math.exp(log_pmf.max())
    capped: np.ndarray = np.minimum(cdf[np.asarray(ks, dtype=int)], 1.0)
    return capped


@functools.lru_cache(maxsize=4096)
def order_statistic_ranks(n: int, q: float, confidence: float = 0.95) -> tuple[int | None, int | None]:
    """The 1-based ranks (l, u) of the distribution-free interval [x(l), x(u)] for the `q` quantile of n
    independent samples: P(x(l) <= xi_q <= x(u)) >= `confidence`, each tail at most (1 - confidence) / 2.
    A rank is None where n samples cannot bound that side (e.g. the upper side of p99 below 368 samples).
    Cached: the stop judge asks the same few sizes again and again."""
    if n <= 0:
        return None, None
    alpha = (1.0 - confidence) / 2
    cdf = _binomial_cdf(n, q, np.arange(0, n + 1))
    # lower: the largest l with P(B <= l - 1) <= alpha (B: samples below the true quantile)
    lows = np.nonzero(cdf[:n] <= alpha)[0]
    low = int(lows[-1]) + 1 if lows.size else None
    # upper: the smallest u with P(B >= u) = 1 - P(B <= u - 1) <= alpha
    ups = np.nonzero(1.0 - cdf[:n] <= alpha)[0]
    up = int(ups[0]) + 1 if ups.size else None
    return low, up


def samples_for_bounded(q: float, confidence: float = 0.95) -> int:
    """The fewest independent samples whose distribution-free interval for the `q` quantile has both bounds
    (368 for p99 at 95%)."""
    alpha = (1.0 - confidence) / 2
    extreme = max(q, 1.0 - q)
    return max(1, math.ceil(math.log(alpha) / math.log(extreme) + 1e-12))


def autocorrelation_time(series: Sequence[float] | np.ndarray) -> float:
    """The integrated autocorrelation time tau = 1 + 2 * sum of the autocorrelations of `series` (1 for
    independent values; the factor by which dependence inflates the variance of its mean), by Geyer's
    initial positive sequence: sums of neighbouring pairs of autocorrelations, up to the first pair that is
    not positive. At least 1 (a negative estimate is noise at the sizes here); 1 below 4 values or for a
    constant series."""
    arr = np.asarray(series, dtype=float)
    n = arr.size
    if n < 4:
        return 1.0
    centred = arr - arr.mean()
    var = float(centred @ centred) / n
    if var <= 0:
        return 1.0
    size = 1 << (2 * n - 1).bit_length()  # zero-padded (no wrap-around) to a power of two (a fast FFT)
    spectrum = np.fft.rfft(centred, size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n] / (n * var)
    pairs = acf[: n - n % 2].reshape(-1, 2).sum(axis=1)
    positive = np.nonzero(pairs <= 0)[0]
    end = int(positive[0]) if positive.size else pairs.size
    return max(1.0, 2.0 * float(pairs[:end].sum()) - 1.0)


def indicator_dependence(values_in_order: Sequence[float], *, median: float | None = None) -> float:
    """How much the sample's order (requests in flight together share the server) inflates the variance of
    a percentile: the autocorrelation time of the indicator series 1{x <= median} in completion order. The
    median's indicator is the best-measured one (half its values are 1); the tail's, where dependence is
    no stronger for the queues measured, has too few events to estimate at the sizes of a cell. `median`:
    the sample's median when the caller has it (the stop judge keeps a sorted copy)."""
    arr = np.asarray(values_in_order, dtype=float)
    if arr.size < 4:
        return 1.0
    mid = float(np.median(arr)) if median is None else median
    return autocorrelation_time((arr <= mid).astype(float))


def _interval_of_sorted(
    ordered: Sequence[float], q: float, confidence: float, tau: float
) -> QuantileInterval:
    n = len(ordered)
    needed_iid = samples_for_bounded(q, confidence)
    if n == 0:
        return QuantileInterval(q, None, None, None, 0, 0.0, tau, math.ceil(needed_iid * tau), confidence)
    estimate = quantile_sorted(ordered, q)
    n_eff = n / tau
    low_eff, up_eff = order_statistic_ranks(max(1, math.floor(n_eff)), q, confidence)
    lo = hi = None
    # The ranks at the effective size, scaled back: their distance from q * n_eff grows by tau (the count
    # below the quantile has tau times the binomial variance).
    if low_eff is not None:
        rank = max(1, math.floor(q * n - (q * n_eff - low_eff) * tau))
        lo = float(ordered[min(rank, n) - 1])
    if up_eff is not None:
        rank = math.ceil(q * n + (up_eff - q * n_eff) * tau)
        hi = float(ordered[rank - 1]) if rank <= n else None
    needed = None if lo is not None and hi is not None else max(n + 1, math.ceil(needed_iid * tau))
    return QuantileInterval(q, estimate, lo, hi, n, n_eff, tau, needed, confidence)


def quantile_interval(
    values_in_order: Sequence[float],
    q: float,
    *,
    confidence: float = 0.95,
    dependence: float | None = None,
) -> QuantileInterval:
    """The `q` quantile (0 < q < 1) of a cell's sample with its `confidence` interval. `values_in_order`:
    the samples in the order they finished; `dependence`: the variance inflation of neighbouring samples
    (None: estimated, `indicator_dependence`). The interval is the order-statistic (binomial) interval at
    the effective sample size n / dependence, its ranks scaled back to the sample."""
    vals = [float(v) for v in values_in_order if v is not None and math.isfinite(v)]
    tau = max(1.0, dependence if dependence is not None else indicator_dependence(vals))
    return _interval_of_sorted(sorted(vals), q, confidence, tau)


def t_quantile(df: float, confidence: float = 0.95) -> float:
    """Student's t quantile for a two-sided `confidence` interval (`t_quantile_975` at 95%; otherwise the
    Cornish-Fisher expansion around the normal quantile, good to ~1e-3 from 3 degrees of freedom)."""
    if confidence == 0.95:
        return t_quantile_975(df)
    if df < 1:
        return math.inf
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def mean_interval(
    values_in_order: Sequence[float], *, confidence: float = 0.95, dependence: float | None = None
) -> tuple[float, float, float] | None:
    """(mean, lo, hi): the mean with its Student-t interval, its variance inflated by the series' own
    autocorrelation time (None: estimated, `autocorrelation_time`); None below two values."""
    arr = np.asarray(values_in_order, dtype=float)
    n = arr.size
    if n < 2:
        return None
    tau = max(1.0, dependence if dependence is not None else autocorrelation_time(arr))
    mean = float(arr.mean())
    half = t_quantile(max(1.0, n / tau - 1), confidence) * float(arr.std(ddof=1)) * math.sqrt(tau / n)
    return mean, mean - half, mean + half


# ----------------------------------------------------------------------------------- log-bucketed histogram


class LogHistogram:
    """Counts of positive values in buckets whose bounds grow by a constant ratio (as HdrHistogram and
    DDSketch do): memory grows with the range of the values (log of max / min), never with their number.
    Bucket k holds (g^(k-1), g^k] with g = (1 + e) / (1 - e); its value is read back as 2 g^k / (g + 1),
    within e = REL_ERROR (1%) of every value in it. Values below ZERO_BELOW (1 ns), e.g. two tokens read
    in one piece, count as 0 exactly. Quantiles interpolate between the buckets of the two order
    statistics around (n - 1) q, as `quantile_sorted` does between the values: each within 1% of the exact
    order statistic, so the quantile is within 1% of the exact one (plus 1 ns). Mergeable (`merge`), so
    several client processes can send theirs; about 1,000 buckets cover 1 us to 1,000 s."""

    REL_ERROR = 0.01
    ZERO_BELOW = 1e-9
    _GAMMA = (1 + REL_ERROR) / (1 - REL_ERROR)
    _LOG_GAMMA = math.log(_GAMMA)

    __slots__ = ("counts", "n", "zeros")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.zeros = 0
        self.n = 0

    def add(self, x: float) -> None:
        self.n += 1
        if x < self.ZERO_BELOW:
            self.zeros += 1
            return
        k = math.ceil(math.log(x) / self._LOG_GAMMA)
        self.counts[k] = self.counts.get(k, 0) + 1

    def add_many(self, values: Sequence[float] | np.ndarray) -> None:
        arr = np.asarray(values, dtype=float)
        if arr.size < 32:  # numpy's fixed cost is above the loop's below a few dozen values
            for x in arr.tolist():
                self.add(x)
            return
        self.n += int(arr.size)
        positive = arr[arr >= self.ZERO_BELOW]
        self.zeros += int(arr.size - positive.size)
        keys, counts = np.unique(np.ceil(np.log(positive) / self._LOG_GAMMA), return_counts=True)
        get = self.counts.get
        for k, c in zip(keys.astype(int).tolist(), counts.tolist(), strict=True):
            self.counts[k] = get(k, 0) + c

    def merge(self, other: LogHistogram) -> None:
        get = self.counts.get
        for k, c in other.counts.items():
            self.counts[k] = get(k, 0) + c
        self.zeros += other.zeros
        self.n += other.n

    def _bucket_value(self, k: int) -> float:
        return 2.0 * self._GAMMA**k / (self._GAMMA + 1)

    def _values_at(self, ranks: Sequence[int]) -> list[float]:
        """The (approximate) order statistics at 0-based `ranks`, ascending."""
        out: list[float] = []
        it = iter(sorted(ranks))
        want = next(it, None)
        seen = self.zeros
        while want is not None and want < seen:
            out.append(0.0)
            want = next(it, None)
        for k in sorted(self.counts):
            seen += self.counts[k]
            while want is not None and want < seen:
                out.append(self._bucket_value(k))
                want = next(it, None)
            if want is None:
                break
        return out

    def quantile(self, q: float) -> float | None:
        """The `q` quantile (interpolated as `quantile_sorted`), within REL_ERROR of the exact one; None
        when empty."""
        if self.n == 0:
            return None
        pos = (self.n - 1) * q
        lo = math.floor(pos)
        hi = min(lo + 1, self.n - 1)
        a, b = self._values_at([lo, hi])
        weight = pos - lo
        return b - (b - a) * (1 - weight) if weight >= 0.5 else a + (b - a) * weight

    def count_between(self, lo: float, hi: float) -> int:
        """How many values lie in buckets whose value is within [lo, hi]."""
        inside = sum(c for k, c in self.counts.items() if lo <= self._bucket_value(k) <= hi)
        return inside + (self.zeros if lo <= 0.0 <= hi else 0)


class BatchedHistogram:
    """A cell's pooled values (every inter-token gap of every answer) in bounded memory, with an interval
    for their percentiles: one `LogHistogram` per batch of consecutive groups (requests, in completion
    order), at most MAX_BATCHES of them; when they fill up, neighbours merge pairwise and a batch holds
    twice as many groups. The pooled percentile is read from all batches together; its interval is the
    batch-quantile interval (Student's t over the batches' own percentiles, whose spread carries both the
    dependence between the gaps of one answer and between answers in flight together), widened by the
    histogram's relative error. Memory: at most MAX_BATCHES histograms, whatever the number of gaps."""

    MAX_BATCHES = 32
    MIN_BATCHES = 8  # fewer batches than this: no interval (Student's t on a handful of batches is loose)

    __slots__ = ("batches", "per_batch", "sizes")

    def __init__(self) -> None:
        self.batches: list[LogHistogram] = []
        self.sizes: list[int] = []  # groups in each batch
        self.per_batch = 1

    @property
    def n(self) -> int:
        return sum(b.n for b in self.batches)

    def add_group(self, values: Sequence[float] | np.ndarray) -> None:
        """One group's values (one answer's gaps); kept only as counts."""
        if len(values) == 0:
            return
        if not self.batches or self.sizes[-1] >= self.per_batch:
            if len(self.batches) >= self.MAX_BATCHES:
                self._halve()
            if not self.batches or self.sizes[-1] >= self.per_batch:
                self.batches.append(LogHistogram())
                self.sizes.append(0)
        self.batches[-1].add_many(values)
        self.sizes[-1] += 1

    def _halve(self) -> None:
        merged, sizes = [], []
        for i in range(0, len(self.batches), 2):
            h = self.batches[i]
            size = self.sizes[i]
            if i + 1 < len(self.batches):
                h.merge(self.batches[i + 1])
                size += self.sizes[i + 1]
            merged.append(h)
            sizes.append(size)
        self.batches, self.sizes, self.per_batch = merged, sizes, self.per_batch * 2

    def merge(self, other: BatchedHistogram) -> None:
        """Add another process's batches, batch by batch (the k-th batch of each covers about the same
        stretch of the cell when they ran side by side)."""
        while self.per_batch < other.per_batch:
            self._halve()
        theirs = BatchedHistogram()
        theirs.batches = [_copy_histogram(b) for b in other.batches]
        theirs.sizes, theirs.per_batch = list(other.sizes), other.per_batch
        while theirs.per_batch < self.per_batch:
            theirs._halve()
        for i, (h, size) in enumerate(zip(theirs.batches, theirs.sizes, strict=True)):
            if i < len(self.batches):
                self.batches[i].merge(h)
                self.sizes[i] += size
            else:
                self.batches.append(h)
                self.sizes.append(size)
        self.per_batch += theirs.per_batch
        while len(self.batches) > self.MAX_BATCHES:
            self._halve()

    def pooled(self) -> LogHistogram:
        total = LogHistogram()
        for b in self.batches:
            total.merge(b)
        return total

    def interval(self, q: float, *, confidence: float = 0.95) -> QuantileInterval:
        """The pooled `q` quantile with its batch-quantile interval. `n` and `n_needed` count values (gaps),
        not requests; `n_eff` is the independent sample whose rank interval would be as wide."""
        pooled = self.pooled()
        n = pooled.n
        estimate = pooled.quantile(q)
        per_batch_needed = max(10, math.ceil(5 / (1 - q)))  # a batch's percentile lies inside its values
        groups = list(self.batches)
        while len(groups) > 2 * self.MIN_BATCHES:  # 8 to 16 larger batches: less dependence between them
            groups = [_merged(groups[i : i + 2]) for i in range(0, len(groups), 2)]
        usable = [b for b in groups if b.n >= per_batch_needed]
        if estimate is None or len(usable) < self.MIN_BATCHES:
            needed = max(n + 1, 2 * self.MIN_BATCHES * per_batch_needed)
            return QuantileInterval(q, estimate, None, None, n, float(n), 1.0, needed, confidence)
        quantiles = np.array([b.quantile(q) for b in usable], dtype=float)
        b = quantiles.size
        half = t_quantile(b - 1, confidence) * float(quantiles.std(ddof=1)) / math.sqrt(b)
        e = LogHistogram.REL_ERROR
        lo, hi = max(0.0, estimate - half) * (1 - e), (estimate + half) * (1 + e)
        # the effective sample: the iid rank interval 2 z sqrt(n q (1 - q)) wide against this one's ranks
        inside = max(1, pooled.count_between(lo, hi))
        iid_width = 2 * NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt(n * q * (1 - q))
        tau = max(1.0, (inside / iid_width) ** 2) if iid_width > 0 else 1.0
        return QuantileInterval(q, estimate, lo, hi, n, n / tau, tau, None, confidence)


def _merged(hs: Sequence[LogHistogram]) -> LogHistogram:
    total = LogHistogram()
    for h in hs:
        total.merge(h)
    return total


def _copy_histogram(h: LogHistogram) -> LogHistogram:
    c = LogHistogram()
    c.counts, c.zeros, c.n = dict(h.counts), h.zeros, h.n
    return c


# ------------------------------------------------------------------------------------------ the stop rule

# What a stop goal may judge: the mean or a percentile of latency, TTFT or TPOT ("p99", "ttft_p50", ...).
STOP_SERIES = ("latency", "ttft", "tpot")
STOP_STATISTICS = ("mean", "p50", "p90", "p95", "p99")
STOP_METRICS = tuple(
    (stat if series == "latency" else f"{series}_{stat}")
    for series in STOP_SERIES
    for stat in STOP_STATISTICS
)


def stop_metric(metric: str) -> tuple[str, float | None]:
    """(series, q) of a stop metric: ("latency", 0.99) for "p99", ("ttft", None) for "ttft_mean"."""
    series, _, stat = metric.rpartition("_")
    series = series or "latency"
    if series not in STOP_SERIES or stat not in STOP_STATISTICS:
        raise ValueError(f"stop metric {metric!r}: one of {', '.join(STOP_METRICS)}")
    return series, None if stat == "mean" else int(stat[1:]) / 100


@dataclass(frozen=True, slots=True)
class StopGoal:
    """One thing a cell must know well enough to stop: `metric`'s `confidence` interval no wider than
    `rel_halfwidth` of its estimate on either side, after at least `min_requests` answered requests."""

    metric: str
    rel_halfwidth: float
    confidence: float = 0.95
    min_requests: int = 2


class _Series:
    """One series of a running cell: its values in completion order and a sorted copy (bisect.insort)."""

    __slots__ = ("in_order", "ordered")

    def __init__(self) -> None:
        self.in_order = array("d")
        self.ordered: list[float] = []

    def add(self, x: float) -> None:
        self.in_order.append(x)
        bisect.insort(self.ordered, x)


@dataclass(slots=True)
class StopJudge:
    """Whether a running cell has met every one of its `goals` (`add` each answered request; True once it
    has). The judgement (an interval per goal: `quantile_interval`'s method on the sorted copy, or
    `mean_interval`) runs every max(4, n / 20) requests, so a cell stops at most ~5% past the point where
    it converged and the judging costs O(n log n) over the cell. `halfwidths`: each goal's relative
    half-width at the last judgement (None: not bounded yet)."""

    goals: Sequence[StopGoal]
    series: dict[str, _Series] = field(default_factory=dict)
    n: int = 0
    converged: bool = False
    halfwidths: dict[str, float | None] = field(default_factory=dict)
    _next: int = 0
    _wanted: tuple[tuple[StopGoal, str, float | None], ...] = ()

    def __post_init__(self) -> None:
        self._wanted = tuple((g, *stop_metric(g.metric)) for g in self.goals)
        for _, name, _ in self._wanted:
            self.series.setdefault(name, _Series())
        self._next = max([2, *(g.min_requests for g in self.goals)])

    def add(self, latency: float, ttft: float | None = None, tpot: float | None = None) -> bool:
        """One answered request's values (None: not measured for it); True once every goal is met."""
        if self.converged:
            return True
        series = self.series
        self.n += 1
        if "latency" in series:
            series["latency"].add(latency)
        if ttft is not None and "ttft" in series:
            series["ttft"].add(ttft)
        if tpot is not None and "tpot" in series:
            series["tpot"].add(tpot)
        if self.n >= self._next:
            self._next = self.n + max(4, self.n // 20)
            self.converged = self.judge()
        return self.converged

    def judge(self) -> bool:
        """Every goal's interval now; True when all are within their bounds."""
        met = True
        for goal, name, q in self._wanted:
            width = self._halfwidth(self.series[name], q, goal.confidence)
            self.halfwidths[goal.metric] = width
            if self.n < goal.min_requests or width is None or width > goal.rel_halfwidth:
                met = False
        return met

    @staticmethod
    def _halfwidth(s: _Series, q: float | None, confidence: float) -> float | None:
        if q is None:
            mean = mean_interval(s.in_order, confidence=confidence)
            if mean is None or mean[0] <= 0:
                return None
            return (mean[2] - mean[0]) / mean[0]
        if len(s.ordered) < 4:
            return None
        tau = indicator_dependence(s.in_order, median=quantile_sorted(s.ordered, 0.5))
        return _interval_of_sorted(s.ordered, q, confidence, tau).rel_halfwidth()


# ------------------------------------------------------------------------------ trend through a sample


@dataclass(frozen=True, slots=True)
class Trend:
    """Whether a sample taken in order keeps rising: the Mann-Kendall test on its batch means (one-sided,
    rising) and the Theil-Sen slope through them. `n`: the samples; `batches`: how many batch means were
    tested (0: too few samples to test; then every other field is None); `rise`: the slope across the whole
    sample over the median of the batch means (0.5: the fitted line rose by half the typical value from the
    first sample to the last); `z`, `p_rising`: the test's statistic and its one-sided p-value."""

    n: int
    batches: int
    slope: float | None  # per sample, in the values' unit
    rise: float | None
    z: float | None
    p_rising: float | None


# The fewest batch means the test runs on: below this the one-sided p-value of even a perfectly ordered
# sequence is not small (8 means: 1/8! in exact terms; the normal approximation is fair from here).
TREND_MIN_BATCHES = 8
TREND_MAX_BATCHES = 20
# Batches at least this many times the dependence long (and never shorter): at twice, AR(1)-dependent
# steady samples (coefficient 0.8) still looked rising at 1% in 2.5% of 400 seeded cells; at three, none did
# (with the judge's 0.1% level).
TREND_BATCH_DEPENDENCE = 3
TREND_MIN_SAMPLES = TREND_MIN_BATCHES * TREND_BATCH_DEPENDENCE


def trend(values_in_order: Sequence[float], *, dependence: float | None = None) -> Trend:
    """Is the sample rising through its order, beyond its noise? Neighbouring requests move together (they
    share the server's queue), which makes a rank test on the raw values see trends that are not there; so
    the values are averaged in consecutive batches at least TREND_BATCH_DEPENDENCE times the dependence
    long, and at least that many values (`dependence`: the
    variance inflation of neighbours, None: `indicator_dependence` of the values about a straight line
    through them, so that a trend does not count as dependence), up to TREND_MAX_BATCHES of them, and the
    Mann-Kendall test (normal approximation with continuity correction, no tie correction: batch means of
    latencies rarely tie) runs on those means. The Theil-Sen slope (the median of the pairwise slopes)
    through the means gives the size, robust to a few outlying batches."""
    vals = np.asarray([float(v) for v in values_in_order if v is not None and math.isfinite(v)], dtype=float)
    n = int(vals.size)
    none = Trend(n, 0, None, None, None, None)
    if n < TREND_MIN_SAMPLES:
        return none
    if dependence is None:
        idx = np.arange(n, dtype=float)
        slope_ls, intercept = np.polyfit(idx, vals, 1)
        dependence = indicator_dependence(list(vals - (slope_ls * idx + intercept)))
    size = max(math.ceil(n / TREND_MAX_BATCHES), math.ceil(TREND_BATCH_DEPENDENCE * max(1.0, dependence)))
    # Never fewer than TREND_MIN_BATCHES means: a curve the straight line misses leaves residuals whose
    # indicator looks strongly dependent (autocorrelation times of 30+ over 200 values), and batches that
    # long would leave nothing to test; the judge's rise threshold and 0.1% level guard the steady side.
    size = min(size, n // TREND_MIN_BATCHES)
    k = n // size
    if k < TREND_MIN_BATCHES:
        return none
    means = vals[: k * size].reshape(k, size).mean(axis=1)
    centres = (np.arange(k) + 0.5) * size  # each batch's middle, in samples
    i, j = np.triu_indices(k, 1)
    s = float(np.sign(means[j] - means[i]).sum())
    var = k * (k - 1) * (2 * k + 5) / 18.0
    z = (s - math.copysign(1.0, s)) / math.sqrt(var) if s != 0 else 0.0
    p = 0.5 * math.erfc(z / math.sqrt(2.0))
    slope = float(np.median((means[j] - means[i]) / (centres[j] - centres[i])))
    typical = float(np.median(means))
    rise = slope * n / abs(typical) if typical else None
    return Trend(n, k, slope, rise, z, p)
