"""The most load that meets an SLO (`load.search = "slo"`, `run --find-max-load`): a `CellOrder` that makes
its cells as it goes.

For each resource configuration (one container group, as the grid's) and each input size, a search looks for
the largest concurrency (closed loop) or arrival rate (open loop) whose latency — and TTFT / TPOT where the
preset's [slo] bounds them — meets every objective of [slo] at the percentile `slo.percentile`:

- **bracket**: from the first listed load level, double while the level meets (up to the largest level a
  preset may ask: 4096 workers, 100 000 requests/s); when the first level already fails, halve (down to one
  worker, or a sixteenth of the first rate);
- **bisect** between the largest level that met and the smallest that failed: integer concurrency down to
  neighbours, rates down to a relative resolution of `RATE_RESOLUTION` (5%: the bracket's width over its
  lower end).

A closed-loop cell sends at least `ROUNDS_PER_WORKER` (4) timed requests per worker, more than the preset's
`load.requests` where that is fewer: a cell of fewer requests than workers never reaches its concurrency.

At each level the percentile's 95% interval (`stats.quantile_interval`, over the level's timed requests in
the order they finished; a failed request counts as slower than any bound) decides: "meets" when every
objective's upper bound is within it, "fails" when one objective's lower bound is above it, otherwise "not
sure yet": the level runs another cell with more requests (at least as many again, or as many as a bounded
interval needs), pooled with the earlier ones, up to `request_cap` requests a level; there the level counts
as failing (conservative) and the search is marked not `decided`. A cell flagged `server` (its `saturation`
column: the queue grew through the cell, so it has no steady-state latency) fails its level whatever its
interval says, which ends the climb; `client` or `host` flags leave the verdict standing but not decided.

Each search ends with a `CapacityFound` event carrying its capacity.csv row. The cells' indices are new
(the session knows only an upper bound of them up front: `upper_bound`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from tui_profiler.config.model import LoadConfig, Preset, SloConfig
from tui_profiler.events import CapacityFound, CellFinished, Event, RequestDone
from tui_profiler.plan import Cell
from tui_profiler.stats import QuantileInterval, quantile_interval, samples_for_bounded
from tui_profiler.sweep.outcome import gpu_mode

# The largest levels a preset may list (config.model.LoadConfig's bounds): where a climb stops.
MAX_CONCURRENCY = 4096
MAX_RATE = 100_000.0
RATE_RESOLUTION = 0.05  # rates: bisect until (fails - meets) <= 5% of meets
RATE_HALVINGS = 4  # a first rate that fails is halved at most this often (to 1/16 of it)
# Closed loop: each worker sends at least this many timed requests in a cell. A cell of fewer requests than
# workers never reaches its concurrency (measured: 20 requests "met" a 250 ms bound at c = 2306), and the
# first round is a ramp (the i-th of c simultaneous requests waits for i - 1): four rounds make it a quarter.
ROUNDS_PER_WORKER = 4
# A failed request counts as this slow: above any bound, but finite (the intervals skip inf and NaN).
FAILED_REQUEST_S = 1e9
# Levels a search may try at most (bracket up and down, then bisect), for the session's upper bound.
_MAX_LEVELS_CONCURRENCY = 2 * math.ceil(math.log2(MAX_CONCURRENCY)) + 1
_MAX_LEVELS_RATE = (
    math.ceil(math.log2(MAX_RATE)) + RATE_HALVINGS + math.ceil(math.log2(1 / RATE_RESOLUTION)) + 2
)


class Verdict(StrEnum):
    MEETS = "meets"
    FAILS = "fails"
    UNSURE = "unsure"  # not sure yet: more requests at the same level


SloMetric = str  # "e2e" | "ttft" | "tpot": the [slo] objectives e2e_s, ttft_s, tpot_s


def slo_bounds(slo: SloConfig) -> dict[SloMetric, float]:
    """The objectives [slo] gives, by metric name."""
    given = {"e2e": slo.e2e_s, "ttft": slo.ttft_s, "tpot": slo.tpot_s}
    return {name: bound for name, bound in given.items() if bound is not None}


@dataclass(frozen=True, slots=True)
class MetricJudgement:
    """One objective at one level: its percentile's interval against its bound."""

    metric: SloMetric
    bound_s: float
    interval: QuantileInterval
    verdict: Verdict

    @property
    def ratio(self) -> float:
        """How close to its bound the estimate is (for naming the binding objective)."""
        return (self.interval.estimate or math.inf) / self.bound_s


