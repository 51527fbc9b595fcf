"""The load generator: sends one cell's prepared requests under a load pattern and times every answer.

One request path for every server: the template (ours by default) renders the cell's inputs before its load
(`tui_profiler.load.template.build_payloads`: one image or tensor, or a prompt per request); here each
request's prebuilt bytes are written over keep-alive connections, one per worker, and every timing is
`time.perf_counter()`.

Two transports share that path (`LoadPattern.transport`, a preset's `load.transport`):
- `raw` (the default for `http://`): a lean HTTP/1.1 client on asyncio's Protocol API. The request is one
  prebuilt bytes object; llhttp (httptools) reads the answer (`tui_profiler.load.http1.AnswerReader`:
  framing, keep-alive, Server-Timing, arrival times of first byte, head and body). What it costs against
  wrk and plain aiohttp is measured in docs/load-generator.md ("What it costs") and by
  `tui-profiler bench client`.
- `aiohttp` (for `https://`, or when asked): one ClientSession, TCPConnector(limit=concurrency), no cookie
  jar, no auto-decompression, no automatic headers.

Run the event loop with uvloop when available (`run()` below); it halves the client's own cost.
`LoadPattern.processes > 1` splits a closed loop over several client processes (`python -m
tui_profiler.load._child`), for concurrency beyond what one Python process can drive.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import pickle
import struct
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from tui_profiler.load.http1 import AnswerReader
from tui_profiler.load.inputs import Payload, PayloadSet
from tui_profiler.load.patterns import LoadPattern, arrival_offsets
from tui_profiler.load.server_timing import parse_server_timing
from tui_profiler.load.stream import AnswerStream, StreamMetrics
from tui_profiler.load.template import RequestTemplate
from tui_profiler.session.schema import LOAD_GENERATOR_COLUMNS, RequestStatus, StopReason
from tui_profiler.stats import BatchedHistogram

T = TypeVar("T")
OnResult = Callable[["RequestResult"], None]


class CpuShare(Protocol):
    """A request's share of the target's CPU counters (`sample.request_cpu.RequestCpu`)."""

    @property
    def cpu_ms(self) -> float: ...
    @property
    def throttled_ms(self) -> float | None: ...
    @property
    def periods(self) -> float | None: ...


class CpuMeter(Protocol):
    """Reads the target's CPU counters at a request's start and end (`sample.request_cpu.RequestCpuMeter`;
    the load generator does not import the sampler)."""

    def start(self) -> int | None: ...
    def end(self, key: int | None) -> CpuShare | None: ...


@dataclass(slots=True)
class RequestResult:
    timestamp_ms: int  # epoch milliseconds at send
    t_send_s: float  # perf_counter seconds since the load started (actual send)
    t_recv_s: float | None  # when the whole answer had arrived; None when it never did
    latency_s: float | None  # closed loop: recv - send; open loop: recv - SCHEDULED send
    status: int | None  # HTTP status, None when no answer
    ok: bool
    outcome: RequestStatus  # requests.csv `status`
    error: str
    warmup: bool
    worker: int
    seq: int  # order of sending within the run (warm-up first)
    queue_ms: float | None = None  # time waiting for the server's worker (our server reports it)
    decode_ms: float | None = None
    preprocess_ms: float | None = None
    infer_ms: float | None = None
    encode_ms: float | None = None
    server_total_ms: float | None = None
    overhead_ms: float | None = None  # latency minus the server's own total
    bytes_sent: int = 0
    bytes_received: int | None = None
    scheduled_delay_s: float | None = None  # open loop: actual send - scheduled send
    input_index: int | None = None  # which payload of the cell's PayloadSet it sent (None: never sent)
    # generative answers (load.stream): None where the answer carried no tokens, or not available
    ttft_s: float | None = None  # send (open loop: scheduled send) -> first token event
    tpot_s: float | None = None  # (latency - ttft) / (output_tokens - 1)
    itl_p50_s: float | None = None
    itl_p99_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    output_tokens_source: str | None = None  # "usage" (the server's count) | "events" (counted here)
    server_prefill_ms: float | None = None
    server_decode_ms: float | None = None
    # every inter-token gap: only in results built by hand (tests, synthetic sessions); the load generator
    # pools them in its run's `LoadResults.itl` (bounded memory) and leaves this empty
    itl_s: tuple[float, ...] = ()
    cached_prompt_tokens: int | None = None  # prompt tokens the server served from its prefix cache
    finish_reason: str | None = None  # why the server stopped generating (the last finish_reason given)
    # the target's CPU while the request was in flight, its share (`sample.request_cpu`); None: not read
    cpu_ms: float | None = None
    throttled_ms: float | None = None
    throttled_periods: float | None = None

    def as_row(self) -> dict[str, Any]:
        """The load generator's columns of a requests.csv row (`LOAD_GENERATOR_COLUMNS`): `status` is the
        outcome, `http_status` the HTTP code, `warmup` 1 or 0."""
        row = dict(zip(LOAD_GENERATOR_COLUMNS, _row_values(self), strict=True))
        row["warmup"] = int(self.warmup)
        return row

    def add_stream(self, m: StreamMetrics) -> None:
        """The generative columns of this request's answer."""
        self.ttft_s, self.tpot_s = m.ttft_s, m.tpot_s
        self.itl_p50_s, self.itl_p99_s = m.itl_p50_s, m.itl_p99_s
        self.prompt_tokens, self.output_tokens = m.prompt_tokens, m.output_tokens
        self.output_tokens_source = m.output_tokens_source
        self.cached_prompt_tokens, self.finish_reason = m.cached_prompt_tokens, m.finish_reason
        if m.server_prefill_ms is not None:
            self.server_prefill_ms = m.server_prefill_ms
        if m.server_decode_ms is not None:
            self.server_decode_ms = m.server_decode_ms


