"""The Prometheus scrape (`sample.prometheus`): the parser's samples to server_metrics.csv rows, counters
as rates, histograms kept, the per-cell mean and peak (fast tier: text by hand)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tui_profiler.sample.prometheus import RATE_SUFFIX, _Counters, summarise, text_to_rows

SCRAPE = """# HELP vllm:num_requests_waiting Requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} {waiting}
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="m"} {tokens}
vllm:prompt_tokens_created{model_name="m"} 1.7e9
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.1"} 3
lat_seconds_bucket{le="+Inf"} 4
lat_seconds_sum 0.5
lat_seconds_count 4
"""


def scrape(waiting: float, tokens: float) -> str:
    return SCRAPE.replace("{waiting}", str(waiting)).replace("{tokens}", str(tokens))


def test_gauges_as_read_counters_as_rates_histograms_kept() -> None:
    counters = _Counters()
    first = text_to_rows(scrape(2, 100), 10.0, (), counters)
    assert [(r.metric, r.value) for r in first if r.metric.startswith("vllm")] == [
        ("vllm:num_requests_waiting", 2.0)
    ]  # no rate on the first scrape, and no `_created`
    second = text_to_rows(scrape(5, 400), 10.5, (), counters)
    rates = [r for r in second if r.metric.endswith(RATE_SUFFIX)]
    assert [(r.metric, r.value) for r in rates] == [("vllm:prompt_tokens_total" + RATE_SUFFIX, 600.0)]
    assert json.loads(rates[0].labels) == {"model_name": "m"}
    buckets = [r for r in second if r.metric == "lat_seconds_bucket"]
    assert {json.loads(r.labels)["le"] for r in buckets} == {"0.1", "+Inf"}
    assert any(r.metric == "lat_seconds_count" and r.value == 4 for r in second)


def test_include_keeps_families_or_samples_by_name() -> None:
    rows = text_to_rows(scrape(1, 1), 0.0, ["vllm:num_requests_waiting", "lat_seconds_sum"], _Counters())
    assert sorted(r.metric for r in rows) == ["lat_seconds_sum", "vllm:num_requests_waiting"]


def test_a_cells_mean_and_peak() -> None:
    rows = [("q", "", 1.0), ("q", "", 3.0), ("h_bucket", '{"le":"1"}', 9.0)]
    assert summarise(rows) == {"q": {"mean": pytest.approx(2.0), "peak": 3.0}}


async def test_a_cell_shorter_than_the_interval_still_gets_a_counter_rate() -> None:
    """The scraper scrapes at its start and once more at its stop: a cell that ends before the next poll
    still has two scrapes, so its counters a rate (aiohttp's test server counts its own scrapes)."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from tui_profiler.events import ServerMetrics
    from tui_profiler.sample.prometheus import MetricsScraper

    served = 0

    async def metrics(_request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        body = f"# TYPE up gauge\nup 1\n# TYPE done_total counter\ndone_total {served * 10}\n"
        return web.Response(text=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        events: list[ServerMetrics] = []
        first = asyncio.Event()

        def emit(event: ServerMetrics) -> None:
            events.append(event)
            first.set()

        scraper = MetricsScraper(
            str(server.make_url("/metrics")), interval_s=60, include=[], cell_index=0, emit=emit
        )
        scraper.start()
        await asyncio.wait_for(first.wait(), 30)  # the first poll, at the start
        await scraper.stop()
    finally:
        await server.close()
    assert scraper.scrapes == served == 2
    metrics_seen = [row[0] for e in events for row in e.rows]
    assert metrics_seen.count("done_total" + RATE_SUFFIX) == 1  # against the first scrape only
