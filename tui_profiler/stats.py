"""Summary statistics of latency samples: mean, std, quantiles, 95% confidence intervals. The package's one
quantile: every percentile it computes or shows (cells.csv, the TUI, the headless progress, the benchmarks)
comes from `quantile_sorted`.

Quantiles use linear interpolation between order statistics (numpy's default method, Hyndman & Fan type 7),
so p50 of [1, 2] is 1.5; the arithmetic is numpy's own, so results equal `numpy.percentile` to the bit.
The CI of the mean uses Student's t (exact for normal data; the usual choice for small n); a bootstrap CI
is available for skewed data. With fewer than two samples there is no CI (None), never a zero-width one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

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