class LoadResults(list[RequestResult]):
    """What `run_load` returns: every result in order (a list, as before), with why the timed load ended
    (`stop_reason`: a `StopReason`; "" until it has) and every inter-token gap of the answered timed
    requests pooled in bounded memory (`itl`, a `stats.BatchedHistogram` by requests in completion
    order)."""

    def __init__(self) -> None:
        super().__init__()
        self.stop_reason: str = ""
        self.itl = BatchedHistogram()


# The attribute holding each of LOAD_GENERATOR_COLUMNS: the column's name, but for the two statuses. One C
# call for the whole row (as_row runs once per request, beside the load).
_ATTRIBUTE_OF_COLUMN = {"status": "outcome", "http_status": "status"}
_row_values = operator.attrgetter(*(_ATTRIBUTE_OF_COLUMN.get(c, c) for c in LOAD_GENERATOR_COLUMNS))


# -- transports -----------------------------------------------------------------------------------------------


class HttpProtocolError(Exception):
    pass


class _Answer:
    """One final answer and when its parts arrived (perf_counter): first byte, head done, body done."""

    __slots__ = ("body", "nbytes", "server_timing", "status", "t_first_byte", "t_headers", "t_recv")

    def __init__(
        self,
        status: int,
        server_timing: list[str],
        body: bytes,
        nbytes: int,
        t_recv: float,
        t_first_byte: float | None = None,
        t_headers: float | None = None,
    ) -> None:
        self.status = status
        self.server_timing = server_timing
        self.body = body
        self.nbytes = nbytes
        self.t_recv = t_recv
        self.t_first_byte = t_first_byte
        self.t_headers = t_headers