def judge_metric(metric: SloMetric, values: Sequence[float], bound_s: float, q: float) -> MetricJudgement:
    """'meets' when the interval's upper bound is within `bound_s`, 'fails' when its lower bound is above
    it, else 'unsure' (including a side the sample cannot bound yet)."""
    iv = quantile_interval(values, q)
    if iv.hi is not None and iv.hi <= bound_s:
        verdict = Verdict.MEETS
    elif iv.lo is not None and iv.lo > bound_s:
        verdict = Verdict.FAILS
    else:
        verdict = Verdict.UNSURE
    return MetricJudgement(metric, bound_s, iv, verdict)


def judge(
    samples: Mapping[SloMetric, Sequence[float]], bounds: Mapping[SloMetric, float], q: float
) -> tuple[Verdict, list[MetricJudgement]]:
    """Every objective at one level: fails when one fails, meets when all meet, else unsure."""
    judged = [judge_metric(m, samples.get(m, ()), bound, q) for m, bound in bounds.items()]
    verdicts = {j.verdict for j in judged}
    if Verdict.FAILS in verdicts:
        return Verdict.FAILS, judged
    if verdicts == {Verdict.MEETS}:
        return Verdict.MEETS, judged
    return Verdict.UNSURE, judged


def binding(judged: Sequence[MetricJudgement]) -> MetricJudgement:
    """The objective closest to (or furthest over) its bound: the one capacity.csv reports."""
    return max(judged, key=lambda j: j.ratio)


# ---------------------------------------------------------------------------------------- the levels

Level = int | float


