"""Repetitions that tell drift from noise (`[preset] repetitions > 1`: each repetition a fresh container).

Per configuration — the same model, host class, caps, input size and load; cells.csv rows that differ only
in `repeat_idx` — the spread of the repetitions' p50 latencies: their coefficient of variation, their
median with its 95% interval (the distribution-free order-statistic interval over the repetitions, which
bounds both sides from 6 repetitions on; below that a side is empty, 'not available'), and whether the
repetitions disagree beyond their own intervals: each cell's p50 interval (`p50_lo_s`, `p50_hi_s`) is
what its own requests allow, so repetitions whose intervals share no common point differ by more than
their noise (drift: a container, a host, a cache that changed between them). The cells marked are those
whose interval excludes the median of the repetitions' p50s. An unbounded side counts as reaching
infinitely far (it never makes two cells disagree). A session without the interval columns (older than
the intervals) has no judgement: `disagree` is empty.

A pure function of cells.csv rows (text as read from the file, or the numbers of a live summary). It lives
in `session`, below both of its users: the session writer calls `repetition_rows` when a session finishes
and writes `repetitions.csv` (columns `session.schema.REPETITION_COLUMNS`); `fit` shows the same rows
(`analysis.repetitions` reads a session's cells.csv for it). The writer may not import `analysis`
(`analysis` reads `session.schema`: the two packages would import each other).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from tui_profiler import formatting
from tui_profiler.session.schema import REPETITION_CONFIG_COLUMNS, CellStatus, csv_number
from tui_profiler.stats import quantile_interval


def _key_value(value: Any) -> str:
    """A configuration field as one comparable text: '2' and '2.0' are the same setting."""
    f = csv_number(value)
    if f is not None:
        return f"{f:g}"
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _cv(values: list[float]) -> float | None:
    """Sample standard deviation over the mean; None below two values or at a zero mean."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    if mean == 0:
        return None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(var) / abs(mean)


def repetition_rows(cells: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration measured in two or more repetitions (cells with status ok and a p50), in
    the order the configurations first appear. Columns: `session.schema.REPETITION_COLUMNS`."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in cells:
        if str(row.get("status") or CellStatus.OK) != CellStatus.OK or csv_number(row.get("p50_s")) is None:
            continue
        key = tuple(_key_value(row.get(c)) for c in REPETITION_CONFIG_COLUMNS)
        groups.setdefault(key, []).append(row)
    out = []
    for rows in groups.values():
        if len(rows) < 2:
            continue
        rows = sorted(rows, key=lambda r: csv_number(r.get("repeat_idx")) or 0.0)
        out.append(_config_row(rows))
    return out


def _config_row(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    p50s = [csv_number(r.get("p50_s")) or 0.0 for r in rows]
    p99s = [v for v in (csv_number(r.get("p99_s")) for r in rows) if v is not None]
    median = quantile_interval(p50s, 0.5, dependence=1.0)  # repetitions are independent containers
    disagree, marked, reason = _disagreement(rows, p50s, median.estimate)
    first = rows[0]
    return {
        **{c: first.get(c) for c in REPETITION_CONFIG_COLUMNS},
        "repetitions": len(rows),
        "cell_indices": " ".join(_key_value(r.get("cell_index")) for r in rows),
        "p50_median_s": median.estimate,
        "p50_median_lo_s": median.lo,
        "p50_median_hi_s": median.hi,
        "p50_cv": _cv(p50s),
        "p99_cv": _cv(p99s) if len(p99s) == len(rows) else None,
        "disagree": disagree,
        "disagree_cells": " ".join(marked),
        "disagree_reason": reason,
    }


def _disagreement(
    rows: list[Mapping[str, Any]], p50s: list[float], median: float | None
) -> tuple[bool | None, list[str], str]:
    """(whether the repetitions' own p50 intervals share no point, the cells whose interval excludes the
    median of the p50s, one line saying why); None when a cell has no interval columns."""
    if any("p50_lo_s" not in r or "p50_hi_s" not in r for r in rows):
        return None, [], "no p50 intervals in cells.csv (a session before intervals)"
    lows = [csv_number(r.get("p50_lo_s")) for r in rows]
    highs = [csv_number(r.get("p50_hi_s")) for r in rows]
    top_low = max((v for v in lows if v is not None), default=-math.inf)
    bottom_high = min((v for v in highs if v is not None), default=math.inf)
    if top_low <= bottom_high or median is None:
        return False, [], ""
    marked = [
        _key_value(r.get("cell_index"))
        for r, lo, hi in zip(rows, lows, highs, strict=True)
        if (lo is not None and lo > median) or (hi is not None and hi < median)
    ]
    shown = ", ".join(
        f"cell {_key_value(r.get('cell_index'))} {formatting.latency_interval(p, lo, hi)}"
        for r, p, lo, hi in zip(rows, p50s, lows, highs, strict=True)
    )
    reason = f"the repetitions' p50 intervals share no point ({shown}): they differ beyond their noise"
    return True, marked, reason