class _RawHttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection, one request at a time; llhttp reads the answers (`AnswerReader`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, keep_body: bool) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._reader = AnswerReader(keep_body)
        self._waiter: asyncio.Future[_Answer] | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self._waiter
        if w is not None and not w.done():
            reader = self._reader
            reader.eof(time.perf_counter())
            if reader.done and reader.error is None:
                self._settle()
            elif reader.nbytes == 0:
                w.set_exception(
                    ConnectionError("connection closed by the server" + (f": {exc}" if exc else ""))
                )
            else:
                w.set_exception(HttpProtocolError(f"bad HTTP answer: {reader.error}"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost completes a read-until-close answer

    def data_received(self, data: bytes) -> None:
        # An answer's times are when its bytes came in, before our parsing (which is not latency).
        t_arrival = time.perf_counter()
        reader = self._reader
        w = self._waiter
        if w is None:  # bytes before any request: the stream is out of step
            self.abort()
            return
        reader.feed(data, t_arrival)
        if not w.done():
            if reader.done or reader.error is not None:
                self._settle()
        elif reader.error is not None:  # bytes after an answer already given (or after a timeout)
            self.abort()

    def _settle(self) -> None:
        reader, w = self._reader, self._waiter
        assert w is not None
        if reader.error is not None:
            w.set_exception(HttpProtocolError(f"bad HTTP answer: {reader.error}"))
            self.abort()
            return
        assert reader.t_done is not None
        w.set_result(
            _Answer(
                reader.status,
                reader.server_timing,
                reader.body,
                reader.nbytes,
                reader.t_done,
                reader.t_first,
                reader.t_headers,
            )
        )
        if not reader.keep_alive:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    # request side
    def start(self, no_body: bool, stream: AnswerStream | None) -> asyncio.Future[_Answer]:
        self._reader.start(no_body, stream)
        self._waiter = self._loop.create_future()
        return self._waiter

    def on_timeout(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(TimeoutError())
            self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _RawConnection:
    __slots__ = ("_host", "_keep_body", "_loop", "_port", "_proto")

    def __init__(self, host: str, port: int, keep_body: bool) -> None:
        self._host, self._port, self._keep_body = host, port, keep_body
        self._loop = asyncio.get_running_loop()
        self._proto: _RawHttpProtocol | None = None

    async def connect(self, limit_s: float) -> None:
        loop = self._loop
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: _RawHttpProtocol(loop, self._keep_body), self._host, self._port),
            limit_s,
        )
        self._proto = proto

    async def send(
        self,
        request: bytes,
        no_body: bool,
        limit_s: float,
        t_send: float,
        stream: AnswerStream | None,
        index: int = 0,
    ) -> _Answer:
        proto = self._proto
        if proto is None or proto.closed:
            await self.connect(max(1e-3, limit_s - (time.perf_counter() - t_send)))
            proto = self._proto
            assert proto is not None and proto.transport is not None
        waiter = proto.start(no_body, stream)
        handle = self._loop.call_later(limit_s - (time.perf_counter() - t_send), proto.on_timeout)
        proto.transport.write(request)  # type: ignore[union-attr]
        try:
            return await waiter
        finally:
            handle.cancel()

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None


class _AiohttpConnection:
    """aiohttp transport (https, or by request). One shared session; each worker holds one of these.
    `requests`: (url, headers, body) of each payload of the cell, by input index."""

    __slots__ = ("_method", "_requests", "_session")

    def __init__(self, session: Any, method: str, requests: list[tuple[str, dict[str, str], bytes]]) -> None:
        self._session, self._method, self._requests = session, method, requests

    async def connect(self, limit_s: float) -> None:  # the pool connects on first use
        return None

    async def send(
        self,
        request: bytes,
        no_body: bool,
        limit_s: float,
        t_send: float,
        stream: AnswerStream | None,
        index: int = 0,
    ) -> _Answer:
        url, headers, data = self._requests[index]
        async with asyncio.timeout(limit_s - (time.perf_counter() - t_send)):
            async with self._session.request(self._method, url, data=data or None, headers=headers) as resp:
                t_headers = time.perf_counter()
                if stream is not None and stream.head(resp.status, resp.headers.get("Content-Type")):
                    pieces = []
                    async for piece in resp.content.iter_any():  # as each read arrives
                        stream.feed(piece, time.perf_counter())
                        pieces.append(piece)
                    body = b"".join(pieces)
                else:
                    body = await resp.read()
                t_recv = time.perf_counter()
        head = 12 + sum(len(k) + len(v) + 4 for k, v in resp.raw_headers) + 2
        return _Answer(
            resp.status,
            resp.headers.getall("Server-Timing", []),
            body,
            head + len(body),
            t_recv,
            None,  # aiohttp does not say when the first byte came
            t_headers,
        )

    def close(self) -> None:
        return None


def build_request_bytes(host_header: str, payload: Payload) -> bytes:
    """The whole HTTP/1.1 request, built once per cell."""
    lines = [f"{payload.method} {payload.path} HTTP/1.1", f"Host: {host_header}"]
    if payload.content_type and payload.method != "GET":
        lines.append(f"Content-Type: {payload.content_type}")
    if payload.body or payload.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(payload.body)}")
    lines.extend(f"{k}: {v}" for k, v in payload.headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload.body


# -- the run ------------------------------------------------------------------------------------------------


class _Run:
    """State shared by the workers of one run_load call."""

    def __init__(
        self,
        template: RequestTemplate,
        payloads: PayloadSet,
        requests: list[bytes],
        pattern: LoadPattern,
        on_result: OnResult | None,
    ) -> None:
        self.template = template
        self.payload = payloads.first
        self.requests = requests  # the whole request of each payload, built once, by input index
        self.next_input = payloads.chooser()
        self.pattern = pattern
        self.on_result = on_result
        self.results = LoadResults()
        self.seq = 0
        self.stop = False
        self.check_every = template.check.every
        self.check_status = frozenset(template.check.status)
        self.check_path = template.check.field_path()
        self.checked = 0
        self.use_timing = template.server_timing
        self.stream_mode = template.stream
        self.generative = template.generative
        self.keep_gaps = False  # run_load(keep_gaps=True): each result keeps its gaps too
        self.stop_judge = pattern.stop_judge()  # [load.stop]: None without goals
        self.t0 = 0.0
        self.epoch0_ms = 0.0
        self.no_body = self.payload.method == "HEAD"
        self.worker_offset = 0
        # Results reach on_result in order, in a batch soon after they finish (once per loop iteration):
        # a worker sends its next request first, so a closed loop at concurrency 1 does not wait for the
        # CSV row of the previous one. The first error on_result raises stops the run and is re-raised.
        self.loop = asyncio.get_running_loop()  # made inside run_load
        self.undelivered: list[RequestResult] = []
        self.deliver_error: BaseException | None = None
        self.cpu_meter: CpuMeter | None = None  # per-request CPU counters (`run_load`'s cpu_meter)

    def record(
        self,
        worker: int,
        warmup: bool,
        t_send: float,
        t_start: float,
        answer: _Answer | None,
        outcome: RequestStatus,
        error: str,
        bytes_sent: int,
        scheduled_delay: float | None,
        input_index: int | None = None,
        stream: AnswerStream | None = None,
    ) -> RequestResult:
        t0 = self.t0
        latency = None if answer is None else answer.t_recv - t_start
        res = RequestResult(
            timestamp_ms=int(self.epoch0_ms + (t_send - t0) * 1000.0),
            t_send_s=t_send - t0,
            t_recv_s=None if answer is None else answer.t_recv - t0,
            latency_s=latency,
            status=None if answer is None else answer.status,
            ok=outcome is RequestStatus.OK,
            outcome=outcome,
            error=error,
            warmup=warmup,
            worker=worker + self.worker_offset,
            seq=self.seq,
            bytes_sent=bytes_sent,
            bytes_received=None if answer is None else answer.nbytes,
            scheduled_delay_s=scheduled_delay,
            input_index=input_index,
        )
        self.seq += 1
        if answer is not None and answer.server_timing and self.use_timing:
            timings = parse_server_timing(answer.server_timing)
            if timings:
                res.queue_ms = timings.get("queue")
                res.decode_ms = timings.get("decode")
                res.preprocess_ms = timings.get("preprocess")
                res.infer_ms = timings.get("infer")
                res.encode_ms = timings.get("encode")
                total = timings.get("total")
                if total is None:
                    total = sum(timings.values())
                res.server_total_ms = total
                if latency is not None:
                    res.overhead_ms = latency * 1000.0 - total
                if self.generative:
                    res.server_prefill_ms = timings.get("prefill")
                    res.server_decode_ms = timings.get("decode")
        if stream is not None and stream.format is not None:
            metrics = stream.metrics(t_start, None if answer is None else answer.t_recv)
            res.add_stream(metrics)
            if self.keep_gaps:
                res.itl_s = metrics.itl_s
            if res.ok and not warmup:  # the answer's gaps end here, as counts in the cell's pool
                self.results.itl.add_group(metrics.itl_s)
        self.results.append(res)
        if self.stop_judge is not None and not warmup and res.ok and latency is not None:
            if self.stop_judge.add(latency, res.ttft_s, res.tpot_s) and not self.stop:
                self.stop = True
                self.end(StopReason.CONVERGED)
        if self.on_result is not None and self.deliver_error is None:
            self.undelivered.append(res)
            if len(self.undelivered) == 1:
                self.loop.call_soon(self.deliver)
        return res

    def end(self, reason: str) -> None:
        """The first reason the timed load ended is the one that counts."""
        if not self.results.stop_reason:
            self.results.stop_reason = reason

    def deliver(self) -> None:
        """Hand every finished result not yet delivered to on_result, in order."""
        batch, self.undelivered = self.undelivered, []
        if self.on_result is None or self.deliver_error is not None:
            return
        for res in batch:
            try:
                self.on_result(res)
            except Exception as exc:  # e.g. the disk is full: the run stops and run_load raises it
                self.deliver_error = exc
                self.stop = True
                return

    def judge(self, answer: _Answer, stream: AnswerStream | None) -> tuple[RequestStatus, str]:
        if answer.status not in self.check_status:
            return RequestStatus.HTTP_ERROR, self.template.check.status_failure(answer.status)
        if stream is not None and stream.error:
            return RequestStatus.ERROR, f"error event after {stream.token_events} tokens: {stream.error}"
        if self.check_path and (stream is None or not stream.streamed):
            self.checked += 1
            if (self.checked - 1) % self.check_every == 0:
                failure = self.template.check.field_failure(answer.body, self.check_path)
                if failure is not None:
                    return RequestStatus.CHECK_FAILED, failure
        return RequestStatus.OK, ""

    async def one(self, conn: Any, worker: int, warmup: bool, t_sched: float | None) -> None:
        meter = self.cpu_meter
        if meter is None:
            await self._one(conn, worker, warmup, t_sched)
            return
        # the target's CPU counters read just before the request is sent and just after its answer (or
        # failure): outside its latency; the share is set before the result is delivered (next iteration)
        key = meter.start()
        try:
            res = await self._one(conn, worker, warmup, t_sched)
        finally:
            share = meter.end(key)
        if share is not None:
            res.cpu_ms, res.throttled_ms, res.throttled_periods = (
                share.cpu_ms,
                share.throttled_ms,
                share.periods,
            )

    async def _one(self, conn: Any, worker: int, warmup: bool, t_sched: float | None) -> RequestResult:
        k = self.next_input()  # chosen before the clock starts: never part of the latency
        request = self.requests[k]
        t_send = time.perf_counter()
        t_start = t_send if t_sched is None else t_sched
        delay = None if t_sched is None else t_send - t_sched
        timeout = self.pattern.timeout_s
        stream = (
            AnswerStream(self.stream_mode, self.generative)
            if self.generative or self.stream_mode != "none"
            else None
        )
        try:
            answer = await conn.send(request, self.no_body, timeout, t_send, stream, k)
        except TimeoutError:
            conn.close()
            return self.record(
                worker,
                warmup,
                t_send,
                t_start,
                None,
                RequestStatus.TIMEOUT,
                _cut(stream) + f"timeout after {timeout:g} s",
                len(request),
                delay,
                k,
                stream,
            )
        except (OSError, ConnectionError, HttpProtocolError) as exc:
            conn.close()
            return self.record(
                worker, warmup, t_send, t_start, None, RequestStatus.ERROR, _cut(stream) + _short_error(exc),
                len(request), delay, k, stream,
            )  # fmt: skip
        except Exception as exc:  # aiohttp's own errors (ClientError, ...) without importing it here
            if exc.__class__.__module__.startswith("aiohttp"):
                return self.record(
                    worker, warmup, t_send, t_start, None, RequestStatus.ERROR, _cut(stream) + _short_error(exc),
                    len(request), delay, k, stream,
                )  # fmt: skip
            raise
        if stream is not None and stream.format is not None:
            stream.close(answer.t_recv)
        outcome, error = self.judge(answer, stream)
        return self.record(
            worker, warmup, t_send, t_start, answer, outcome, error, len(request), delay, k, stream
        )


def _cut(stream: AnswerStream | None) -> str:
    """A failed request's error starts by saying how much of a stream it got (its tokens are kept)."""
    if stream is None or not stream.streamed:
        return ""
    return f"stream cut after {stream.token_events} token events: "


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text}"[:200] if text else name