class Bracket:
    """Which level to try next: bracket (double up from `start` while it meets, halve down while it fails),
    then bisect between the largest level that met (`low`) and the smallest that failed (`high`).
    `kind`: 'concurrency' (integers, down to neighbours) or 'rate' (down to `RATE_RESOLUTION`)."""

    def __init__(self, kind: str, start: Level) -> None:
        self.kind = kind
        self.start: Level = int(start) if kind == "concurrency" else float(start)
        self.ceiling: Level = MAX_CONCURRENCY if kind == "concurrency" else MAX_RATE
        self.floor: Level = 1 if kind == "concurrency" else self.start / 2**RATE_HALVINGS
        self.low: Level | None = None  # the largest level that met
        self.high: Level | None = None  # the smallest level that failed
        self.stop_reason = ""

    def tell(self, level: Level, meets: bool) -> None:
        if meets:
            self.low = level if self.low is None else max(self.low, level)
        else:
            self.high = level if self.high is None else min(self.high, level)

    def next_level(self) -> Level | None:
        """The next level to try; None when the search is over (`stop_reason` says why)."""
        low, high = self.low, self.high
        if low is None and high is None:
            return self.start
        if high is None:
            assert low is not None
            if low >= self.ceiling:
                return self._stop("ceiling")
            return self._level(min(low * 2, self.ceiling))
        if low is None:
            down = high // 2 if self.kind == "concurrency" else high / 2
            if down < self.floor:
                return self._stop("lowest_fails")
            return self._level(down)
        if self._resolved(low, high):
            return self._stop("resolved")
        return self._level((low + high) // 2 if self.kind == "concurrency" else (low + high) / 2)

    def _resolved(self, low: Level, high: Level) -> bool:
        if self.kind == "concurrency":
            return high - low <= 1
        return high - low <= RATE_RESOLUTION * low

    def _level(self, value: Level) -> Level:
        if self.kind == "concurrency":
            return int(value)
        return float(f"{value:.4g}")  # rates to four significant digits: readable levels

    def _stop(self, reason: str) -> Level | None:
        """No next level: the search is over, for `reason`."""
        self.stop_reason = reason
        return None


# ---------------------------------------------------------------------------------------- one search


@dataclass(slots=True)
class Step:
    """One level tried: its verdict, whether its interval decided it, and the requests it took."""

    level: Level
    verdict: Verdict
    decided: bool
    n: int
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        extra = "".join(f", {n}" for n in ([*self.notes] if self.decided else ["undecided", *self.notes]))
        return f"{_level_text(self.level)} {self.verdict} (n={self.n}{extra})"


def _level_text(level: Level | None) -> str:
    return "" if level is None else f"{level:g}"


@dataclass(slots=True)
class _LevelData:
    """What the cells at the current level measured so far (pooled)."""

    level: Level
    samples: dict[SloMetric, list[float]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    cells: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    first_count: int = 0  # timed requests of the level's first cell
    server: bool = False
    undecided_flag: bool = False  # a client or host flag: the verdict stands, not decided

    @property
    def n(self) -> int:
        return max((len(v) for v in self.samples.values()), default=0)


class Search:
    """The search of one resource configuration and input size: its cells, one at a time."""

    def __init__(self, template: Cell, preset: Preset) -> None:
        assert preset.slo is not None
        self.template = template
        self.load: LoadConfig = preset.load
        self.slo = preset.slo
        self.bounds = slo_bounds(preset.slo)
        self.q = preset.slo.percentile / 100
        self.kind = "rate" if preset.load.mode == "open" else "concurrency"
        self.bracket = Bracket(self.kind, preset.load.levels[0])
        self.steps: list[Step] = []
        self.cells: list[int] = []
        self.current: _LevelData | None = None
        self.outstanding: Cell | None = None
        self.pending_requests: int | None = None  # the next cell's request count (None: the preset's)
        self.best: tuple[_LevelData, list[MetricJudgement]] | None = None  # the largest level that met
        self.last_row: dict[str, Any] = {}  # the latest cells.csv row (its model and host)
        self.done = False
        self.stop_reason = ""
        self.reason = ""

    @property
    def container_group(self) -> int:
        return self.template.container_group

    def request_cap(self, first_count: int) -> int:
        """The most timed requests one level may take before it is decided conservatively: eight times the
        level's first cell, and at least twice what a bounded interval of the percentile needs."""
        return max(8 * max(first_count, 1), 2 * samples_for_bounded(self.q))

    def next_cell(self, index: int) -> Cell | None:
        """The next cell (numbered `index`), or None when the search is over."""
        if self.done:
            return None
        if self.current is None:
            level = self.bracket.next_level()
            if level is None:
                self._end(self.bracket.stop_reason)
                return None
            self.current = _LevelData(level)
            self.pending_requests = None
        level = self.current.level
        requests = self.pending_requests
        base = requests if requests is not None else self.load.requests
        if self.kind == "concurrency" and base is not None and base < ROUNDS_PER_WORKER * int(level):
            requests = ROUNDS_PER_WORKER * int(level)
        cell = replace(
            self.template,
            index=index,
            concurrency=int(level) if self.kind == "concurrency" else None,
            rate=float(level) if self.kind == "rate" else None,
            requests=requests,
        )
        self.outstanding = cell
        self.cells.append(index)
        return cell

    def observe(self, event: RequestDone) -> None:
        """One answer of the outstanding cell: its values of each objective (warm-up left out)."""
        if event.warmup or self.current is None:
            return
        row = event.row
        for metric in self.bounds:
            value = _metric_value(metric, event, row)
            if value is not None:
                self.current.samples.setdefault(metric, []).append(value)

    def record(self, finished: CellFinished) -> bool:
        """The outstanding cell finished. Returns False when it sent no request at all (its target did not
        start, its inputs could not be made): the search cannot go on."""
        self.outstanding = None
        current = self.current
        assert current is not None
        row = self.last_row = finished.summary
        timed = _int(row.get("n")) + _int(row.get("errors"))
        current.rows.append(row)
        current.cells.append(finished.cell_index)
        if timed == 0:
            self.reason = f"cell {finished.cell_index}: {finished.status}" + (
                f" ({finished.reason})" if finished.reason else ""
            )
            self._end("no_requests")
            return False
        if not current.first_count:
            current.first_count = timed
        flags = {f for f in str(row.get("saturation") or "").split("+") if f}
        if "server" in flags:
            current.server = True
        if flags & {"client", "host"}:
            current.undecided_flag = True
        for f in sorted(flags):
            note = f"{f} saturated"
            if note not in current.notes:
                current.notes.append(note)
        self._decide(current)
        return True

    def _decide(self, current: _LevelData) -> None:
        verdict, judged = judge(current.samples, self.bounds, self.q)
        decided = not current.undecided_flag
        if current.server:
            verdict, decided = Verdict.FAILS, decided
        elif verdict == Verdict.UNSURE:
            cap = self.request_cap(current.first_count)
            have = current.n
            if have < cap:
                needed = max((j.interval.n_needed or 0) for j in judged)
                self.pending_requests = max(1, min(cap - have, max(needed - have, have)))
                return  # the same level again, with more requests
            verdict, decided = Verdict.FAILS, False  # at the cap: conservatively, it fails
        self.steps.append(Step(current.level, verdict, decided, current.n, list(current.notes)))
        meets = verdict == Verdict.MEETS
        self.bracket.tell(current.level, meets)
        if meets and (self.best is None or current.level >= self.best[0].level):
            self.best = (current, judged)
        self.current = None
        self.pending_requests = None

    def _end(self, stop_reason: str) -> None:
        self.done = True
        self.current = None
        self.outstanding = None
        self.stop_reason = stop_reason
        if not self.reason:
            self.reason = _STOP_REASONS.get(stop_reason, stop_reason)

    def end(self, stop_reason: str, reason: str) -> None:
        """End the search from outside (its container group's target could not run a cell)."""
        self.reason = reason
        self._end(stop_reason)

    def capacity_row(self) -> dict[str, Any]:
        """The search's capacity.csv row (session.schema.CAPACITY_COLUMNS)."""
        t = self.template
        any_row = self.best[0].rows[-1] if self.best else self.last_row
        row: dict[str, Any] = {
            "model_name": any_row.get("model_name"),
            "host": any_row.get("host"),
            "host_class": any_row.get("host_class"),
            "cpu_cores": t.cpus,
            "mem_cap_gb": t.memory_gb,
            "gpu_mode": gpu_mode(t.gpus),
            "gpus": t.gpus,
            "repeat_idx": t.repeat_idx,
            "container_idx": t.container_group,
            "input_scale": t.input_scale,
            "pixels": any_row.get("pixels"),
            "token_len": t.token_len,
            "output_len": t.output_len,
            "load_kind": self.kind,
            "max_load": self.bracket.low,
            "next_load": self.bracket.high,
            "slo_percentile": self.slo.percentile,
            "decided": all(s.decided for s in self.steps) and self.stop_reason != "no_requests",
            "stop_reason": self.stop_reason,
            "reason": self.reason,
            "steps": "; ".join(s.text() for s in self.steps),
            "cells": " ".join(str(i) for i in self.cells),
        }
        if self.best is not None:
            data, judged = self.best
            j = binding(judged)
            rps = _pooled_throughput(data.rows)
            row |= {
                "slo_metric": j.metric,
                "slo_bound_s": j.bound_s,
                "slo_value_s": j.interval.estimate,
                "slo_lo_s": j.interval.lo,
                "slo_hi_s": j.interval.hi,
                "slo_n": j.interval.n,
                "throughput_rps": rps,
                "throughput_per_core": rps / t.cpus if rps is not None and t.cpus else None,
            }
        elif self.bounds:
            metric, bound = max(self.bounds.items(), key=lambda kv: kv[1])
            row |= {"slo_metric": metric, "slo_bound_s": bound}
        return row


_STOP_REASONS = {
    "resolved": "bracketed and bisected to the resolution",
    "ceiling": "the largest level a preset may ask still meets the SLO",
    "lowest_fails": "even the lowest level tried fails the SLO",
    "no_requests": "no request could be sent",
}


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _metric_value(metric: SloMetric, event: RequestDone, row: Mapping[str, Any]) -> float | None:
    """One request's value of an objective; a failed request (or an answer that lacks the value) counts
    as slower than any bound; None: not counted (TPOT of a one-token answer, which has no decode step)."""
    if not event.ok:
        return FAILED_REQUEST_S
    if metric == "e2e":
        value = event.latency_s
    elif metric == "ttft":
        value = row.get("ttft_s")
    else:
        value = row.get("tpot_s")
        if value is None and row.get("output_tokens") == 1:
            return None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else FAILED_REQUEST_S


def _pooled_throughput(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The answered requests per second of a level's cells together: their answers over their windows."""
    answered = 0.0
    window = 0.0
    for r in rows:
        rps, n = r.get("throughput_rps"), _int(r.get("n"))
        if isinstance(rps, int | float) and rps > 0 and n:
            answered += n
            window += n / rps
    return answered / window if window > 0 else None


# ---------------------------------------------------------------------------------------- the order


class SearchOrder:
    """A `CellOrder` over capacity searches: one per (container group, input size, output length) of the
    plan, run one after another within their group's container. `emit` sends each search's
    `CapacityFound` once its cell's `CellFinished` has gone out (at the next `next_cell`, or `flush`)."""

    chooses_as_it_measures = True

    def __init__(self, preset: Preset, plan: Sequence[Cell], emit: Callable[[Event], None]) -> None:
        if preset.slo is None:
            raise ValueError("load.search = 'slo' needs an [slo]")
        self.preset = preset
        self._emit = emit
        seen: dict[tuple[Any, ...], Search] = {}
        for cell in plan:
            key = (cell.container_group, cell.input_scale, cell.token_len, cell.output_len)
            if key not in seen:
                seen[key] = Search(cell, preset)
        self.searches = list(seen.values())
        self._by_cell: dict[int, Search] = {}
        self._next_index = 0
        self._found: list[dict[str, Any]] = []

    @property
    def upper_bound(self) -> int:
        """The most cells the searches can take (each level up to its request cap)."""
        per_level = 1 + math.ceil(math.log2(max(2, self._cap_over_first())))
        levels = _MAX_LEVELS_RATE if self.preset.load.mode == "open" else _MAX_LEVELS_CONCURRENCY
        return len(self.searches) * levels * per_level

    def _cap_over_first(self) -> float:
        first = self.preset.load.requests
        if first is None:  # a duration per cell: its count is not known up front
            return 2 * samples_for_bounded(self.searches[0].q) if self.searches else 8
        return self.searches[0].request_cap(first) / first if self.searches else 8

    def describe(self) -> dict[str, Any]:
        """The search as meta.json records it."""
        slo = self.preset.slo
        assert slo is not None
        return {
            "kind": "slo",
            "load_kind": "rate" if self.preset.load.mode == "open" else "concurrency",
            "start": self.preset.load.levels[0],
            "percentile": slo.percentile,
            "bounds_s": slo_bounds(slo),
            "searches": len(self.searches),
            "max_cells": self.upper_bound,
            "rate_resolution": RATE_RESOLUTION,
        }

    def next_cell(self, group: int | None = None) -> Cell | None:
        self.flush()
        for search in self.searches:
            if search.done or (group is not None and search.container_group != group):
                continue
            if search.outstanding is not None:
                return None  # its cell has not finished (a group draining after its target failed)
            cell = search.next_cell(self._next_index)
            if cell is None:
                self._found.append(search.capacity_row())
                continue
            self._next_index += 1
            self._by_cell[cell.index] = search
            return cell
        self.flush()
        return None

    def next_group(self) -> list[Cell]:
        raise NotImplementedError("a capacity search makes its cells as it goes: it runs on one host")

    def observe(self, event: RequestDone) -> None:
        search = self._by_cell.get(event.cell_index)
        if search is not None and search.outstanding is not None:
            search.observe(event)

    def record(self, finished: CellFinished) -> None:
        search = self._by_cell.pop(finished.cell_index, None)
        if search is None or search.outstanding is None:
            return
        if not search.record(finished):
            # nothing was sent (the target did not start): every search of its container group ends so
            self._found.append(search.capacity_row())
            for other in self.searches:
                if other is not search and other.container_group == search.container_group and not other.done:
                    other.end("no_requests", f"{search.reason} (see cell {finished.cell_index})")
                    self._found.append(other.capacity_row())

    def flush(self) -> None:
        """Send the capacity rows of the searches that have ended."""
        found, self._found = self._found, []
        for row in found:
            self._emit(CapacityFound(row))

    def finished_searches(self) -> int:
        return sum(1 for s in self.searches if s.done)
