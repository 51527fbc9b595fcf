"""Stop benchmark: what `[load.stop]` saves, and what judging it costs.

Three local servers (`testing.known_server`, each its own process) serve one request at a time with
service times drawn from lognormals of the same median (2 ms) and spreads 0.1, 0.3, 0.6: three "cells"
whose percentile intervals narrow at very different rates. Measured, in one run:
- with `[load.stop]` (p50 within ±5%, 95%): the timed requests and wall time each cell took;
- with a fixed count chosen so that every cell reaches that width: the count the noisiest cell needed,
  for every cell (a preset with one `requests` must pick it);
- the ratio of the two sweeps' requests and wall times (same run, interleaved);
- the stop judge's own cost per request (`stats.StopJudge.add`, a judgement every max(4, n/20)), over
  5,000 synthetic latencies, for a p50, a p99 and a mean goal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from tui_profiler.bench.core import BenchReport, measured, median, ratio
from tui_profiler.testing.known_server import known_server

MEDIAN_S = 0.002
SPREADS = (0.1, 0.3, 0.6)
GOAL = ("p50", 0.05)


def _cell(base: str, *, requests: int, stop: bool) -> tuple[int, float]:

    from tui_profiler.load.client import run, run_load
    from tui_profiler.load.inputs import InputSpec
    from tui_profiler.load.patterns import LoadPattern
    from tui_profiler.load.template import build_payload, default_template
    from tui_profiler.stats import StopGoal

    tpl = default_template()
    payload = build_payload(InputSpec(kind="tensor", base_size=(16,), dtype="float32"), tpl)
    goals = (StopGoal(GOAL[0], GOAL[1], min_requests=20),) if stop else ()
    pattern = LoadPattern(concurrency=1, requests=requests, warmup=2, stop_goals=goals, transport="raw")
    t0 = time.perf_counter()
    results = run(run_load(base, tpl, payload, pattern))
    return sum(not r.warmup for r in results), time.perf_counter() - t0


def judge_ns_per_request(metric: str, n: int = 5000) -> float:
    import numpy as np

    from tui_profiler.stats import StopGoal, StopJudge

    values = np.random.default_rng(1).lognormal(0, 0.3, n).tolist()
    judge = StopJudge([StopGoal(metric, 1e-9)])  # never met: every judgement runs to the end
    t0 = time.perf_counter()
    for x in values:
        judge.add(x)
    return (time.perf_counter() - t0) / n * 1e9


def run_stop_bench(report: BenchReport, *, quick: bool, say: Callable[[str], None]) -> None:
    rounds = 1 if quick else 3
    cap = 1500 if quick else 4000
    per_round: list[dict[str, Any]] = []
    with ExitStack() as servers:
        bases = {s: servers.enter_context(known_server(f"lognormal:{MEDIAN_S}:{s}")) for s in SPREADS}
        for i in range(rounds):
            stopped = {s: _cell(bases[s], requests=cap, stop=True) for s in SPREADS}
            fixed_n = max(n for n, _ in stopped.values())
            fixed = {s: _cell(bases[s], requests=fixed_n, stop=False) for s in SPREADS}
            per_round.append({"stopped": stopped, "fixed_n": fixed_n, "fixed": fixed})
            say(f"stop: round {i + 1}/{rounds}: " + ", ".join(f"σ={s}: {stopped[s][0]}" for s in SPREADS))
    add = report.measures.append
    for s in SPREADS:
        add(measured("stop", f"timed requests to p50 ±5%, σ={s}", "[load.stop]",
                     [r["stopped"][s][0] for r in per_round], "requests"))  # fmt: skip
    req_stop = [sum(n for n, _ in r["stopped"].values()) for r in per_round]
    req_fixed = [r["fixed_n"] * len(SPREADS) for r in per_round]
    wall_stop = [sum(w for _, w in r["stopped"].values()) for r in per_round]
    wall_fixed = [sum(w for _, w in r["fixed"].values()) for r in per_round]
    add(measured("stop", "requests of the 3-cell sweep", "[load.stop]", req_stop, "requests"))
    add(measured("stop", "requests of the 3-cell sweep", "fixed count (the noisiest cell's need, every cell)",
                 req_fixed, "requests"))  # fmt: skip
    add(measured("stop", "requests, stop / fixed", "[load.stop]",
                 [ratio(a, b) for a, b in zip(req_stop, req_fixed, strict=True)], "x"))  # fmt: skip
    add(measured("stop", "wall time, stop / fixed", "[load.stop]",
                 [ratio(a, b) for a, b in zip(wall_stop, wall_fixed, strict=True)], "x",
                 note=f"stop {median(wall_stop) or 0:.2f} s vs fixed {median(wall_fixed) or 0:.2f} s (medians)"))  # fmt: skip
    for metric in ("p50", "p99", "mean"):
        add(measured("stop", f"judge cost per request, {metric} goal, 5,000 requests", "stats.StopJudge",
                     [judge_ns_per_request(metric) for _ in range(3)], "ns"))  # fmt: skip
    report.note(
        "stop",
        f"one-at-a-time stdlib server, service lognormal (median {MEDIAN_S * 1e3:g} ms, σ {SPREADS}); "
        f"goal p50 ±{GOAL[1]:.0%} at 95%, cap {cap}; {rounds} round(s)",
    )
