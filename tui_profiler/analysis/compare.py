"""Compare sessions: the cells two (or more) sessions have in common, each metric's ratio to the baseline
with a 95% interval, and a verdict. Pure logic over frames the caller read (`tui-profiler compare`, the
Results screen, `report`): `SessionData` holds a session's meta.json, its cells.csv and its timed,
successful requests.csv rows.

Matching. Cells match when they share every key of `MATCH_COLUMNS` that either session sets (resource
configuration, host class, input size, output length, shared prefix, load). The repetitions of one
configuration (`repeat_idx`, containers) are pooled: their requests, in completion order, one after the
other.

Intervals. Each session gives its own 95% interval of the metric, and the ratio's interval is built from
the two by MOVER (the method of variance estimates recovery, Zou & Donner 2008): on the log scale, the
ratio minus / plus the root of the sum of the squares of the two half-widths that bound it on that side.
The sessions ran apart, so their errors are independent and the half-widths add in quadrature (adding them
outright, as overlapping intervals do, would be a 99% test). Each side's interval:
- a percentile (p50, p99 of latency, TTFT, TPOT, ITL): `stats.quantile_interval` over the cell's requests
  in the order they finished (the order-statistic interval at the sample's effective size, so requests that
  share the server's queue count for less); a percentile it cannot bound (p99 below ~368 independent
  requests) makes the metric 'not comparable: too few'. Without requests.csv, cells.csv's own bounds
  (`p99_lo_s`, `p99_hi_s` ...) are used.
- throughput: completions per second, 1 / the mean gap between completions, the mean's interval by batch
  means (20 consecutive batches, Student's t on their means, which neighbouring gaps' dependence barely
  touches).
- a cell-level value (cold start and its phases, peak memory): one per container or repetition; with three
  or more per session, the mean's Student's t interval; with fewer there is no interval and nothing can be
  detected (reason: one value per container).
Calibration (iid log-normal requests, 600 per side, 400 seeded pairs of one distribution each): p50 excluded
1 in 13 of 400 pairs (3.2%), throughput in 17 (4.2%), p99 in 0 (the order-statistic intervals are
conservative in the tail).

Verdicts: `faster` / `slower` when the interval lies wholly below / above 1 for a time (above / below 1 for
throughput), and beyond the margin `min_change` (2%: MIN_CHANGE); for peak memory `lower` / `higher`;
`no detectable change` when it holds 1, lies within the margin, or cannot be bounded; `not comparable` with the reason when the cells differ in what they measured: a different
model, caps enforced in one and not the other, a saturated or failed cell, too few requests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tui_profiler.errors import ProfilerError
from tui_profiler.session.schema import COLD_START_PHASES, CONFIGURATION_COLUMNS
from tui_profiler.stats import quantile_interval, t_ci95, t_quantile_975

# What identifies a cell across sessions: the keys of a configuration (`session.schema`) that either sets.
MATCH_COLUMNS: tuple[str, ...] = CONFIGURATION_COLUMNS
CONFIDENCE = 0.95
# The smallest change a verdict reports: the interval must lie wholly beyond ±2%. The request-level
# intervals hold the sampling noise of one run; two containers of one image on a shared box differ by a
# few per cent more (CPU placement, frequency, neighbours), and a gate that fires on those is not used.
MIN_CHANGE = 0.02
BATCHES = 20  # batch means of the completion gaps (throughput)
CELL_LEVEL_MIN = 3  # values per side (containers, repetitions) for a cell-level interval


class Verdict:
    FASTER = "faster"
    SLOWER = "slower"
    HIGHER = "higher"  # peak memory
    LOWER = "lower"
    SAME = "no detectable change"
    NOT_COMPARABLE = "not comparable"


DETECTED = (Verdict.FASTER, Verdict.SLOWER, Verdict.HIGHER, Verdict.LOWER)
WORSE = (Verdict.SLOWER, Verdict.HIGHER)


@dataclass(frozen=True, slots=True)
class Metric:
    """One compared quantity. `column`: the requests.csv column a request-level metric reads (its
    percentile `q`), or the cells.csv column of a cell-level one; `higher_is_better`: throughput."""

    name: str
    column: str
    q: float | None = None  # request-level: the percentile
    level: str = "request"  # 'request' | 'throughput' | 'cell'
    higher_is_better: bool = False
    memory: bool = False
    cold_start: bool = False


METRICS: tuple[Metric, ...] = (
    Metric("p50_s", "latency_s", 0.5),
    Metric("p99_s", "latency_s", 0.99),
    Metric("throughput_rps", "t_recv_s", level="throughput", higher_is_better=True),
    Metric("ttft_p50_s", "ttft_s", 0.5),
    Metric("ttft_p99_s", "ttft_s", 0.99),
    Metric("tpot_p50_s", "tpot_s", 0.5),
    Metric("tpot_p99_s", "tpot_s", 0.99),
    Metric("itl_p50_s", "itl_p50_s", 0.5),  # the median over requests of each request's median gap
    Metric("itl_p99_s", "itl_p99_s", 0.99),  # the p99 over requests of each request's p99 gap
    Metric("cold_start_s", "cold_start_s", level="cell", cold_start=True),
    *(Metric(f"{p}_s", f"{p}_s", level="cell", cold_start=True) for p in COLD_START_PHASES),
    Metric("peak_mem_bytes", "peak_mem_bytes", level="cell", memory=True),
)
METRIC_NAMES = tuple(m.name for m in METRICS)

CSV_COLUMNS: tuple[str, ...] = (
    "session",
    "baseline",
    *MATCH_COLUMNS,
    "metric",
    "baseline_value",
    "value",
    "ratio",
    "ratio_lo",
    "ratio_hi",
    "verdict",
    "reason",
    "baseline_n",
    "n",
    "method",
)


class CompareError(ProfilerError, ValueError):
    """One line: why these sessions cannot be compared at all."""


@dataclass(slots=True)
class SessionData:
    """A session as compare reads it. `requests`: requests.csv's timed, successful rows (may be empty)."""

    name: str
    meta: dict[str, Any]
    cells: pd.DataFrame
    requests: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(slots=True)
