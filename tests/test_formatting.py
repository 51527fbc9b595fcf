"""The one quantile (`tui_profiler.stats`) and the one formatter (`tui_profiler.formatting`) that both front
ends use: pure functions, no I/O."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_profiler import formatting
from tui_profiler.stats import median, percentile, quantile, quantile_sorted

FINITE = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(FINITE, min_size=1, max_size=60), st.floats(min_value=0, max_value=100))
def test_quantile_is_numpys_linear_rule_to_the_bit(values: list[float], p: float) -> None:
    assert percentile(values, p) == float(np.percentile(np.asarray(values), p))
    assert quantile_sorted(sorted(values), p / 100) == float(np.quantile(np.asarray(values), p / 100))


def test_quantile_edges() -> None:
    assert quantile([], 0.5) is None and percentile([], 99) is None
    assert median([1.0, 2.0]) == 1.5 and quantile([3.0, 1.0, 2.0], 1.0) == 3.0
    assert quantile_sorted([5.0], 0.99) == 5.0


def test_not_available_is_a_dash_never_zero() -> None:
    for f in (formatting.latency, formatting.seconds, formatting.duration, formatting.size, formatting.rate):
        assert f(None) == formatting.NOT_AVAILABLE and f(math.nan) == formatting.NOT_AVAILABLE
    assert formatting.number("") == formatting.NOT_AVAILABLE


def test_each_quantity_reads_the_same_everywhere() -> None:
    assert [formatting.latency(x) for x in (0.00085, 0.0279, 1.3)] == ["850 µs", "27.9 ms", "1.30 s"]
    assert formatting.seconds(3.1) == "3.10 s"
    assert [formatting.duration(x) for x in (45, 185, 3720, -1)] == ["45 s", "3 m 05 s", "1 h 02 m", "0 s"]
    assert [formatting.size(x) for x in (512, 429496729, 16 * 2**30, 2**50)] == [
        "512 B",
        "409.6 MiB",
        "16.0 GiB",
        "1024.0 TiB",
    ]
    assert formatting.rate(35.7077) == "35.71 req/s" and formatting.rate(2.6, unit="") == "2.6"
    assert formatting.number(0.5) == "0.5" and formatting.number(2.0) == "2"
    assert formatting.input_size(0.5) == "×0.5" and formatting.input_size(None, 256, 32) == "256→32"
    assert formatting.load(8) == "c=8" and formatting.load(None, 2.0) == "2/s"
    cell = {"cpus": 2.0, "memory_gb": 4.0, "gpus": 0, "input_scale": 1.0, "concurrency": 1, "rate": None}
    assert formatting.cell_label(cell) == "2 CPU · 4 GB · scale 1 · c=1"
