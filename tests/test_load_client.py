"""The load generator against a real HTTP server (tests/foreign/protocol_server.py, run as a subprocess):
exact counts, warm-up marking, open-loop rates and scheduling, coordinated omission made visible,
timeouts that do not stop the run, Server-Timing parsing, chunked / Connection: close answers, checks."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tui_profiler.load.client import RequestResult, run_load
from tui_profiler.load.inputs import InputSpec
from tui_profiler.load.patterns import LoadPattern as _Pattern
from tui_profiler.load.patterns import StopWhenStable, arrival_offsets
from tui_profiler.load.server_timing import parse_server_timing
from tui_profiler.load.template import build_payload, default_template, parse_template
from tui_profiler.runtime.common import free_port

SERVER = Path(__file__).parent / "foreign" / "protocol_server.py"


def LoadPattern(**given: object) -> _Pattern:
    """These tests count requests exactly and time arrivals: no warm-up and constant spacing unless a test
    says otherwise (a preset's defaults are 2 warm-ups and Poisson arrivals)."""
    return _Pattern(**{"warmup": 0, "arrival": "constant", **given})  # type: ignore[arg-type]


def wait_http(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), str(port)], stdout=subprocess.PIPE)
    try:
        wait_http(f"http://127.0.0.1:{port}/count/x")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def payload_for(path: str, template=None):  # type: ignore[no-untyped-def]
    tpl = template or default_template()
    p = build_payload(InputSpec(kind="tensor", base_size=(64,), dtype="float32"), tpl)
    return replace(p, path=path)


async def load(
    base: str, path: str, pattern: LoadPattern, template=None, on_result=None
) -> list[RequestResult]:  # type: ignore[no-untyped-def]
    tpl = template or default_template()
    return await run_load(base, tpl, payload_for(path, tpl), pattern, on_result)


# -- closed loop ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["raw", "aiohttp"])
async def test_closed_loop_exact_counts_warmup_marked_and_server_timing(server: str, transport: str) -> None:
    seen: list[RequestResult] = []
    res = await load(
        server,
        "/predict",
        LoadPattern(concurrency=4, requests=37, warmup=5, transport=transport),
        on_result=seen.append,
    )
    assert len(res) == 42 and seen == res
    assert [r.warmup for r in res[:5]] == [True] * 5 and not any(r.warmup for r in res[5:])
    assert all(r.ok and r.status == 200 and r.outcome == "ok" for r in res)
    assert {r.worker for r in res if not r.warmup} == {0, 1, 2, 3}
    assert [r.seq for r in res] == list(range(42))
    r = res[-1]
    assert (
        r.decode_ms == pytest.approx(0.1)
        and r.infer_ms == pytest.approx(0.5)
        and r.encode_ms == pytest.approx(0.05)
    )
    assert r.preprocess_ms is None  # not sent → not available, never 0
    assert r.server_total_ms == pytest.approx(0.65)
    assert r.overhead_ms == pytest.approx(r.latency_s * 1000 - 0.65)
    assert r.bytes_sent > 256 and r.bytes_received and r.bytes_received > 50
    for x in res:
        assert x.latency_s is not None and x.latency_s > 0
        assert x.t_recv_s is not None and x.t_recv_s >= x.t_send_s >= 0
        assert abs(x.timestamp_ms / 1000 - time.time()) < 60
        assert x.scheduled_delay_s is None


async def test_closed_loop_duration_stops_starting_requests(server: str) -> None:
    res = await load(server, "/sleep/20", LoadPattern(concurrency=2, requests=None, duration_s=0.5))
    assert 10 <= len(res) <= 60  # ~2 workers x 0.5 s / 20 ms, with slack for a busy machine
    assert max(r.t_send_s for r in res) < 0.5 + 0.05


async def test_stop_when_stable_ends_early(server: str) -> None:
    res = await load(
        server,
        "/sleep/5",
        LoadPattern(
            concurrency=1, requests=2000, stop_when_stable=StopWhenStable(rel_halfwidth=0.5, min_requests=15)
        ),
    )
    assert 15 <= len(res) < 100