class Comparison:
    """One matched cell and metric: the baseline's value, this session's, their ratio with its interval."""

    session: str
    baseline: str
    keys: dict[str, str]
    metric: str
    baseline_value: float | None
    value: float | None
    ratio: float | None
    ratio_lo: float | None
    ratio_hi: float | None
    verdict: str
    reason: str = ""
    baseline_n: int = 0
    n: int = 0
    method: str = ""

    @property
    def detected(self) -> bool:
        return self.verdict in DETECTED

    def change_pct(self) -> float | None:
        return None if self.ratio is None else (self.ratio - 1.0) * 100.0

    def badness(self) -> float:
        """How much worse (positive) or better (negative) this session is, in log ratio."""
        if self.ratio is None or self.ratio <= 0:
            return 0.0
        log_ratio = math.log(self.ratio)
        return -log_ratio if self.metric == "throughput_rps" else log_ratio

    def as_row(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "baseline": self.baseline,
            **{c: self.keys.get(c, "") for c in MATCH_COLUMNS},
            "metric": self.metric,
            "baseline_value": self.baseline_value,
            "value": self.value,
            "ratio": self.ratio,
            "ratio_lo": self.ratio_lo,
            "ratio_hi": self.ratio_hi,
            "verdict": self.verdict,
            "reason": self.reason,
            "baseline_n": self.baseline_n,
            "n": self.n,
            "method": self.method,
        }


# ---------------------------------------------------------------------------------------------- keys


