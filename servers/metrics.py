"""The model server's own Prometheus metrics (`GET /metrics`, the text exposition format), through
`prometheus_client` when it is installed (the process runtime: it is a dependency of tui-profiler; the
server image: see docs/server.md), else /metrics answers 404 saying so.

- `tui_profiler_requests_in_flight` (gauge): requests accepted and not yet answered;
- `tui_profiler_requests_queued` (gauge): requests waiting for the inference worker (/predict) or for a
  place in the decoding batch (generation);
- `tui_profiler_batch_size` (gauge): /predict inferences running (0 or 1: one worker) plus the sequences
  the generation engine decodes together;
- `tui_profiler_kv_cache_tokens` (gauge, decoder_small): tokens held in the active sequences' KV caches;
- `tui_profiler_queue_seconds` (histogram): each request's queue time, the Server-Timing `queue`;
- `tui_profiler_requests_total` (counter): requests answered, by route.

The generation engine's figures are read when scraped (its scheduler's lists, never locked: a scrape is a
snapshot that may be one step old).
"""

from __future__ import annotations

from typing import Any

try:
    import prometheus_client as _prom
except ImportError:  # the server image: a copy in servers/_vendor (tui_profiler.images vendors it)
    import os
    import sys

    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor"))
    try:
        import prometheus_client as _prom
    except ImportError:  # pragma: no cover - neither installed nor vendored
        _prom = None  # type: ignore[assignment]

AVAILABLE = _prom is not None
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    """The metrics of one server process (its own registry, so tests can make several)."""

    def __init__(self) -> None:
        self.engine: Any = None  # the generation engine, read at scrape time
        self._predict_running = 0
        if _prom is None:
            return
        self.registry = _prom.CollectorRegistry()
        r = self.registry
        self.in_flight = _prom.Gauge(
            "tui_profiler_requests_in_flight", "Requests accepted, not answered", registry=r
        )
        self.queued = _prom.Gauge(
            "tui_profiler_requests_queued", "Requests waiting for the worker or batch", registry=r
        )
        self.batch = _prom.Gauge(
            "tui_profiler_batch_size", "Inferences or sequences running together", registry=r
        )
        self.kv_tokens = _prom.Gauge(
            "tui_profiler_kv_cache_tokens", "Tokens in the active KV caches", registry=r
        )
        self.queue_s = _prom.Histogram(
            "tui_profiler_queue_seconds",
            "Time between accepting a request and starting its work",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.answered = _prom.Counter("tui_profiler_requests", "Requests answered", ["route"], registry=r)
        self._predict_queued = 0

    # /predict: accepted -> submitted to the worker -> started -> answered
    def accepted(self) -> None:
        if _prom is not None:
            self.in_flight.inc()

    def submitted(self) -> None:
        if _prom is not None:
            self._predict_queued += 1

    def started(self, queue_s: float) -> None:  # in the worker thread (warm-up runs too: not submitted)
        if _prom is not None:
            if self._predict_queued > 0:
                self._predict_queued -= 1
                self.queue_s.observe(queue_s)
            self._predict_running += 1

    def finished(self) -> None:  # in the worker thread
        if _prom is not None:
            self._predict_running -= 1

    def done(self, route: str) -> None:
        if _prom is not None:
            self.in_flight.dec()
            self.answered.labels(route=route).inc()

    def observe_queue(self, queue_s: float) -> None:
        if _prom is not None:
            self.queue_s.observe(queue_s)

    def exposition(self) -> bytes:
        """The metrics as the text format, the engine's read now."""
        assert _prom is not None
        running, waiting, tokens = self.engine.occupancy() if self.engine is not None else (0, 0, 0)
        self.batch.set(self._predict_running + running)
        self.queued.set(self._predict_queued + waiting)
        self.kv_tokens.set(tokens)
        out: bytes = _prom.generate_latest(self.registry)
        return out
