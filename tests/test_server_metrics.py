"""Our model server's /metrics (servers/metrics.py) scraped by `sample.prometheus` while requests queue:
more requests in flight than its one inference worker, so some wait (the queue gauge, the queue-time
histogram and Server-Timing `queue` say so, counted by the server, no time threshold)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.test_server_inprocess import client_for, loaded_state, raw_headers
from tui_profiler.load.server_timing import parse_server_timing
from tui_profiler.sample.prometheus import MetricsScraper


@pytest.mark.server
async def test_the_scraper_sees_our_server_queueing_above_its_one_worker() -> None:
    state = loaded_state("mobilenet_v3_small")
    client = await client_for(state)
    events = []
    try:
        url = str(client.make_url("/metrics"))
        scraper = MetricsScraper(url, interval_s=0.05, include=[], cell_index=3, emit=events.append)
        scraper.start()
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)

        async def one() -> tuple[float, float]:
            r = await client.post("/predict", data=x.tobytes(), headers=raw_headers(x.shape))
            assert r.status == 200
            timing = parse_server_timing(r.headers["Server-Timing"])
            return timing["queue"], timing["infer"]

        queues: list[tuple[float, float]] = []
        for _ in range(3):  # 8 at once, three times: one worker, so at least 7 of each wave wait
            queues += await asyncio.gather(*(one() for _ in range(8)))
        summary = await scraper.stop()
    finally:
        await client.close()
    assert scraper.scrapes > 0 and scraper.failures == 0, scraper.last_error
    assert all(e.cell_index == 3 for e in events)
    rows = [row for e in events for row in e.rows]
    metrics = {m for m, _, _ in rows}
    assert {
        "tui_profiler_requests_in_flight",
        "tui_profiler_requests_queued",
        "tui_profiler_batch_size",
    } <= metrics
    # the server says requests waited: its queue-time histogram counted our 24 (the in-process server is
    # shared with this worker's other tests, so its count may start above 0) and Server-Timing queue > 0
    counts = [v for m, _, v in rows if m == "tui_profiler_queue_seconds_count"]
    assert counts and max(counts) >= 24 and max(counts) - min(counts) <= 24, counts
    # one worker: in each wave of 8, the 7 served after the first waited at least one inference
    least_infer = min(i for _, i in queues)
    assert sum(1 for q, _ in queues if q >= least_infer) >= 7 * 3
    queued_peak = summary.get("tui_profiler_requests_queued", {}).get("peak")
    in_flight_peak = summary.get("tui_profiler_requests_in_flight", {}).get("peak")
    assert in_flight_peak is not None and in_flight_peak >= 1
    assert queued_peak is not None  # a scrape may fall between waves; Server-Timing above proves queueing
    # the metrics endpoint answers the text format the parser reads (no parser of ours)
    assert "tui_profiler_requests_total:rate" in metrics  # the counter, as a rate between scrapes