def _key_value(value: Any) -> str:
    """A match key's value as text: numbers without trailing zeros, missing as ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        text = str(value).strip()
        return "" if text.lower() == "nan" else text


def match_columns(*sessions: SessionData) -> tuple[str, ...]:
    """The match keys any of the sessions sets (a column that is empty everywhere identifies nothing)."""
    used = []
    for column in MATCH_COLUMNS:
        if any(column in s.cells and s.cells[column].map(_key_value).ne("").any() for s in sessions):
            used.append(column)
    return tuple(used)


def cell_key(row: Mapping[str, Any], columns: Sequence[str]) -> tuple[str, ...]:
    return tuple(_key_value(row.get(c)) for c in columns)


def key_label(keys: Mapping[str, str]) -> str:
    """`CPU1+Mem2 input_scale=2 c=1`: a matched cell in a line."""
    config = []
    if keys.get("gpu_mode") not in (None, "", "off", "none", "0"):
        config.append("GPU")
    if keys.get("cpu_cores"):
        config.append(f"CPU{keys['cpu_cores']}")
    if keys.get("mem_cap_gb"):
        config.append(f"Mem{keys['mem_cap_gb']}")
    parts = ["+".join(config) or "uncapped"]
    if keys.get("host_class"):
        parts.insert(0, f"[{keys['host_class']}]")
    short = {
        "input_scale": "scale",
        "token_len": "tokens",
        "output_len": "out",
        "shared_prefix_tokens": "prefix",
    }
    for column in ("input_scale", "pixels", "token_len", "output_len", "shared_prefix_tokens", "batch_size"):
        value = keys.get(column)
        if (
            not value
            or (column == "pixels" and keys.get("input_scale"))
            or (column == "batch_size" and value == "1")
        ):
            continue  # pixels follow from the scale; one request a batch is the rule
        parts.append(f"{short.get(column, column)}={value}")
    if keys.get("concurrency"):
        parts.append(f"c={keys['concurrency']}")
    if keys.get("rate"):
        parts.append(f"rate={keys['rate']}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------ gathering


@dataclass(slots=True)
class _Cell:
    """The cells.csv rows of one matched cell (its repetitions) and its requests in completion order."""

    rows: list[dict[str, Any]]
    requests: pd.DataFrame


def _group(session: SessionData, columns: Sequence[str]) -> dict[tuple[str, ...], _Cell]:
    cells = session.cells
    out: dict[tuple[str, ...], _Cell] = {}
    if cells.empty:
        return out
    by_index: dict[Any, pd.DataFrame] = {}
    reqs = session.requests
    if not reqs.empty and "cell_index" in reqs:
        order = [c for c in ("t_recv_s", "timestamp_ms") if c in reqs]
        sorted_reqs = reqs.sort_values(["cell_index", *order[:1]], kind="stable") if order else reqs
        by_index = {k: g for k, g in sorted_reqs.groupby("cell_index", sort=False)}
    for row in cells.to_dict("records"):
        key = cell_key(row, columns)
        cell = out.setdefault(key, _Cell([], pd.DataFrame()))
        cell.rows.append(row)
        frame = by_index.get(row.get("cell_index"))
        if frame is not None and not frame.empty:
            cell.requests = frame if cell.requests.empty else pd.concat([cell.requests, frame])
    return out


def _numbers(values: Any) -> np.ndarray:
    arr: np.ndarray = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
    finite: np.ndarray = arr[np.isfinite(arr)]
    return finite


# ------------------------------------------------------------------------------------------ intervals

Interval = tuple[float, float, float]  # estimate, lo, hi (one session's)


def mover_ratio(base: Interval, other: Interval) -> tuple[float | None, float | None]:
    """The interval of other / base from each side's own interval (MOVER on the log scale, Zou & Donner
    2008): log ratio -/+ the root of the sum of the squared log half-widths of the two sides that bound it.
    (None, None) where an estimate or bound is not positive."""
    (ea, la, ha), (eb, lb, hb) = base, other
    if min(ea, la, ha, eb, lb, hb) <= 0:
        return None, None
    log_ratio = math.log(eb / ea)
    down = math.hypot(math.log(eb / lb), math.log(ha / ea))
    up = math.hypot(math.log(hb / eb), math.log(ea / la))
    return math.exp(log_ratio - down), math.exp(log_ratio + up)


def mean_interval(values_in_order: np.ndarray, *, batches: int = BATCHES) -> Interval | None:
    """The mean with its 95% interval by batch means (`batches` consecutive batches, Student's t on their
    means: neighbouring values may move together, batch means much less); None below 2 * `batches`."""
    n = values_in_order.size
    if n < 2 * batches:
        return None
    size = n // batches
    means = values_in_order[: size * batches].reshape(batches, size).mean(axis=1)
    estimate = float(values_in_order.mean())
    half = t_quantile_975(batches - 1) * float(means.std(ddof=1)) / math.sqrt(batches)
    return estimate, estimate - half, estimate + half


def independent_mean_interval(values: np.ndarray) -> Interval | None:
    """The mean of independent values (containers, repetitions) with its Student's t 95% interval."""
    ci = t_ci95(values.tolist())
    return None if ci is None else (float(values.mean()), ci[0], ci[1])