class _Budget:
    """How many requests may still start (a count, a deadline, or the stop flag)."""

    __slots__ = ("deadline", "remaining", "run", "timed")

    def __init__(self, run: _Run, remaining: int | None, deadline: float | None, timed: bool = True) -> None:
        self.run, self.remaining, self.deadline, self.timed = run, remaining, deadline, timed

    def take(self) -> bool:
        if self.run.stop:
            return False
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            self.ran_out(by_count=False)
            return False
        if self.remaining is not None:
            if self.remaining <= 0:
                self.ran_out(by_count=True)
                return False
            self.remaining -= 1
        return True

    def ran_out(self, by_count: bool) -> None:
        if self.timed:
            self.run.end(self.run.pattern.ended(by_count))


async def _closed_worker(run: _Run, conn: Any, worker: int, budget: _Budget, warmup: bool) -> None:
    while budget.take():
        await run.one(conn, worker, warmup, None)


async def _open_loop(run: _Run, conns: list[Any]) -> None:
    pattern = run.pattern
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    drain_s = pattern.drain_s if pattern.drain_s is not None else pattern.timeout_s
    drain_deadline = [float("inf")]

    async def worker(i: int, conn: Any) -> None:
        while True:
            t_sched = await queue.get()
            if t_sched is None:
                return
            if time.perf_counter() > drain_deadline[0]:
                # Scheduled, never sent: every connection stayed busy past the drain time. Kept as data.
                run.record(
                    i,
                    False,
                    t_sched,
                    t_sched,
                    None,
                    RequestStatus.DROPPED,
                    "not sent: all connections busy",
                    0,
                    None,
                )
                continue
            await run.one(conn, i, False, t_sched)

    tasks = [asyncio.create_task(worker(i, c)) for i, c in enumerate(conns)]
    try:
        start = time.perf_counter()
        loop_sleep = asyncio.sleep
        scheduled = 0
        for offset in arrival_offsets(pattern):
            if run.stop:
                break
            scheduled += 1
            t_sched = start + offset
            delay = t_sched - time.perf_counter()
            if delay > 0:
                await loop_sleep(delay)
            queue.put_nowait(t_sched)
        if not run.stop:  # the schedule ran out: its count, or its time
            run.end(pattern.ended(by_count=pattern.requests is not None and scheduled >= pattern.requests))
        drain_deadline[0] = time.perf_counter() + drain_s
        for _ in tasks:
            queue.put_nowait(None)
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()


