"""The target's own Prometheus metrics, scraped during each cell (`[target] metrics`): its queue length,
running batch, KV-cache use, as the server itself counts them.

`text_to_rows` turns one scrape (the text exposition format, parsed by `prometheus_client`'s parser, none
of our own) into rows of server_metrics.csv: gauges as read; counters as rates per second against the
previous scrape (metric name suffixed ":rate"; none on the first scrape); histograms and summaries keep
every sample (`_bucket` with its `le` label, `_sum`, `_count`). `include` keeps the metrics named there
(a family name or a sample name; empty: every metric). `MetricsScraper` polls the endpoint every
`interval_s` on the event loop (aiohttp, short timeouts) and hands each scrape's rows on as one
`ServerMetrics` event; `summary()` gives each chosen metric's mean and peak over the cell (cells.csv
`server_metrics`). A scrape that fails is skipped and counted, never a zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tui_profiler.events import ServerMetrics

RATE_SUFFIX = ":rate"


@dataclass(slots=True)
class MetricRow:
    metric: str
    labels: str  # the labels as JSON (sorted keys), "" when none
    value: float


@dataclass(slots=True)
class _Counters:
    """The previous scrape's counter values, for rates: (metric, labels) -> (t, value)."""

    last: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)


def _labels(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":")) if labels else ""


def _wanted(include: Sequence[str], family: str, sample: str) -> bool:
    return not include or family in include or sample in include


def text_to_rows(
    text: str, t: float, include: Sequence[str] = (), counters: _Counters | None = None
) -> list[MetricRow]:
    """One scrape's rows (see the module). `t`: when it was taken (seconds, any origin: rates only use
    differences); `counters`: the state that turns counters into rates across calls (None: no rates)."""
    from prometheus_client.parser import text_string_to_metric_families

    rows: list[MetricRow] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not _wanted(include, family.name, sample.name):
                continue
            value = float(sample.value)
            labels = _labels(dict(sample.labels))
            if sample.name.endswith("_created"):
                continue  # a counter's or histogram's creation time, not a measurement
            if family.type == "counter":
                if counters is None:
                    continue
                key = (sample.name, labels)
                before = counters.last.get(key)
                counters.last[key] = (t, value)
                if before is not None and t > before[0] and value >= before[1]:
                    rows.append(
                        MetricRow(sample.name + RATE_SUFFIX, labels, (value - before[1]) / (t - before[0]))
                    )
                continue
            if math.isfinite(value):
                rows.append(MetricRow(sample.name, labels, value))
    return rows


def summarise(rows: Sequence[tuple[str, str, float]]) -> dict[str, dict[str, float | None]]:
    """Each metric's mean and peak over a cell's scrapes: {metric: {"mean", "peak"}}, over every value of
    every label set (a metric with several label sets mixes them: name one sample in `include` to keep
    it apart); histogram buckets and summary quantiles are left out (their `_sum` and `_count` say it)."""
    values: dict[str, list[float]] = {}
    for metric, labels, value in rows:
        if metric.endswith("_bucket") or '"quantile"' in labels:
            continue
        values.setdefault(metric, []).append(value)
    return {m: {"mean": sum(v) / len(v), "peak": max(v)} for m, v in sorted(values.items()) if v}


class MetricsScraper:
    """Polls `url` every `interval_s` while a cell's load runs (see the module); `emit` gets one
    `ServerMetrics` event per successful scrape."""

    def __init__(
        self,
        url: str,
        *,
        interval_s: float,
        include: Sequence[str],
        cell_index: int,
        emit: Callable[[ServerMetrics], None],
        t0: float | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self.url, self.interval_s, self.include = url, interval_s, tuple(include)
        self.cell_index, self.emit, self.timeout_s = cell_index, emit, timeout_s
        self.t0 = time.perf_counter() if t0 is None else t0
        self._counters = _Counters()
        self._rows: list[tuple[str, str, float]] = []
        self._task: asyncio.Task[None] | None = None
        self.scrapes = 0
        self.failures = 0
        self.last_error = ""

    async def scrape_once(self, session: Any) -> None:
        import aiohttp

        t = time.perf_counter()
        try:
            async with session.get(self.url, timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
            rows = text_to_rows(text, t, self.include, self._counters)
        except Exception as exc:  # a scrape that fails is skipped (the server may be busy), and counted
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            return
        self.scrapes += 1
        if rows:
            self._rows.extend((r.metric, r.labels, r.value) for r in rows)
            self.emit(
                ServerMetrics(
                    cell_index=self.cell_index,
                    t_s=t - self.t0,
                    rows=[[r.metric, r.labels, r.value] for r in rows],
                )
            )

    async def _run(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            while True:
                started = time.perf_counter()
                await self.scrape_once(session)
                await asyncio.sleep(max(0.0, self.interval_s - (time.perf_counter() - started)))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> dict[str, dict[str, float | None]]:
        """Stop polling, scrape once more (so a cell shorter than `interval_s` still has a first and a last
        scrape, and its counters a rate over the cell); each chosen metric's mean and peak over the cell."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            import aiohttp

            async with aiohttp.ClientSession() as session:
                await self.scrape_once(session)
        return summarise(self._rows)