# ------------------------------------------------------------------------------------------- verdicts


def _text(row: Mapping[str, Any], column: str) -> str:
    return _key_value(row.get(column))


def _false(value: Any) -> bool:
    return _key_value(value).lower() in ("false", "0", "no")


def not_comparable_reason(base: _Cell, other: _Cell, base_name: str, name: str) -> str:
    """Why a matched cell's numbers do not measure the same thing in both sessions ('' when they do)."""
    models = [{_text(r, "model_name") for r in c.rows} - {""} for c in (base, other)]
    if models[0] and models[1] and models[0] != models[1]:
        return f"different model ({', '.join(sorted(models[0]))} vs {', '.join(sorted(models[1]))})"
    for cap in ("cpus_enforced", "mem_enforced", "gpus_enforced"):
        enforced = [any(_false(r.get(cap)) for r in c.rows) for c in (base, other)]
        if enforced[0] != enforced[1]:
            where = base_name if enforced[0] else name
            return f"caps not enforced in {where} ({cap} false)"
    for cell, where in ((base, base_name), (other, name)):
        for r in cell.rows:
            status = _text(r, "status")
            if status and status != "ok":
                return f"cell {status} in {where}"
            flags = _text(r, "saturation")
            if flags:
                return f"saturated cell ({flags}) in {where}"
    return ""


def _verdict(metric: Metric, lo: float | None, hi: float | None, min_change: float) -> str:
    """Detected when the interval lies wholly beyond the margin: above 1 + `min_change` or below its
    inverse."""
    if lo is None or hi is None:
        return Verdict.SAME
    up, down = lo > 1 + min_change, hi < 1 / (1 + min_change)
    if metric.memory:
        return Verdict.HIGHER if up else Verdict.LOWER if down else Verdict.SAME
    if up:
        return Verdict.FASTER if metric.higher_is_better else Verdict.SLOWER
    if down:
        return Verdict.SLOWER if metric.higher_is_better else Verdict.FASTER
    return Verdict.SAME


def _gaps(requests: pd.DataFrame) -> np.ndarray:
    """The gaps between completions (seconds) within each cell of the pooled requests."""
    if "t_recv_s" not in requests:
        return np.array([])
    parts = []
    for _, frame in (
        requests.groupby("cell_index", sort=False) if "cell_index" in requests else [(0, requests)]
    ):
        t = np.sort(_numbers(frame["t_recv_s"]))
        if t.size > 1:
            parts.append(np.diff(t))
    return np.concatenate(parts) if parts else np.array([])


def _request_values(cell: _Cell, metric: Metric) -> np.ndarray:
    if metric.level == "throughput":
        return _gaps(cell.requests)
    if cell.requests.empty or metric.column not in cell.requests:
        return np.array([])
    return _numbers(cell.requests[metric.column])


def _cell_values(cell: _Cell, metric: Metric) -> np.ndarray:
    rows = cell.rows
    if metric.cold_start and any("cold_start_cell" in r for r in rows):
        paid = [r for r in rows if _key_value(r.get("cold_start_cell")).lower() in ("1", "true")]
        rows = paid
    return _numbers([r.get(metric.column) for r in rows])


def _own_bounds(cell: _Cell, metric: Metric) -> Interval | None:
    """The estimate and interval the session's cells.csv gives a percentile (one repetition only)."""
    if metric.q is None or len(cell.rows) != 1:
        return None
    stem = metric.name[: -len("_s")]
    row = cell.rows[0]
    values = [_numbers([row.get(c)]) for c in (metric.name, f"{stem}_lo_s", f"{stem}_hi_s")]
    if not all(v.size for v in values):
        return None
    return float(values[0][0]), float(values[1][0]), float(values[2][0])


@dataclass(frozen=True, slots=True)
class _Side:
    """One session's value of a metric, its interval (None: not bounded) and sample size."""

    value: float | None
    interval: Interval | None
    n: int
    short: str = ""  # why the interval is missing, when too few samples


