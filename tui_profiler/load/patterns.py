"""Load patterns: how many requests, sent how, and when to stop.

- closed loop: `concurrency` workers, each sending its next request as soon as the last one answered;
- open loop: arrivals at `rate` per second (constant spacing, or Poisson with a seeded generator; rates
  below 1/s are fine for slow models). Latency is counted from each request's SCHEDULED send time, so a
  server that falls behind shows it (no coordinated omission); `scheduled_delay_s` says how late the
  request actually left. `concurrency` caps the connections (requests in flight); arrivals that find every
  connection busy wait for one, and that wait is part of their latency.

Either pattern sends `warmup` requests first (kept, marked), then `requests` timed requests or as many as
fit in `duration_s`, optionally stopping early once the mean is known well enough (`StopWhenStable`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import get_args

import numpy as np

from tui_profiler.config.model import LOAD_DEFAULTS, Arrival, LoadConfig, LoadMode, StableCI, Transport
from tui_profiler.stats import t_quantile_975

MODES: tuple[str, ...] = get_args(LoadMode)
ARRIVALS: tuple[str, ...] = get_args(Arrival)
TRANSPORTS: tuple[str, ...] = get_args(Transport)


# The rule to stop a cell early is the preset's `load.stable_ci` (config.model.StableCI).
StopWhenStable = StableCI
_D = LOAD_DEFAULTS  # every default is the preset's (config.model.LoadConfig)


@dataclass(frozen=True, slots=True)
class LoadPattern:
    mode: str = _D.mode
    concurrency: int = 1  # closed: workers; open: connections (most requests in flight)
    rate: float | None = None  # open loop: arrivals per second
    arrival: str = _D.arrival
    requests: int | None = _D.requests  # timed requests (None: until duration_s)
    duration_s: float | None = _D.duration_s  # timed phase length (with requests: whichever comes first)
    warmup: int = _D.warmup
    timeout_s: float = _D.timeout_s
    stop_when_stable: StableCI | None = _D.stable_ci
    seed: int = _D.seed
    transport: str = _D.transport  # "auto": the lean HTTP/1.1 client for http://, aiohttp for https://
    drain_s: float | None = (
        _D.drain_s
    )  # open loop: how long queued arrivals may still be sent after the schedule
    processes: int = _D.processes  # closed loop: split the workers over this many client processes

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"load.mode: {self.mode!r} — allowed: {', '.join(MODES)}")
        if self.concurrency < 1:
            raise ValueError(f"load.concurrency: {self.concurrency!r} — an integer >= 1")
        if self.mode == "open":
            if self.rate is None or not (self.rate > 0):
                raise ValueError(f"load.rate: {self.rate!r} — an open loop needs a rate > 0 (requests/s)")
            if self.arrival not in ARRIVALS:
                raise ValueError(f"load.arrival: {self.arrival!r} — allowed: {', '.join(ARRIVALS)}")
        if self.requests is None and self.duration_s is None:
            raise ValueError("load.requests: None — give requests, duration_s, or both")
        if self.requests is not None and self.requests < 0:
            raise ValueError(f"load.requests: {self.requests!r} — an integer >= 0")
        if self.duration_s is not None and not (self.duration_s > 0):
            raise ValueError(f"load.duration_s: {self.duration_s!r} — a number > 0")
        if self.warmup < 0:
            raise ValueError(f"load.warmup: {self.warmup!r} — an integer >= 0")
        if not (self.timeout_s > 0):
            raise ValueError(f"load.timeout_s: {self.timeout_s!r} — a number > 0")
        if self.processes < 1:
            raise ValueError(f"load.processes: {self.processes!r} — an integer >= 1")
        if self.processes > 1 and self.mode != "closed":
            raise ValueError(
                f"load.processes: {self.processes!r} — several client processes serve the closed loop only"
            )
        if self.transport not in TRANSPORTS:
            raise ValueError(f"load.transport: {self.transport!r} — allowed: {', '.join(TRANSPORTS)}")


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


class StabilityTracker:
    """Running mean and variance (Welford) of timed latencies; `stable()` applies the StopWhenStable rule."""

    __slots__ = ("m2", "mean", "n", "rule")

    def __init__(self, rule: StopWhenStable) -> None:
        self.rule = rule
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, x: float) -> bool:
        """Add one latency; True once the rule is met."""
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)
        return self.stable()

    def halfwidth(self) -> float:
        if self.n < 2:
            return math.inf
        sd = math.sqrt(self.m2 / (self.n - 1))
        return t_quantile_975(self.n - 1) * sd / math.sqrt(self.n)

    def stable(self) -> bool:
        if self.n < self.rule.min_requests or self.mean <= 0:
            return False
        return self.halfwidth() / self.mean < self.rule.rel_halfwidth


def pattern_for(load: LoadConfig, *, concurrency: int | None, rate: float | None) -> LoadPattern:
    """The LoadPattern of one cell: the preset's load section at this concurrency level or rate (an open
    loop's connections are `load.connections`)."""
    return LoadPattern(
        mode=load.mode,
        concurrency=int(concurrency or 1) if load.mode == "closed" else load.connections,
        rate=rate,
        arrival=load.arrival,
        requests=load.requests,
        duration_s=load.duration_s,
        warmup=load.warmup,
        timeout_s=load.timeout_s,
        stop_when_stable=load.stable_ci,
        seed=load.seed,
        transport=load.transport,
        drain_s=load.drain_s,
        processes=load.processes,
    )
