"""What the live screen shows, absorbed from the engine's event stream without Textual.

The engine calls `LiveState.ingest(event)` synchronously for every event (thousands per second when
requests are fast). Ingest only appends to bounded deques and bumps counters: O(1), no allocation that
grows with the run, and no message posted per event. The live screen reads a consistent view on a timer
(4-10 Hz), so the redraw rate is independent of the event rate and stale resource samples are simply
overwritten by newer ones.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tui_profiler import formatting
from tui_profiler.events import (
    CellFinished,
    CellStarted,
    ColdStartDone,
    ColdStartPhase,
    Event,
    LogMessage,
    MetaUpdated,
    RequestDone,
    ResourceSample,
    ServerMetrics,
    SessionFinished,
    SessionStarted,
)
from tui_profiler.session.schema import CellStatus, GenColumn
from tui_profiler.stats import QuantileInterval, quantile_interval, quantile_sorted

# History bounds: enough for a readable plot at 200 columns, small enough that 1,000,000 requests cost
# nothing more than 1,000.
LATENCY_POINTS = 4_000
SAMPLE_POINTS = 1_200
MAX_SERVER_METRICS = 64  # scraped metric names kept for the Live plot (a /metrics page can list hundreds)
LOG_LINES = 500
CELL_ROWS = 10_000  # cells.csv rows are small; a sweep of 10,000 cells is already extreme
# The running cell's p50 / p99 intervals cost ~10 ms over LATENCY_POINTS values (the order-statistic ranks
# and the dependence estimate): recomputed on the redraw timer at most this often, never per event.
INTERVAL_EVERY_S = 0.5


@dataclass(slots=True)
class LiveState:
    """The bounded, consumer-side view of one sweep."""

    clock: Callable[[], float] = time.perf_counter
    session_id: str = ""
    session_dir: str = ""
    preset_name: str = ""
    runtime: str = ""
    runtime_reason: str = ""
    n_cells: int = 0  # a capacity search's: an upper bound (`searching`)
    searching: bool = False  # a capacity search makes its cells as it goes: no fraction done, no ETA
    adaptive: dict[str, Any] = field(default_factory=dict)  # an adaptive plan's state (meta.json `adaptive`)
    resumed_cells: int = 0
    cells_done: int = 0
    cells_failed: int = 0
    current_cell: dict[str, Any] = field(default_factory=dict)
    current_index: int | None = None
    eta_s: float | None = None
    started_at: float | None = None
    finished: SessionFinished | None = None
    # Cold start of the current container: phase -> seconds (None = not available), in arrival order.
    cold_phases: dict[str, float | None] = field(default_factory=dict)
    cold_total_s: float | None = None
    enforced: dict[str, Any] = field(default_factory=dict)
    # Requests of the current cell: (t_s, latency_s), warm-up excluded from the statistics.
    latencies: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=LATENCY_POINTS))
    n_requests: int = 0  # whole session, timed + warm-up
    n_errors: int = 0
    cell_requests: int = 0
    cell_errors: int = 0
    last_error: str = ""
    # Generative cells (a request row with `ttft_s`): per request (t_s, ttft_s) and (t_s, ITL p50, p99).
    generative: bool = False  # the session has streamed a generative answer: the screen plots TTFT/ITL
    ttfts: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=LATENCY_POINTS))
    itls: deque[tuple[float, float | None, float | None]] = field(
        default_factory=lambda: deque(maxlen=LATENCY_POINTS)
    )
    # Resource samples of the current cell: (t_s, value); a None value means 'not available'.
    cpu: deque[tuple[float, float | None]] = field(default_factory=lambda: deque(maxlen=SAMPLE_POINTS))
    mem: deque[tuple[float, float | None]] = field(default_factory=lambda: deque(maxlen=SAMPLE_POINTS))
    vram: deque[tuple[float, float | None]] = field(default_factory=lambda: deque(maxlen=SAMPLE_POINTS))
    gpu_util: deque[tuple[float, float | None]] = field(default_factory=lambda: deque(maxlen=SAMPLE_POINTS))
    # the scraped server metrics ([target] metrics) of the current cell, by name in the order first seen:
    # each scrape's value of its first series; `server_metric` is the one plotted (`m` on Live cycles)
    server_metric: str = ""
    server_series: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    last_sample: ResourceSample | None = None
    finished_cells: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=CELL_ROWS))
    logs: deque[tuple[int, str, str]] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    # The running cell's p50 and p99 intervals (`latency_intervals`), and what they were computed from.
    latency_seq: int = 0  # latencies appended to the current cell's plot (a new cell starts again at 0)
    _intervals: tuple[QuantileInterval, QuantileInterval] | None = None
    _intervals_seq: int = -1
    _intervals_at: float = -1e18
    # Monotonic counters so a consumer can tell what changed since its last look.
    version: int = 0
    _cold_done: bool = False
    log_seq: int = 0
    cells_seq: int = 0
    events: int = 0

    @property
    def server_values(self) -> deque[tuple[float, float]]:
        """The plotted server metric's values in the current cell."""
        return self.server_series.get(self.server_metric) or deque()

    def next_server_metric(self, step: int = 1) -> str:
        """Plot the next (or, with -1, the previous) scraped metric; its name ("" when none was scraped)."""
        names = list(self.server_series)
        if names:
            at = names.index(self.server_metric) if self.server_metric in names else -step
            self.server_metric = names[(at + step) % len(names)]
            self.version += 1
        return self.server_metric

    def ingest(self, event: Event) -> None:
        """Absorb one event. Called synchronously by the engine; must stay cheap."""
        self.events += 1
        self.version += 1
        if type(event) is RequestDone:  # the hot path first
            self.n_requests += 1
            if event.warmup:
                return
            if event.cell_index != self.current_index:  # a fleet runs several cells at once: the plots
                self.n_errors += not event.ok  # follow the latest one, the totals count them all
                return
            self.cell_requests += 1
            if not event.ok:
                self.n_errors += 1
                self.cell_errors += 1
                self.last_error = event.error
            if event.ok and event.latency_s is not None and event.t_s is not None:
                self.latencies.append((event.t_s, event.latency_s))
                self.latency_seq += 1
                ttft = _number(event.row.get(GenColumn.TTFT_S)) if event.row else None
                if ttft is not None:
                    self.generative = True
                    self.ttfts.append((event.t_s, ttft))
                    row = event.row
                    self.itls.append(
                        (
                            event.t_s,
                            _number(row.get(GenColumn.ITL_P50_S)),
                            _number(row.get(GenColumn.ITL_P99_S)),
                        )
                    )
            return
        if type(event) is ResourceSample:
            if event.cell_index != self.current_index:
                return
            self.last_sample = event
            self.cpu.append((event.t_s, event.cpu_cores))
            self.mem.append((event.t_s, event.mem_bytes))
            self.vram.append((event.t_s, event.vram_bytes))
            self.gpu_util.append((event.t_s, event.gpu_util_pct))
            return
        if isinstance(event, ServerMetrics):
            if event.cell_index != self.current_index or not event.rows:
                return
            seen: set[str] = set()
            for metric, _, value in event.rows:
                name = str(metric)
                if name in seen:
                    continue  # a later series of the same metric (another label set)
                seen.add(name)
                series = self.server_series.get(name)
                if series is None:
                    if len(self.server_series) >= MAX_SERVER_METRICS:
                        continue
                    series = self.server_series[name] = deque(maxlen=SAMPLE_POINTS)
                series.append((event.t_s, float(value)))
            if not self.server_metric and self.server_series:
                self.server_metric = next(iter(self.server_series))
            return
        if isinstance(event, SessionStarted):
            self.session_id = event.session_id
            self.session_dir = event.session_dir
            self.preset_name = event.preset_name
            self.runtime = event.runtime
            self.runtime_reason = event.runtime_reason
            self.n_cells = event.n_cells
            self.adaptive = event.meta.get("adaptive") or {}
            self.searching = bool(event.meta.get("search") or self.adaptive)
            self.resumed_cells = event.resumed_cells
            self.cells_done = event.resumed_cells
            self.started_at = self.clock()
            self.generative = False
            self.log(
                "info",
                f"session {event.session_id}: {event.n_cells} cells on {event.runtime} "
                f"({event.runtime_reason})",
            )
        elif isinstance(event, CellStarted):
            self.current_index = event.cell_index
            self.current_cell = dict(event.cell)
            self.n_cells = event.n_cells or self.n_cells
            self.eta_s = event.eta_s
            # cells of one resource config share a container: its cold start stays on screen until the
            # next container's first phase arrives
            self.latencies.clear()
            self.latency_seq = 0
            self._intervals = None
            self._intervals_seq = -1
            self.ttfts.clear()
            self.itls.clear()
            self.cpu.clear()
            self.mem.clear()
            self.vram.clear()
            for series in self.server_series.values():
                series.clear()
            self.gpu_util.clear()
            self.last_sample = None
            self.cell_requests = 0
            self.cell_errors = 0
            where = f" on {event.host}" if event.host else ""
            self.log(
                "info",
                f"cell {event.cell_index + 1}/{event.n_cells}{where}: {formatting.cell_label(event.cell)}",
            )
        elif isinstance(event, ColdStartPhase | ColdStartDone) and event.cell_index != self.current_index:
            return
        elif isinstance(event, ColdStartPhase):
            if self._cold_done:  # a new container
                self.cold_phases = {}
                self.cold_total_s = None
                self.enforced = {}
                self._cold_done = False
            self.cold_phases[event.phase] = event.seconds
        elif isinstance(event, ColdStartDone):
            self.cold_phases = dict(event.phases)
            self.cold_total_s = event.total_s
            self.enforced = dict(event.enforced)
            self._cold_done = True
        elif isinstance(event, CellFinished):
            self.cells_done += 1
            if event.status != CellStatus.OK:
                self.cells_failed += 1
            row = dict(event.summary)
            row.setdefault("cell_index", event.cell_index)
            row["status"] = event.status
            row["reason"] = event.reason
            self.finished_cells.append(row)
            self.cells_seq += 1
            level = "info" if event.status == CellStatus.OK else "warning"
            tail = f": {event.reason}" if event.reason else ""
            where = f" on {event.host}" if event.host else ""
            self.log(level, f"cell {event.cell_index + 1}{where} {event.status}{tail}")
            explained = formatting.tail_line(row)  # CPU per request, throttling, the server's queue
            if explained:
                self.log("info", f"cell {event.cell_index + 1} tail: {explained}")
        elif isinstance(event, LogMessage):
            self.log(event.level, event.text)
        elif isinstance(event, MetaUpdated) and "adaptive" in event.fields:
            self.adaptive = event.fields["adaptive"] or {}
        elif isinstance(event, SessionFinished):
            self.finished = event
            self.eta_s = 0.0
            self.log(
                "info",
                f"session {event.status}: {event.n_cells} cells, {event.n_failed} failed, "
                + formatting.duration(event.wall_s),
            )

    def log(self, level: str, text: str) -> None:
        self.log_seq += 1
        self.logs.append((self.log_seq, level, text))

    # Views computed at redraw time (bounded work: at most LATENCY_POINTS values).

    def latency_stats(self) -> tuple[float | None, float | None]:
        """Running p50 and p99 of the current cell's recent timed requests (seconds)."""
        if not self.latencies:
            return None, None
        values = sorted(v for _, v in self.latencies)
        return quantile_sorted(values, 0.50), quantile_sorted(values, 0.99)

    def latency_intervals(self, now: float | None = None) -> tuple[QuantileInterval, QuantileInterval] | None:
        """The running cell's p50 and p99 with their 95% intervals (`stats.quantile_interval`, over its
        recent timed requests in the order they finished: at most LATENCY_POINTS); None before any.
        Computed on the redraw timer: again only when new latencies arrived and INTERVAL_EVERY_S has passed
        since the last computation (`now`: `time.perf_counter()` unless given), so a redraw stays cheap."""
        if not self.latencies:
            return None
        now = time.perf_counter() if now is None else now
        stale = self.latency_seq != self._intervals_seq
        if self._intervals is None or (stale and now - self._intervals_at >= INTERVAL_EVERY_S):
            values = [v for _, v in self.latencies]
            self._intervals = (quantile_interval(values, 0.5), quantile_interval(values, 0.99))
            self._intervals_seq = self.latency_seq
            self._intervals_at = now
        return self._intervals

    def ttft_stats(self) -> tuple[float | None, float | None]:
        """Running p50 and p99 of the current cell's recent time-to-first-token values (seconds)."""
        if not self.ttfts:
            return None, None
        values = sorted(v for _, v in self.ttfts)
        return quantile_sorted(values, 0.50), quantile_sorted(values, 0.99)

    def itl_stats(self) -> tuple[float | None, float | None]:
        """The median over recent requests of their own inter-token-gap p50 and p99 (seconds): each
        request's gaps are summarised in its row, so the cell's pooled ITL percentiles come with its
        cells.csv row."""
        p50s = sorted(v for _, v, _ in self.itls if v is not None)
        p99s = sorted(v for _, _, v in self.itls if v is not None)
        return (
            quantile_sorted(p50s, 0.50) if p50s else None,
            quantile_sorted(p99s, 0.50) if p99s else None,
        )

    def progress(self) -> float:
        return (self.cells_done / self.n_cells) if self.n_cells else 0.0

    def eta(self) -> float | None:
        """The engine's estimate when it gives one, else elapsed time extrapolated over finished cells."""
        if self.finished is not None:
            return 0.0
        if self.searching:
            return None
        if self.eta_s is not None:
            return self.eta_s
        done = self.cells_done - self.resumed_cells
        if self.started_at is None or done <= 0 or not self.n_cells:
            return None
        per_cell = (self.clock() - self.started_at) / done
        return per_cell * (self.n_cells - self.cells_done)


def _number(value: Any) -> float | None:
    """A row value as a float; None for 'not available' (None, '', NaN, text)."""
    if isinstance(value, float | int) and value == value:
        return float(value)
    return None