def _side(metric: Metric, cell: _Cell) -> _Side:
    if metric.level == "cell":
        values = _cell_values(cell, metric)
        if not values.size:
            return _Side(None, None, 0)
        interval = independent_mean_interval(values) if values.size >= CELL_LEVEL_MIN else None
        return _Side(float(values.mean()), interval, int(values.size))
    values = _request_values(cell, metric)
    if not values.size:
        own = _own_bounds(cell, metric)
        if own is None:
            single = (
                _numbers([r.get(metric.name) for r in cell.rows]) if len(cell.rows) == 1 else np.array([])
            )
            return _Side(float(single[0]) if single.size else None, None, 0)
        return _Side(own[0], own, 0)
    if metric.level == "throughput":
        gaps = mean_interval(values)
        if gaps is None:
            rate = 1.0 / float(values.mean()) if values.mean() > 0 else None
            return _Side(rate, None, int(values.size), f"{values.size} of {2 * BATCHES} completions")
        est, lo, hi = gaps
        if min(est, lo, hi) <= 0:
            return _Side(1.0 / est if est > 0 else None, None, int(values.size))
        return _Side(1.0 / est, (1.0 / est, 1.0 / hi, 1.0 / lo), int(values.size))
    assert metric.q is not None
    qi = quantile_interval(values.tolist(), metric.q, confidence=CONFIDENCE)
    if qi.lo is None or qi.hi is None or qi.estimate is None:
        needed = f", about {qi.n_needed} needed" if qi.n_needed else ""
        return _Side(qi.estimate, None, qi.n, f"{qi.n} requests{needed}")
    return _Side(qi.estimate, (qi.estimate, qi.lo, qi.hi), qi.n)


def compare_metric(
    metric: Metric, base: _Cell, other: _Cell
) -> tuple[_Side, _Side, float | None, float | None, float | None, str, str]:
    """(baseline side, this side, ratio, lo, hi, method, too-few reason) of one metric."""
    a, b = _side(metric, base), _side(metric, other)
    ratio = b.value / a.value if a.value is not None and b.value is not None and a.value > 0 else None
    if a.interval is None or b.interval is None:
        short = [f"{who}: {s.short}" for who, s in (("baseline", a), ("this", b)) if s.short]
        if short and metric.level != "cell":
            return a, b, ratio, None, None, "", f"too few for {metric.name} ({'; '.join(short)})"
        method = (
            f"one value per container: no interval (needs {CELL_LEVEL_MIN} per session)"
            if metric.level == "cell"
            else "no interval"
        )
        return a, b, ratio, None, None, method, ""
    lo, hi = mover_ratio(a.interval, b.interval)
    method = {
        "cell": "t interval of the mean, MOVER",
        "throughput": "batch means of the gaps, MOVER",
    }.get(metric.level, "order-statistic intervals, MOVER")
    if not a.n and not b.n:
        method = "the sessions' own intervals, MOVER"
    return a, b, ratio, lo, hi, method, ""


def compare_sessions(
    baseline: SessionData,
    others: Sequence[SessionData],
    *,
    metrics: Sequence[str] | None = None,
    min_change: float = MIN_CHANGE,
) -> list[Comparison]:
    """Every matched cell and metric of each of `others` against `baseline`, worst changes first.
    `min_change`: the smallest change a verdict reports (0.02: the interval must lie beyond ±2%).
    Raises CompareError when a session has no cell in common with the baseline."""
    if not others:
        raise CompareError("compare needs at least two sessions: the baseline and one more")
    chosen = [m for m in METRICS if metrics is None or m.name in metrics]
    out: list[Comparison] = []
    for other in others:
        columns = match_columns(baseline, other)
        base_cells, other_cells = _group(baseline, columns), _group(other, columns)
        common = [k for k in base_cells if k in other_cells]
        if not common:
            raise CompareError(
                f"{other.name} has no cell in common with {baseline.name} (matched on "
                f"{', '.join(columns) or 'nothing'})"
            )
        for key in common:
            keys = dict(zip(columns, key, strict=True))
            base, cell = base_cells[key], other_cells[key]
            blocked = not_comparable_reason(base, cell, baseline.name, other.name)
            for metric in chosen:
                a, b, ratio, lo, hi, method, few = compare_metric(metric, base, cell)
                va, vb, na, nb = a.value, b.value, a.n, b.n
                if va is None and vb is None:
                    continue  # neither session measured it (an image session's TTFT)
                reason = blocked or few
                if va is None or vb is None:
                    reason = reason or f"measured in {baseline.name if vb is None else other.name} only"
                verdict = Verdict.NOT_COMPARABLE if reason else _verdict(metric, lo, hi, min_change)
                if verdict == Verdict.SAME and not reason:
                    if lo is None or hi is None:
                        reason = method
                    elif (lo > 1 or hi < 1) and min_change > 0:
                        reason = f"a change within ±{min_change:.0%} (--min-change)"
                out.append(
                    Comparison(
                        other.name, baseline.name, keys, metric.name, va, vb, ratio, lo, hi, verdict,
                        reason, na, nb, method,
                    )
                )  # fmt: skip
    return sort_worst_first(out)


