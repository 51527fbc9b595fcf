"""Load patterns: how many requests, sent how, and when to stop.

- closed loop: `concurrency` workers, each sending its next request as soon as the last one answered;
- open loop: arrivals at `rate` per second (constant spacing, or Poisson with a seeded generator; rates
  below 1/s are fine for slow models). Latency is counted from each request's SCHEDULED send time, so a
  server that falls behind shows it (no coordinated omission); `scheduled_delay_s` says how late the
  request actually left. `concurrency` caps the connections (requests in flight); arrivals that find every
  connection busy wait for one, and that wait is part of their latency.

Either pattern sends `warmup` requests first (kept, marked), then `requests` timed requests or as many as
fit in `duration_s`, optionally stopping early once what the preset asks is known well enough: `[load.stop]`
goals (`stop_goals`, judged by `tui_profiler.stats.StopJudge`), of which `[load.stable_ci]` is one (the mean).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from tui_profiler.config.model import LOAD_DEFAULTS, Arrival, LoadConfig, LoadMode, StableCI, Transport
from tui_profiler.session.schema import StopReason
from tui_profiler.stats import StopGoal, StopJudge

# The rule to stop a cell early is the preset's `load.stable_ci` (config.model.StableCI).
StopWhenStable = StableCI
_D = LOAD_DEFAULTS  # every default is the preset's (config.model.LoadConfig)


@dataclass(frozen=True, slots=True)
class LoadPattern:
    """One cell's load: the preset's `[load]` at the cell's concurrency level or rate (`from_config`).

    It checks nothing itself: the rules are the preset's (`config.model.LoadConfig`), validated once when
    the preset is read. A pattern built by hand (a benchmark, a test) is its builder's to get right."""

    mode: LoadMode = _D.mode
    concurrency: int = 1  # closed: workers; open: connections (most requests in flight)
    rate: float | None = None  # open loop: arrivals per second
    arrival: Arrival = _D.arrival
    requests: int | None = _D.requests  # timed requests (None: until duration_s)
    duration_s: float | None = _D.duration_s  # timed phase length (with requests: whichever comes first)
    warmup: int = _D.warmup
    timeout_s: float = _D.timeout_s
    stop_when_stable: StableCI | None = _D.stable_ci  # [load.stable_ci]: the mean's goal
    stop_goals: tuple[StopGoal, ...] = ()  # [load.stop]: every goal met ends the cell early
    seed: int = _D.seed
    transport: Transport = _D.transport  # "auto": the lean HTTP/1.1 client for http://, aiohttp for https://
    drain_s: float | None = _D.drain_s  # open loop: how long queued arrivals may be sent after the schedule
    processes: int = _D.processes  # closed loop: split the workers over this many client processes

    @classmethod
    def from_config(cls, load: LoadConfig, *, concurrency: int | None, rate: float | None) -> LoadPattern:
        """The pattern of one cell: `load` (validated) at this concurrency level (closed loop) or rate (open
        loop, whose connections are `load.connections`)."""
        given = {name: getattr(load, name) for name in _FIELDS_OF_THE_CONFIG}
        rules = load.stop or []
        # [load.stop]'s caps join load.requests / load.duration_s: the first reached ends the cell
        given["requests"] = (
            _smallest([load.requests, *(r.max_requests for r in rules)]) if rules else load.requests
        )
        given["duration_s"] = _smallest([load.duration_s, *(r.max_duration_s for r in rules)])
        return cls(
            **given,
            concurrency=int(concurrency or 1) if load.mode == "closed" else load.connections,
            rate=rate,
            stop_when_stable=load.stable_ci,
            stop_goals=tuple(
                StopGoal(r.metric, r.rel_halfwidth, r.confidence, r.min_requests) for r in rules
            ),
        )

    def goals(self) -> tuple[StopGoal, ...]:
        """Every goal that may end the cell early: `stop_goals`, and `stop_when_stable` as the mean's."""
        stable = self.stop_when_stable
        mean = () if stable is None else (StopGoal("mean", stable.rel_halfwidth, 0.95, stable.min_requests),)
        return (*self.stop_goals, *mean)

    def stop_judge(self) -> StopJudge | None:
        """A fresh judge of this pattern's goals for one run; None without any."""
        goals = self.goals()
        return StopJudge(goals) if goals else None

    def ended(self, by_count: bool) -> StopReason:
        """Why a run that was not stopped early ended: its request count, or its time, ran out."""
        if self.goals():
            return StopReason.MAX_REQUESTS if by_count else StopReason.MAX_DURATION
        return StopReason.REQUESTS if by_count else StopReason.DURATION


def _smallest(values: list[float | None] | list[int | None]) -> Any:
    given = [v for v in values if v is not None]
    return min(given) if given else None


# The pattern's fields that are the config's own value under the same name; the others are the cell's
# (`concurrency` is one of the config's levels, or its connections) or renamed (`stable_ci`).
_PER_CELL = ("concurrency", "rate", "stop_when_stable", "stop_goals")
_FIELDS_OF_THE_CONFIG = tuple(
    f.name for f in fields(LoadPattern) if f.name in LoadConfig.model_fields and f.name not in _PER_CELL
)


def arrival_offsets(pattern: LoadPattern) -> Iterator[float]:
    """Scheduled send times (seconds from the start of the timed phase) of an open loop, in order.
    Ends after `requests` arrivals or past `duration_s`, whichever comes first."""
    assert pattern.rate is not None
    rng = np.random.default_rng(pattern.seed)
    mean_gap = 1.0 / pattern.rate
    t = 0.0
    n = 0
    while True:
        if pattern.requests is not None and n >= pattern.requests:
            return
        if pattern.duration_s is not None and t >= pattern.duration_s:
            return
        yield t
        n += 1
        # Constant spacing (n / rate: no drift from summing rounded gaps), or exponential gaps (a Poisson
        # process); one draw per arrival is far below the cost of a send.
        t = n / pattern.rate if pattern.arrival == "constant" else t + float(rng.exponential(mean_gap))


def pattern_for(load: LoadConfig, *, concurrency: int | None, rate: float | None) -> LoadPattern:
    """The LoadPattern of one cell (see `LoadPattern.from_config`)."""
    return LoadPattern.from_config(load, concurrency=concurrency, rate=rate)
