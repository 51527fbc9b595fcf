"""Streamed generative answers: the SSE / NDJSON parser fed whole, cut anywhere and a byte at a time; a
stdlib SSE server that writes its answers a byte at a time, profiled through `run_load` on both
transports (TTFT, token counts from `usage` and counted, a cut stream); goodput against SLOs by hand."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_profiler.config.model import SloConfig
from tui_profiler.load.client import RequestResult, run_load
from tui_profiler.load.inputs import InputSpec
from tui_profiler.load.patterns import LoadPattern
from tui_profiler.load.stream import NDJSON, SSE, WHOLE, AnswerStream, body_format
from tui_profiler.load.template import build_payload, builtin_template, parse_template
from tui_profiler.sweep.outcome import generative_columns, goodput, meets_slo

# -- events as servers write them ----------------------------------------------------------------------------


def completion_chunk(text: str) -> dict[str, Any]:
    return {"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": text}]}


def chat_chunk(text: str) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }


def tgi_event(text: str, i: int) -> dict[str, Any]:
    return {"token": {"id": i, "text": text, "logprob": -0.5, "special": False}, "generated_text": None}


def sse(docs: list[Any], eol: str = "\n", done: bool = True) -> bytes:
    out = []
    for doc in docs:
        out.append(
            f": keep-alive{eol}"
            if isinstance(doc, str) and doc == ":"
            else f"data: {json.dumps(doc)}{eol}{eol}"
        )
    if done:
        out.append(f"data: [DONE]{eol}{eol}")
    return "".join(out).encode()


def feed_all(stream: AnswerStream, body: bytes, cuts: list[int]) -> AnswerStream:
    stream.head(200, "text/event-stream")
    start = 0
    for i, cut in enumerate([*sorted(set(cuts)), len(body)]):
        if cut > start:
            stream.feed(body[start:cut], float(i))
            start = cut
    stream.close(float(len(cuts) + 1))
    return stream


texts = st.lists(st.text(min_size=1, max_size=6), min_size=0, max_size=12)
EOLS = st.sampled_from(["\n", "\r\n", "\r"])


@settings(max_examples=150, deadline=None)
@given(
    texts,
    EOLS,
    st.sampled_from(["completions", "chat", "tgi"]),
    st.booleans(),
    st.data(),
)
def test_sse_whole_cut_anywhere_and_byte_by_byte_agree(
    pieces: list[str], eol: str, kind: str, usage: bool, data: st.DataObject
) -> None:
    if kind == "completions":
        docs: list[Any] = [completion_chunk(t) for t in pieces]
    elif kind == "chat":
        docs = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]  # not a token
        docs += [chat_chunk(t) for t in pieces]
    else:
        docs = [tgi_event(t, i) for i, t in enumerate(pieces)]
    docs.insert(len(docs) // 2, ":")  # a comment line somewhere
    if usage:
        docs.append({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(pieces) + 3}})
    body = sse(docs, eol, done=kind != "tgi")
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=8))

    whole = feed_all(AnswerStream("auto", True, keep_text=True), body, [])
    split = feed_all(AnswerStream("auto", True, keep_text=True), body, cuts)
    bytewise = feed_all(AnswerStream("auto", True, keep_text=True), body, list(range(len(body))))
    for s in (whole, split, bytewise):
        assert s.texts == pieces
        assert s.token_events == len(pieces)
        assert s.server_output_tokens == (len(pieces) + 3 if usage else None)
        assert s.prompt_tokens == (7 if usage else None)
        assert s.done == (kind != "tgi")
    # a token event's time is the read that completed it: byte by byte, never before an earlier one
    assert list(bytewise.times) == sorted(bytewise.times)


@settings(max_examples=100, deadline=None)
@given(texts, st.booleans(), st.data())
def test_ndjson_whole_cut_anywhere_and_byte_by_byte_agree(
    pieces: list[str], final_newline: bool, data: st.DataObject
) -> None:
    lines = [json.dumps({"model": "m", "response": t, "done": False}) for t in pieces]
    lines.append(
        json.dumps({"done": True, "eval_count": 41, "prompt_eval_count": 9, "prompt_eval_duration": 2_000_000,
                    "eval_duration": 30_000_000})
    )  # fmt: skip
    body = ("\n".join(lines) + ("\n" if final_newline else "")).encode()
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=8))
    for cut_points in ([], cuts, list(range(len(body)))):
        s = AnswerStream("auto", True, keep_text=True)
        assert s.head(200, "application/x-ndjson")
        start = 0
        for cut in [*sorted(set(cut_points)), len(body)]:
            s.feed(body[start:cut], 0.0)
            start = cut
        s.close(1.0)
        assert s.texts == pieces and s.done
        assert (s.server_output_tokens, s.prompt_tokens) == (41, 9)
        assert (s.prefill_ms, s.decode_ms) == pytest.approx((2.0, 30.0))


def test_an_event_cut_before_its_end_is_not_counted() -> None:
    body = sse([completion_chunk("a"), completion_chunk("b")], done=False)
    s = AnswerStream("sse", True)
    s.head(200, "text/event-stream")
    s.feed(body[:-1], 0.0)  # the last event lacks its empty line: not dispatched yet
    assert s.token_events == 1
    m = s.metrics(-1.0, None)
    assert m.output_tokens == 1 and m.output_tokens_source == "events" and m.ttft_s == 1.0
    assert m.tpot_s is None  # no end: no end-to-end latency to spread


def test_metrics_from_arrival_times() -> None:
    s = AnswerStream("auto", True)
    s.head(200, "text/event-stream; charset=utf-8")
    for i, t in enumerate([0.5, 0.6, 0.8, 1.1]):
        s.feed(f"data: {json.dumps(completion_chunk(str(i)))}\n\n".encode(), t)
    s.feed(b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}\n\n', 1.2)
    s.feed(b"data: [DONE]\n\n", 1.2)
    s.close(1.2)
    m = s.metrics(0.0, 1.3)
    assert m.streamed and m.ttft_s == 0.5
    assert m.itl_s == pytest.approx((0.1, 0.2, 0.3))
    assert m.itl_p50_s == pytest.approx(0.2)
    assert m.output_tokens == 4 and m.output_tokens_source == "usage" and m.prompt_tokens == 3
    assert m.tpot_s == pytest.approx((1.3 - 0.5) / 3)


def test_a_whole_answer_is_one_token_time() -> None:
    s = AnswerStream("auto", True)
    assert s.head(200, "application/json") and s.format == WHOLE
    s.feed(b'{"choices": [{"text": "hello"}], "usage": {"prompt_tokens": 5, "completion_tokens": 9}}', 0.9)
    s.close(0.9)
    m = s.metrics(0.1, 0.9)
    assert not m.streamed and m.ttft_s == pytest.approx(0.8)
    assert m.tpot_s is None and m.itl_s == () and m.itl_p50_s is None
    assert (m.output_tokens, m.output_tokens_source, m.prompt_tokens) == (9, "usage", 5)


def test_body_format() -> None:
    assert body_format("auto", "text/event-stream", False) == SSE
    assert body_format("auto", "application/jsonl", False) == NDJSON
    assert body_format("auto", "application/json", False) is None  # not generative: not read
    assert body_format("auto", "application/json", True) == WHOLE
    assert body_format("sse", "application/json", False) == SSE
    assert body_format("none", "text/event-stream", False) is None


def test_error_event_and_server_timings() -> None:
    s = AnswerStream("auto", True)
    s.head(200, "text/event-stream")
    s.feed(
        b'data: {"token": {"text": "x"}}\n\ndata: {"error": "out of memory", "error_type": "generation"}\n\n',
        0.1,
    )
    assert s.error == "out of memory" and s.token_events == 1
    s = AnswerStream("auto", True)
    s.head(200, "text/event-stream")
    final = {"choices": [{"text": "z"}], "timings": {"prefill_ms": 12.5, "decode_ms": 80.0}}
    s.feed(sse([final]), 0.1)
    m = s.metrics(0.0, 0.2)
    assert (m.server_prefill_ms, m.server_decode_ms) == (12.5, 80.0)


# -- a stdlib SSE server that writes a byte at a time --------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _write(self, data: bytes) -> None:
        for i in range(len(data)):  # one byte per write: every read on the client may split anywhere
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self._write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = int(body.get("max_tokens") or 5)
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        cut = self.path.startswith("/cut")
        if not body.get("stream"):
            doc = {"choices": [{"text": "w" * n}], "usage": {"prompt_tokens": 4, "completion_tokens": n}}
            data = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self._write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for i in range(n):
            time.sleep(0.002)
            self._chunk(f"data: {json.dumps(completion_chunk(f't{i}'))}\n\n".encode())
            if cut and i == 2:  # three events, then the connection drops mid-stream
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
        if usage:
            # the server's own count differs from the events on purpose (a server may pack tokens)
            self._chunk(
                b'data: {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": %d}}\n\n' % (n + 1)
            )
        self._chunk(b"data: [DONE]\n\n")
        self._write(b"0\r\n\r\n")


@pytest.fixture(scope="module")
def sse_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


TEXT = InputSpec(kind="text", base_size=(8,), token_len=8, encoding="text")


async def _profile(
    base: str, transport: str, template: Any, output_len: int | None, path: str = ""
) -> list[RequestResult]:
    payload = build_payload(TEXT, template.with_model("m"), output_len=output_len)
    if path:
        from dataclasses import replace

        payload = replace(payload, path=path)
    pattern = LoadPattern(concurrency=2, requests=4, warmup=0, transport=transport, timeout_s=20)  # type: ignore[arg-type]
    return await run_load(base, template, payload, pattern)


@pytest.mark.parametrize("transport", ["raw", "aiohttp"])
async def test_streamed_answers_byte_by_byte_through_run_load(sse_server: str, transport: str) -> None:
    results = await _profile(sse_server, transport, builtin_template("openai-completions"), 6)
    assert len(results) == 4
    assert results.itl.n == 4 * 5  # six token events each: their gaps pooled, none kept per request
    for r in results:
        assert r.ok, r.error
        assert r.latency_s is not None and r.ttft_s is not None
        assert 0 < r.ttft_s <= r.latency_s
        assert r.itl_s == ()
        assert (r.output_tokens, r.output_tokens_source, r.prompt_tokens) == (7, "usage", 4)
        assert r.tpot_s == pytest.approx((r.latency_s - r.ttft_s) / 6)
        row = r.as_row()
        assert row["output_tokens_source"] == "usage" and row["ttft_s"] == r.ttft_s


@pytest.mark.parametrize("transport", ["raw", "aiohttp"])
async def test_without_usage_tokens_are_counted(sse_server: str, transport: str) -> None:
    no_usage = parse_template(
        {
            "base": "openai-completions",
            "json": {"prompt": "{input}", "max_tokens": "{output_len}", "stream": True},
        },
        "t",
    )
    results = await _profile(sse_server, transport, no_usage, 5)
    for r in results:
        assert r.ok, r.error
        assert (r.output_tokens, r.output_tokens_source, r.prompt_tokens) == (5, "events", None)


@pytest.mark.parametrize("transport", ["raw", "aiohttp"])
async def test_a_cut_stream_fails_and_keeps_its_tokens(sse_server: str, transport: str) -> None:
    results = await _profile(sse_server, transport, builtin_template("openai-completions"), 6, path="/cut")
    assert len(results) == 4
    for r in results:
        assert not r.ok and r.outcome == "error" and r.latency_s is None
        assert r.error.startswith("stream cut after 3 token events: "), r.error
        assert (r.output_tokens, r.output_tokens_source) == (3, "events")
        assert r.ttft_s is not None and r.itl_p50_s is not None and r.tpot_s is None
    assert results.itl.n == 0  # a failed answer's gaps are not the cell's


@pytest.mark.parametrize("transport", ["raw", "aiohttp"])
async def test_a_whole_answer_of_a_generative_template(sse_server: str, transport: str) -> None:
    whole = parse_template(
        {"base": "openai-completions", "json": {"prompt": "{input}", "max_tokens": "{output_len}"}}, "t"
    )
    for r in await _profile(sse_server, transport, whole, 3):
        assert r.ok, r.error
        assert r.ttft_s == r.latency_s  # one whole answer: TTFT is end to end
        assert r.itl_s == () and r.tpot_s is None
        assert (r.output_tokens, r.output_tokens_source) == (3, "usage")


# -- goodput against SLOs, by hand -----------------------------------------------------------------------------


def _gen(seq: int, *, ok: bool = True, ttft: float | None = 0.1, tpot: float | None = 0.01,
         latency: float | None = 0.5, tokens: int | None = 40, gaps: tuple[float, ...] = (0.01, 0.02)) -> RequestResult:  # fmt: skip
    return RequestResult(
        timestamp_ms=seq, t_send_s=seq * 1.0, t_recv_s=None if latency is None else seq * 1.0 + latency,
        latency_s=latency, status=200 if ok else None, ok=ok, outcome="ok" if ok else "error", error="",
        warmup=False, worker=0, seq=seq, ttft_s=ttft, tpot_s=tpot, output_tokens=tokens, itl_s=gaps,
    )  # fmt: skip


def test_goodput_counts_requests_meeting_every_slo() -> None:
    slo = SloConfig(ttft_s=0.2, tpot_s=0.02)
    timed = [
        _gen(0),  # meets both
        _gen(1, ttft=0.3),  # TTFT too slow
        _gen(2, tpot=0.05),  # TPOT too slow
        _gen(3, ok=False, latency=None),  # failed: never meets
        _gen(4, tpot=None, tokens=1),  # one token: no decode step to judge
        _gen(5, tpot=None, tokens=None),  # TPOT not measured: does not meet
    ]
    assert [meets_slo(r, slo) for r in timed] == [True, False, False, False, True, False]
    rps, fraction = goodput(timed, slo)
    assert fraction == pytest.approx(2 / 6)
    window = (5 + 0.5) - 0.0  # first send to last answer
    assert rps == pytest.approx(2 / window)
    assert goodput(timed, None) == (None, None)
    e2e = SloConfig(e2e_s=0.4)
    assert goodput([_gen(0), _gen(1, latency=0.3)], e2e)[1] == pytest.approx(0.5)


def test_goodput_not_available_when_an_slo_cannot_be_measured() -> None:
    not_generative = [_gen(i, ttft=None, tpot=None, tokens=None, gaps=()) for i in range(3)]
    assert goodput(not_generative, SloConfig(ttft_s=1.0)) == (None, None)
    assert goodput(not_generative, SloConfig(e2e_s=1.0))[1] == 1.0


def test_cell_token_columns_pool_every_gap() -> None:
    timed = [_gen(0, gaps=(0.01,) * 9), _gen(1, gaps=(0.05,)), _gen(2, ok=False, gaps=(9.0,))]
    cols = generative_columns(timed, None)
    assert cols["itl_p50_s"] == pytest.approx(
        0.01, rel=0.01
    )  # ten gaps, nine 0.01: the pooled histogram's 1%
    assert cols["itl_p99_s"] is not None and cols["itl_p99_s"] < 9.0  # failed requests are left out
    assert cols["output_tokens_mean"] == 40 and cols["output_tokens_per_s"] == pytest.approx(80 / 1.5)
    assert cols["goodput_rps"] is None and cols["slo_met_fraction"] is None
    none = generative_columns([_gen(0, ttft=None, tpot=None, tokens=None, gaps=())], None)
    assert all(v is None for v in none.values())