async def run_load(
    base_url: str,
    template: RequestTemplate,
    payload: Payload | PayloadSet,
    pattern: LoadPattern,
    on_result: OnResult | None = None,
    *,
    clock_origin: tuple[float, float] | None = None,
    worker_offset: int = 0,
    input_offset: int = 0,
    should_stop: Callable[[], bool] | None = None,
    keep_gaps: bool = False,
    cpu_meter: CpuMeter | None = None,
) -> LoadResults:
    """Send `payload` to `base_url` under `pattern` (a PayloadSet: each request sends the input its order
    picks, see `PayloadSet.chooser`; every request is built once, before the clock starts); every result (warm-up first, marked) goes into the
    returned list and to `on_result`, in order, once per event-loop iteration after it finished and always
    before run_load returns (keep it cheap: it runs on the loop). Cancelling the task stops the load cleanly.

    `pattern.processes > 1` splits a closed loop's workers over that many client processes (results come
    back here, in arrival order, on one time base). The list returned is a `LoadResults`: it also says why
    the timed load ended (`stop_reason`) and holds the answered requests' inter-token gaps (`itl`).
    `clock_origin` (perf_counter, epoch ms), `worker_offset`, `input_offset` (where in the inputs' order
    this process starts) and `should_stop` are how those processes share one run; a single-process caller
    leaves them alone. `keep_gaps` also keeps each answer's gaps on its result (`itl_s`), for a benchmark
    that needs every one exactly (memory then grows with the gaps). `cpu_meter`: read the target's CPU
    counters at each request's start and end (one process only: several client processes do not share
    one in-flight count, so their requests carry none)."""
    if pattern.processes > 1 and pattern.concurrency > 1:
        return await _run_in_processes(base_url, template, payload, pattern, on_result)
    url = urlsplit(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"url: {base_url!r} — an http:// or https:// address")
    host = url.hostname
    port = url.port or (443 if url.scheme == "https" else 80)
    host_header = url.netloc
    prefix = url.path.rstrip("/")
    payloads = PayloadSet.of(payload)
    if prefix:
        payloads = replace(
            payloads, payloads=tuple(_with_path(p, prefix + p.path) for p in payloads.payloads)
        )
    requests = [build_request_bytes(host_header, p) for p in payloads.payloads]
    run = _Run(template, payloads, requests, pattern, on_result)
    run.keep_gaps = keep_gaps
    run.cpu_meter = cpu_meter
    keep_body = bool(template.check.json_field)
    n_conns = pattern.concurrency
    transport = pattern.transport
    if transport == "auto":
        transport = "raw" if url.scheme == "http" else "aiohttp"
    if transport == "raw" and url.scheme != "http":
        raise ValueError(f"load.transport: 'raw' — speaks plain http only; {base_url} needs 'aiohttp'")

    session = None
    conns: list[Any] = []
    stop_poller: asyncio.Task[None] | None = None
    try:
        if transport == "raw":
            conns = [_RawConnection(host, port, keep_body) for _ in range(n_conns)]
        else:
            import aiohttp

            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=n_conns, ttl_dns_cache=3600),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None),
            )
            each = []
            for p in payloads.payloads:
                headers = dict(p.headers)
                if p.content_type:
                    headers["Content-Type"] = p.content_type
                each.append((f"{url.scheme}://{host_header}{p.path}", headers, p.body))
            conns = [_AiohttpConnection(session, run.payload.method, each) for _ in range(n_conns)]
        # Connect every worker before the clock starts (a warm keep-alive pool, like wrk); a connection
        # that fails here is retried by its first request, which then records the error.
        await asyncio.gather(*(c.connect(pattern.timeout_s) for c in conns), return_exceptions=True)
        if clock_origin is None:
            run.t0 = time.perf_counter()
            run.epoch0_ms = time.time() * 1000.0
        else:  # perf_counter is CLOCK_MONOTONIC: one time base for every process of the machine
            run.t0, run.epoch0_ms = clock_origin
        if should_stop is not None:
            stop_poller = asyncio.create_task(_poll_stop(run, should_stop))
        run.worker_offset = worker_offset
        run.next_input = payloads.chooser(input_offset)  # several processes: each its own share

        if pattern.warmup:
            wb = _Budget(run, pattern.warmup, None, timed=False)
            k = min(n_conns, pattern.warmup)
            await asyncio.gather(*(_closed_worker(run, conns[i], i, wb, True) for i in range(k)))
        run.stop = run.deliver_error is not None  # a warm-up that failed to deliver ends the run
        if run.stop:
            run.end(StopReason.ERRORS)
        if pattern.mode == "closed":
            deadline = None if pattern.duration_s is None else time.perf_counter() + pattern.duration_s
            budget = _Budget(run, pattern.requests, deadline)
            await asyncio.gather(*(_closed_worker(run, c, i, budget, False) for i, c in enumerate(conns)))
        else:
            await _open_loop(run, conns)
    finally:
        with contextlib.suppress(Exception):  # interrupted or not, every finished request is delivered
            run.deliver()
        if stop_poller is not None:
            stop_poller.cancel()
        for c in conns:
            c.close()
        if session is not None:
            await session.close()
    if run.deliver_error is not None:
        raise run.deliver_error
    if not run.results.stop_reason and run.stop:  # cancelled from outside the loop
        run.results.stop_reason = StopReason.INTERRUPTED
    return run.results