def sort_worst_first(rows: Sequence[Comparison]) -> list[Comparison]:
    """Detected worsenings (largest first), then improvements, then no change, then not comparable."""

    def rank(c: Comparison) -> tuple[int, float]:
        if c.verdict in WORSE:
            return 0, -c.badness()
        if c.detected:
            return 1, c.badness()
        return (2 if c.verdict == Verdict.SAME else 3), -abs(c.badness())

    return sorted(rows, key=rank)


# ----------------------------------------------------------------------------------------- summaries


def summary_line(rows: Sequence[Comparison]) -> str:
    """`B vs A: 9 cells, 27 comparisons: 3 slower, 24 no detectable change; worst p99_s +23% [...] at ...`."""
    if not rows:
        return "nothing compared"
    parts = []
    for session in dict.fromkeys(r.session for r in rows):
        mine = [r for r in rows if r.session == session]
        cells = len({tuple(r.keys.items()) for r in mine})
        counts: dict[str, int] = {}
        for r in mine:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
        order = (*DETECTED, Verdict.SAME, Verdict.NOT_COMPARABLE)
        tally = ", ".join(f"{counts[v]} {v}" for v in order if counts.get(v))
        line = f"{session} vs {mine[0].baseline}: {cells} cells, {len(mine)} comparisons: {tally}"
        worst = next((r for r in mine if r.verdict in WORSE), None)
        if worst is not None:
            line += f"; worst {worst.metric} {change_text(worst)} at {key_label(worst.keys)}"
        parts.append(line)
    return " | ".join(parts)


def _pct(ratio: float | None) -> str:
    return "?" if ratio is None else f"{(ratio - 1) * 100:+.1f}%"


def change_text(c: Comparison) -> str:
    """`+23.0% [+15.1%, +31.2%]` (the interval only when bounded)."""
    text = _pct(c.ratio)
    if c.ratio_lo is not None and c.ratio_hi is not None:
        text += f" [{_pct(c.ratio_lo)}, {_pct(c.ratio_hi)}]"
    return text


# ---------------------------------------------------------------------------------------------- gate

_GATE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*([<>])\s*([+-]?\d+(?:\.\d+)?)\s*%\s*$")


@dataclass(frozen=True, slots=True)
class Gate:
    """`p99_s>+5%`: fail when a detected change of p99_s is more than 5% up; `throughput_rps<-5%`: more
    than 5% down."""

    metric: str
    above: bool
    percent: float
    text: str

    def trips(self, c: Comparison) -> bool:
        if c.metric != self.metric or not c.detected or c.ratio is None:
            return False
        change = (c.ratio - 1.0) * 100.0
        return change > self.percent if self.above else change < self.percent


def parse_gate(text: str) -> Gate:
    match = _GATE.match(text)
    if match is None:
        raise CompareError(f"--fail-on {text!r}: write METRIC>+N% or METRIC<-N%, e.g. 'p99_s>+5%'")
    metric, op, pct = match.groups()
    if metric not in METRIC_NAMES:
        raise CompareError(f"--fail-on {text!r}: unknown metric {metric} (one of {', '.join(METRIC_NAMES)})")
    return Gate(metric, op == ">", float(pct), text.strip())


def tripped(gates: Sequence[Gate], rows: Sequence[Comparison]) -> list[tuple[Gate, Comparison]]:
    return [(g, r) for g in gates for r in rows if g.trips(r)]