async def test_results_reach_on_result_after_the_next_send_in_order(server: str) -> None:
    """A worker sends its next request before the previous result's on_result runs (the CSV row does not
    hold up the next request); results still arrive in order, all of them before run_load returns. Each
    on_result blocks the loop until the server has seen the next request: were it called before that
    request was sent, the count could never get there."""
    seen: list[RequestResult] = []
    n = 12

    def on_result(res: RequestResult) -> None:
        seen.append(res)
        if res.seq == n - 1:
            return  # the last one: no next request
        deadline = time.perf_counter() + 5.0
        while True:
            with urllib.request.urlopen(server + "/count/deferred", timeout=5) as r:
                if json.loads(r.read())["count"] >= res.seq + 2:
                    return
            assert time.perf_counter() < deadline, (
                f"request {res.seq + 1} was not sent before result {res.seq}"
            )
            time.sleep(0.005)

    res = await load(
        server, "/stall/deferred/0/0", LoadPattern(concurrency=1, requests=n, warmup=0), on_result=on_result
    )
    assert seen == res and [r.seq for r in seen] == list(range(n)) and all(r.ok for r in res)


async def test_an_on_result_error_stops_the_run_and_is_raised(server: str) -> None:
    """E.g. a full disk while writing requests.csv: the load stops and run_load raises that error."""
    calls: list[RequestResult] = []

    def on_result(res: RequestResult) -> None:
        calls.append(res)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")

    t0 = time.perf_counter()
    with pytest.raises(OSError, match="No space left"):
        await load(
            server,
            "/sleep/5",
            LoadPattern(concurrency=2, requests=None, duration_s=5.0, warmup=3),
            on_result=on_result,
        )
    assert time.perf_counter() - t0 < 2.5 and len(calls) == 5  # stopped, not run to its 5 s; no call after