async def _poll_stop(run: _Run, should_stop: Callable[[], bool]) -> None:
    while not run.stop:
        await asyncio.sleep(0.02)
        if should_stop():
            run.stop = True
            run.end(StopReason.INTERRUPTED)


# -- several client processes (closed loop) -------------------------------------------------------------------


def _shares(total: int | None, k: int) -> list[int | None]:
    if total is None:
        return [None] * k
    return [total // k + (1 if i < total % k else 0) for i in range(k)]


_FRAME = struct.Struct("!I")


def _write_msg(stream: Any, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def _read_msg(stream: Any) -> Any:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError("the other side closed the pipe")
    (n,) = _FRAME.unpack(head)
    return pickle.loads(stream.read(n))


def _child_main() -> None:
    """One client process (`python -m tui_profiler.load._child`): its share of the workers, results
    streamed back to the parent on stdout in small batches. A subprocess rather than multiprocessing, so it
    works from any main module."""
    import threading

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    base_url, template, payload, pattern, worker_offset, input_offset = _read_msg(stdin)
    _write_msg(stdout, "ready")
    origin = _read_msg(stdin)
    stop = threading.Event()

    def watch_stdin() -> None:  # "stop" from the parent, or the parent gone
        with contextlib.suppress(Exception):
            _read_msg(stdin)
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    batch: list[RequestResult] = []
    last = [time.perf_counter()]

    def on_result(res: RequestResult) -> None:
        batch.append(res)
        now = time.perf_counter()
        if len(batch) >= 256 or now - last[0] > 0.05:  # small batches: the parent's live view stays live
            _write_msg(stdout, batch)
            batch.clear()
            last[0] = now

    try:
        done = run(
            run_load(base_url, template, payload, pattern, on_result, clock_origin=origin,
                     worker_offset=worker_offset, input_offset=input_offset, should_stop=stop.is_set)
        )  # fmt: skip
        if batch:
            _write_msg(stdout, batch)
        _write_msg(stdout, ("end", done.stop_reason, done.itl))
    except Exception as exc:
        _write_msg(stdout, f"error: {type(exc).__name__}: {exc}")
    finally:
        # The stdin watcher may still block in a read; leave without the interpreter's shutdown dance.
        with contextlib.suppress(Exception):
            stdout.flush()
        os._exit(0)


async def _read_async(reader: asyncio.StreamReader) -> Any:
    (n,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    return pickle.loads(await reader.readexactly(n))


async def _run_in_processes(
    base_url: str,
    template: RequestTemplate,
    payload: Payload | PayloadSet,
    pattern: LoadPattern,
    on_result: OnResult | None,
) -> LoadResults:
    """Split a closed loop's workers (and requests, warm-up) over `pattern.processes` client processes; their
    results come back in arrival order on one time base; stop-when-stable is judged here, over all of them."""
    from dataclasses import replace

    k = min(pattern.processes, pattern.concurrency)
    conc, reqs, warm = (
        _shares(pattern.concurrency, k),
        _shares(pattern.requests, k),
        _shares(pattern.warmup, k),
    )
    judge = pattern.stop_judge()  # judged here, over every process's answers
    results = LoadResults()
    ended: list[str] = []  # each process's own reason
    procs: list[asyncio.subprocess.Process] = []
    stopped = [False]

    def send_stop() -> None:
        if stopped[0]:
            return
        stopped[0] = True
        for p in procs:
            with contextlib.suppress(Exception):
                assert p.stdin is not None
                p.stdin.write(_FRAME.pack(0))  # any frame means "stop"
                p.stdin.close()

    async def pump(p: asyncio.subprocess.Process) -> None:
        assert p.stdout is not None
        while True:
            msg = await _read_async(p.stdout)
            if isinstance(msg, tuple):  # ("end", why it ended, its pooled gaps)
                ended.append(msg[1])
                results.itl.merge(msg[2])
                return
            if isinstance(msg, str):
                raise RuntimeError(f"client process: {msg}")
            for res in msg:
                res.seq = len(results)
                results.append(res)
                if judge is not None and not res.warmup and res.ok and res.latency_s is not None:
                    if judge.add(res.latency_s, res.ttft_s, res.tpot_s) and not stopped[0]:
                        results.stop_reason = StopReason.CONVERGED
                        send_stop()
                if on_result is not None:
                    on_result(res)

    # Each process starts at its own place in the inputs' order: after the requests of those before it (so a
    # cell of distinct prompts sends each once), or at its share of the inputs when no count is known.
    n_inputs = len(PayloadSet.of(payload).payloads)
    sends = [(w or 0) + r if r is not None else None for w, r in zip(warm, reqs, strict=True)]
    input_offsets = [
        sum(s or 0 for s in sends[:i]) if sends[i] is not None else i * (n_inputs // k) for i in range(k)
    ]
    try:
        offset = 0
        for i in range(k):
            sub = replace(pattern, concurrency=conc[i] or 1, requests=reqs[i], warmup=warm[i] or 0, processes=1,
                          stop_when_stable=None, stop_goals=())  # fmt: skip
            p = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tui_profiler.load._child",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            procs.append(p)
            assert p.stdin is not None
            data = pickle.dumps(
                (base_url, template, payload, sub, offset, input_offsets[i]), protocol=pickle.HIGHEST_PROTOCOL
            )
            p.stdin.write(_FRAME.pack(len(data)) + data)
            offset += conc[i] or 1
        for p in procs:  # every process imported and connected-ready before the clock starts
            assert p.stdout is not None
            msg = await _read_async(p.stdout)
            if msg != "ready":
                raise RuntimeError(f"client process failed to start: {msg}")
        origin = pickle.dumps((time.perf_counter(), time.time() * 1000.0))
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(_FRAME.pack(len(origin)) + origin)
        await asyncio.gather(*(pump(p) for p in procs))
    finally:
        send_stop()
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 5)
            except (TimeoutError, asyncio.CancelledError):
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
    if not results.stop_reason:  # the children ran without goals: say it as this pattern would
        reason = StopReason(ended[0]) if ended and ended[0] else StopReason.INTERRUPTED
        by_count = {StopReason.REQUESTS: True, StopReason.DURATION: False}.get(reason)
        results.stop_reason = reason if by_count is None else pattern.ended(by_count)
    return results


def _with_path(payload: Payload, path: str) -> Payload:
    from dataclasses import replace

    return replace(payload, path=path)


# -- event loop ------------------------------------------------------------------------------------------------


def _uvloop() -> Any:
    """The uvloop module, or None when it is not installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None
    return uvloop


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (about half the per-request client cost), else asyncio's."""
    uvloop = _uvloop()
    return asyncio.new_event_loop() if uvloop is None else uvloop.new_event_loop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the fastest loop available. Use it for headless runs and client benchmarks."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)


def run_loop_name() -> str:
    """The event loop `run` runs on (and so `tui-profiler run`): "uvloop" or "asyncio"."""
    return "asyncio" if _uvloop() is None else "uvloop"


def uvloop_active() -> bool:
    with contextlib.suppress(RuntimeError):
        return type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    return False