async def test_cancelling_delivers_every_finished_result(server: str) -> None:
    seen: list[RequestResult] = []
    task = asyncio.create_task(
        load(server, "/sleep/20", LoadPattern(concurrency=3, requests=1000), on_result=seen.append)
    )
    await asyncio.sleep(0.4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen and [r.seq for r in seen] == list(range(len(seen)))


# -- open loop --------------------------------------------------------------------------------------------------


def test_arrival_offsets_constant_and_poisson() -> None:
    const = list(arrival_offsets(LoadPattern(mode="open", rate=4.0, requests=9)))
    assert const == pytest.approx([i * 0.25 for i in range(9)])
    slow = list(arrival_offsets(LoadPattern(mode="open", rate=0.2, requests=None, duration_s=20)))
    assert slow == pytest.approx([0, 5, 10, 15])  # rates below 1/s
    pois = list(
        arrival_offsets(LoadPattern(mode="open", rate=100.0, arrival="poisson", requests=3000, seed=7))
    )
    gaps = [b - a for a, b in itertools.pairwise(pois)]
    assert statistics.mean(gaps) == pytest.approx(0.01, rel=0.1)
    assert statistics.pstdev(gaps) == pytest.approx(0.01, rel=0.15)  # exponential: sd == mean
    again = list(
        arrival_offsets(LoadPattern(mode="open", rate=100.0, arrival="poisson", requests=3000, seed=7))
    )
    assert again == pois


async def test_open_loop_constant_rate_achieved(server: str) -> None:
    res = await load(
        server, "/predict", LoadPattern(mode="open", rate=40.0, requests=None, duration_s=1.5, concurrency=4)
    )
    assert len(res) == 60  # arrivals at 0, 25 ms, ... < 1.5 s
    sends = sorted(r.t_send_s for r in res)
    achieved = (len(sends) - 1) / (sends[-1] - sends[0])
    assert achieved == pytest.approx(40.0, rel=0.15)
    delays = [r.scheduled_delay_s for r in res]
    assert all(d is not None and d >= 0 for d in delays)
    assert statistics.median(delays) < 0.01  # type: ignore[type-var]
    # open loop latency runs from the scheduled time: never shorter than recv - send
    for r in res:
        assert r.latency_s is not None and r.t_recv_s is not None
        assert r.latency_s >= r.t_recv_s - r.t_send_s - 1e-9


async def test_open_loop_rate_below_one_per_second(server: str) -> None:
    res = await load(server, "/predict", LoadPattern(mode="open", rate=0.8, requests=2))
    assert len(res) == 2 and all(r.ok for r in res)
    assert res[1].t_send_s - res[0].t_send_s == pytest.approx(1.25, abs=0.15)


async def test_coordinated_omission_is_visible(server: str) -> None:
    """A server that stalls 600 ms: in the open loop every arrival scheduled during the stall shows it in its
    latency (measured from its scheduled time); measured from the actual send it would look like one slow
    request — the coordinated omission an open loop must not hide."""
    key = f"co{time.monotonic_ns()}"
    res = await load(
        server, f"/stall/{key}/5/600", LoadPattern(mode="open", rate=25.0, requests=None, duration_s=1.2)
    )
    assert len(res) == 30 and all(r.ok for r in res)
    from_schedule = [r.latency_s for r in res]
    from_send = [r.t_recv_s - r.t_send_s for r in res]  # type: ignore[operator]
    slow_sched = sum(lat > 0.25 for lat in from_schedule)  # type: ignore[operator]
    slow_send = sum(lat > 0.25 for lat in from_send)
    assert slow_send <= 2
    assert slow_sched >= 8  # ~600 ms / 40 ms = 15 arrivals queue behind the stall
    assert max(r.scheduled_delay_s for r in res) > 0.3  # type: ignore[type-var]


async def test_open_loop_drops_what_cannot_be_sent_in_time(server: str) -> None:
    res = await load(
        server,
        "/sleep/400",
        LoadPattern(mode="open", rate=50.0, requests=10, concurrency=1, drain_s=0.2, timeout_s=5),
    )
    assert len(res) == 10
    dropped = [r for r in res if r.outcome == "dropped"]
    assert dropped and all(r.latency_s is None and not r.ok for r in dropped)
    assert sum(r.ok for r in res) >= 1


# -- failures are data -------------------------------------------------------------------------------------------


async def test_timeout_is_recorded_and_the_run_goes_on(server: str) -> None:
    key = f"to{time.monotonic_ns()}"
    res = await load(
        server, f"/stall/{key}/3/1500?serial=0", LoadPattern(concurrency=1, requests=8, timeout_s=0.3)
    )
    assert len(res) == 8
    timeouts = [r for r in res if r.outcome == "timeout"]
    assert len(timeouts) == 1 and timeouts[0].seq == 2
    t = timeouts[0]
    assert t.status is None and t.latency_s is None and not t.ok and "timeout after 0.3 s" in t.error
    assert all(r.ok for r in res if r is not t)  # reconnected and carried on


async def test_connection_refused_is_an_error_per_request() -> None:
    port = free_port()
    res = await load(
        f"http://127.0.0.1:{port}", "/predict", LoadPattern(concurrency=2, requests=5, timeout_s=2)
    )
    assert len(res) == 5 and all(r.outcome == "error" and r.status is None and r.error for r in res)


@pytest.mark.parametrize("transport", ["raw", "aiohttp"])
async def test_chunked_and_connection_close_answers(server: str, transport: str) -> None:
    res = await load(server, "/chunked", LoadPattern(requests=5, transport=transport))
    assert all(r.ok and r.infer_ms == pytest.approx(1.5) for r in res)
    res = await load(server, "/close", LoadPattern(requests=5, transport=transport))
    assert all(r.ok for r in res)


async def test_status_and_json_checks(server: str) -> None:
    res = await load(server, "/status/503", LoadPattern(requests=3))
    assert all(r.outcome == "http_error" and r.status == 503 and "HTTP 503" in r.error for r in res)
    tpl = parse_template({"check": {"json_field": "predictions"}}, "t")
    res = await load(server, "/predict", LoadPattern(requests=3), template=tpl)
    assert all(r.ok for r in res)
    tpl = parse_template({"check": {"json_field": "predictions.1"}}, "t")
    assert all(r.ok for r in await load(server, "/predict", LoadPattern(requests=2), template=tpl))
    tpl = parse_template({"check": {"json_field": "outputs"}}, "t")
    res = await load(server, "/predict", LoadPattern(requests=3), template=tpl)
    assert all(r.outcome == "check_failed" and "outputs" in r.error for r in res)
    res = await load(server, "/text", LoadPattern(requests=2), template=tpl)
    assert all(r.outcome == "check_failed" and "not JSON" in r.error for r in res)
    tpl = parse_template({"check": {"status": [200, 201], "json_field": "ok", "every": 2}}, "t")
    assert all(r.ok for r in await load(server, "/predict", LoadPattern(requests=4), template=tpl))


async def test_no_server_timing_means_not_available(server: str) -> None:
    res = await load(server, "/timing/none", LoadPattern(requests=2))
    for r in res:
        assert r.ok and r.server_total_ms is None and r.overhead_ms is None and r.infer_ms is None
    off = parse_template({"server_timing": False}, "t")
    res = await load(server, "/predict", LoadPattern(requests=2), template=off)
    assert all(r.server_total_ms is None for r in res)


async def test_odd_server_timing_headers(server: str) -> None:
    (r,) = await load(server, "/timing/total", LoadPattern(requests=1))
    assert r.server_total_ms == 10 and r.decode_ms == 1 and r.infer_ms == 2
    (r,) = await load(server, "/timing/quoted", LoadPattern(requests=1))
    assert r.infer_ms == 3.5 and r.encode_ms == 0.5 and r.server_total_ms == 4.0
    (r,) = await load(server, "/timing/junk", LoadPattern(requests=1))
    assert r.ok and r.infer_ms is None and r.decode_ms is None and r.encode_ms == 2 and r.server_total_ms == 2


def test_parse_server_timing_robust() -> None:
    assert parse_server_timing("a;dur=1, b;dur=2.5") == {"a": 1.0, "b": 2.5}
    assert parse_server_timing(["A;dur=1", "b;desc=x;dur=2", "a;dur=9"]) == {"a": 1.0, "b": 2.0}
    assert parse_server_timing('x;desc="1,2;3";dur="4"') == {"x": 4.0}
    assert parse_server_timing("x;dur=nan, y;dur=inf, z, ;;, w;dur=") == {}
    assert parse_server_timing("") == {} and parse_server_timing(None) == {}
    assert parse_server_timing("  infer ; dur = 7 ") == {"infer": 7.0}


async def test_request_is_built_once_with_template_headers(server: str) -> None:
    """The wire request: method, path, content type, our tensor headers and the template's own headers."""
    tpl = parse_template({"path": "/echo/{name}", "headers": {"X-Model": "{model}"}}, "t")
    p = build_payload(InputSpec(kind="tensor", base_size=(2, 3), dtype="float32"), tpl, "m1")
    res = await run_load(server, tpl, p, LoadPattern(requests=1))
    assert res[0].ok

    def fetch_last() -> dict:
        with urllib.request.urlopen(f"{server}/last") as f:
            return json.loads(f.read())

    echoed = await asyncio.to_thread(fetch_last)
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo/m1" and echoed["headers"]["X-Model"] == "m1"
    assert echoed["headers"]["X-Tensor-Shape"] == "1,2,3" and echoed["body_len"] == 24
    assert res[0].bytes_sent == len(p.body) + len(
        f"POST /echo/m1 HTTP/1.1\r\nHost: {server[7:]}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: 24\r\nX-Tensor-Shape: 1,2,3\r\nX-Tensor-Dtype: float32\r\nX-Model: m1\r\n\r\n"
    )


async def test_cancelling_the_load_closes_cleanly(server: str) -> None:
    task = asyncio.create_task(load(server, "/sleep/50", LoadPattern(concurrency=3, requests=1000)))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_several_client_processes_share_one_run(server: str) -> None:
    """A closed loop split over two client processes: exact counts, one time base, global worker ids,
    results streamed to the callback as they come."""
    seen: list[RequestResult] = []
    res = await load(
        server,
        "/predict",
        LoadPattern(concurrency=4, requests=41, warmup=4, processes=2),
        on_result=seen.append,
    )
    assert len(res) == 45 and seen == res
    assert sum(r.warmup for r in res) == 4 and all(r.ok for r in res)
    assert [r.seq for r in res] == list(range(45))
    assert {r.worker for r in res if not r.warmup} == {0, 1, 2, 3}
    assert all(0 <= r.t_send_s <= r.t_recv_s < 30 for r in res)  # type: ignore[operator]
    assert max(r.timestamp_ms for r in res) - min(r.timestamp_ms for r in res) < 30_000
    assert res[-1].infer_ms == pytest.approx(0.5)  # Server-Timing parsed in the child too
