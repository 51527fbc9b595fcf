"""The raw client's answer reader (tui_profiler.load.http1, llhttp through httptools) agrees with h11.

Hypothesis writes HTTP/1.1 answers — Content-Length, chunked with chunk extensions and trailers, 1xx
interim answers first, `Connection` token lists, read-until-close, HEAD/204/304 without a body — and
faults: conflicting Content-Length, bytes after the answer, answers cut short. Each is fed to the reader
whole, cut at random points and byte by byte, and the result (status, headers, body, trailers, keep-alive
decision, error or not) must be what h11 makes of the same bytes.

Where the reader is deliberately stricter or more lenient than h11 the oracle says so, in one place
(`expected`): llhttp refuses Content-Length together with chunked (h11 lets chunked win; RFC 9112 §6.3
says to treat it as an error) and a repeated Content-Length even with equal values (h11 merges equal
ones); empty lines (CR/LF only) after an answer are ignored, as llhttp does between messages.

Then real servers: aiohttp streaming a chunked answer whose last chunk comes in a later write, and a
scripted TCP server splitting answers where the old parser broke.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

import h11
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tui_profiler.load.client import run_load
from tui_profiler.load.http1 import AnswerReader
from tui_profiler.load.inputs import InputSpec
from tui_profiler.load.patterns import LoadPattern
from tui_profiler.load.template import build_payload, default_template

Headers = list[tuple[bytes, bytes]]


# -- what an answer says, and what a reader made of it ---------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a reader made of one answer: `complete` (the final answer was read whole) and `error` (a
    protocol error, of the answer or of the bytes after it) may both be true; the rest only counts when
    complete."""

    complete: bool
    error: bool
    status: int | None = None
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    trailers: Headers = field(default_factory=list)
    keep_alive: bool = False

    def comparable(self) -> tuple[object, ...]:
        if not self.complete:
            return (False, self.error)
        answer = (True, self.error, self.status, self.headers, self.body, self.trailers)
        return answer if self.error else (*answer, self.keep_alive)  # after an error nothing is reused


def read_with_h11(pieces: Sequence[bytes], method: str) -> Outcome:
    """h11's reading of the answer to one `method` request, the server closing after `pieces`."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    status: int | None = None
    headers: Headers = []
    body = bytearray()
    try:
        for i, piece in enumerate([*pieces, b""]):  # b"": the server closed
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                    break
                if isinstance(event, h11.Response):
                    status, headers = event.status_code, list(event.headers)
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    # The answer is whole; whatever h11 holds, or is still to come, came after it.
                    after, closed = conn.trailing_data
                    after += b"".join(pieces[i + 1 :])
                    return Outcome(
                        complete=True,
                        error=bool(after),
                        status=status,
                        headers=headers,
                        body=bytes(body),
                        trailers=list(event.headers),
                        # (h11 says DONE after a read-until-close body too; the server has closed, though)
                        keep_alive=conn.their_state is h11.DONE and not closed,
                    )
    except h11.RemoteProtocolError:
        return Outcome(complete=False, error=True)
    return Outcome(complete=False, error=True)  # closed before the answer was whole


def read_with_ours(pieces: Sequence[bytes], method: str) -> Outcome:
    reader = AnswerReader(keep_body=True)
    reader.start(no_body=method == "HEAD")
    for i, piece in enumerate(pieces):
        reader.feed(piece, float(i))
    reader.eof(float(len(pieces)))
    return Outcome(
        complete=reader.done,
        error=reader.error is not None,
        status=reader.status if reader.done else None,
        headers=reader.headers,
        body=reader.body,
        trailers=reader.trailers,
        keep_alive=reader.keep_alive,
    )


# -- answers ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One generated answer: the bytes on the wire and the request method it answers."""

    wire: bytes
    method: str
    after: bytes = b""  # bytes the server sent after the answer
    cut: int = 0  # bytes dropped from the end (the server closed early)
    fault: str | None = None  # the fault written into it, if any

    def stream(self) -> bytes:
        data = self.wire + self.after
        return data[: len(data) - self.cut] if self.cut else data


RESERVED = {b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"trailer"}
TOKEN = st.from_regex(rb"\A[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,12}\Z").filter(
    lambda name: name.lower() not in RESERVED
)
VALUE = st.from_regex(rb"\A[ \t]?([!-~]+([ \t][!-~]+){0,3})?[ \t]?\Z")
SERVER_TIMING = st.sampled_from([b"infer;dur=1.5", b'queue;dur=0.2;desc="a, b"', b"total;dur=3, x;dur=1"])
FIELDS = st.lists(
    st.one_of(st.tuples(TOKEN, VALUE), st.tuples(st.sampled_from([b"Server-Timing"]), SERVER_TIMING)),
    max_size=4,
)
CONNECTION = st.sampled_from(
    [
        None,
        b"close",
        b"keep-alive",
        b"Keep-Alive",
        b"keep-alive, close",
        b"close, keep-alive",
        b"foo, CLOSE",
        b"te",
    ]
)
REASON = st.from_regex(rb"\A([A-Za-z][A-Za-z ]{0,12}[A-Za-z])?\Z")
EXTENSION = st.from_regex(rb'\A(;[a-z]{1,5}(=([a-z0-9]{1,5}|"[a-z ,;]{0,6}"))?){1,2}\Z')


FAULTS = {  # by framing: the faults that framing can carry, and no fault twice as often as each
    "length": [None, None, "conflicting length", "repeated equal length", "after", "cut short"],
    "chunked": [None, None, "length with chunked", "after", "cut short"],
    "until close": [None, None, "cut short"],
}


def head(version: bytes, status: int, reason: bytes, fields: Headers) -> bytes:
    lines = [b"HTTP/" + version + b" " + str(status).encode() + (b" " + reason if reason else b"")]
    lines += [name + b":" + value for name, value in fields]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@st.composite
def chunked_body(draw: st.DrawFn, body: bytes) -> bytes:
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=4)))) if body else []
    out = []
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        if end <= start:
            continue
        size = format(end - start, draw(st.sampled_from(["x", "X", "03x"]))).encode()
        ext = draw(st.one_of(st.just(b""), EXTENSION))
        out.append(size + ext + b"\r\n" + body[start:end] + b"\r\n")
    last_ext = draw(st.one_of(st.just(b""), EXTENSION))
    trailers = draw(FIELDS)
    return (
        b"".join(out)
        + b"0"
        + last_ext
        + b"\r\n"
        + b"".join(n + b": " + v + b"\r\n" for n, v in trailers)
        + b"\r\n"
    )


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    method = draw(st.sampled_from(["GET", "POST", "HEAD"]))
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.1", b"1.0"]))
    interim = b""
    if version == b"1.1":
        for _ in range(draw(st.integers(0, 2))):
            interim += head(b"1.1", draw(st.sampled_from([100, 102, 103])), draw(REASON), draw(FIELDS))
    status = draw(st.sampled_from([200, 200, 201, 204, 304, 404, 500]))
    fields: Headers = draw(FIELDS)
    connection = draw(CONNECTION)
    if connection is not None:
        fields.insert(draw(st.integers(0, len(fields))), (b"Connection", connection))
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["length", "length", "chunked", "chunked", "until close"]))
    no_body = method == "HEAD" or status in (204, 304)
    wanted = draw(st.sampled_from(FAULTS[framing]))
    fault = None  # the fault written into this answer
    if framing == "length":
        fields.append((b"Content-Length", str(len(body)).encode()))
        if wanted == "conflicting length":
            fields.append((b"Content-Length", str(len(body) + draw(st.integers(1, 5))).encode()))
            fault = wanted
        elif wanted == "repeated equal length":
            fields.append((b"content-length", str(len(body)).encode()))
            fault = wanted
        wire_body = body
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", b"chunked"))
        if wanted == "length with chunked":
            fields.append((b"Content-Length", str(len(body)).encode()))
            fault = wanted
        wire_body = draw(chunked_body(body))
    else:
        wire_body = body
    if no_body:
        wire_body = b""
    wire = interim + head(version, status, draw(REASON), fields) + wire_body
    after = b""
    if wanted == "after":
        after = draw(st.one_of(st.binary(min_size=1, max_size=8), st.just(b"HTTP/1.1 200 OK\r\n"),
                               st.sampled_from([b"\r\n", b"\r\n\r\n"])))  # fmt: skip
        fault = wanted
    cut = 0
    if wanted == "cut short":
        cut = draw(st.integers(1, len(wire)))
        fault = wanted
    return Answer(wire=wire, method=method, after=after, cut=cut, fault=fault)


def expected(answer: Answer, pieces: Sequence[bytes]) -> Outcome:
    """h11's reading, adjusted where the reader differs on purpose (the module docstring says why)."""
    theirs = read_with_h11(pieces, answer.method)
    if answer.fault in ("length with chunked", "repeated equal length"):
        return Outcome(complete=False, error=True)
    if theirs.complete and theirs.error and not answer.stream()[len(answer.wire) :].strip(b"\r\n"):
        return replace(theirs, error=False)  # only empty lines after the answer
    return theirs


def cut_at(data: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted({p for p in points if 0 < p < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.slow  # 400 examples, each parsed four ways
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=answers(), data=st.data())
def test_reader_agrees_with_h11_whole_cut_anywhere_and_byte_by_byte(
    answer: Answer, data: st.DataObject
) -> None:
    event(f"fault: {answer.fault}")
    stream = answer.stream()
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=6), label="cuts")
    for pieces in (
        [stream],
        cut_at(stream, points),
        [stream[i : i + 1] for i in range(len(stream))],
    ):
        want = expected(answer, pieces)
        got = read_with_ours(pieces, answer.method)
        assert got.comparable() == want.comparable(), (stream, pieces)


# -- cases named in the issue, each on its own (the property above covers them among many) ---------------------


def ours(stream: bytes, method: str = "GET", *, by_byte: bool = False) -> Outcome:
    pieces = [stream[i : i + 1] for i in range(len(stream))] if by_byte else [stream]
    return read_with_ours(pieces, method)


@pytest.mark.parametrize("by_byte", [False, True])
def test_chunk_extensions_and_trailers(by_byte: bool) -> None:
    stream = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;name=value;q="a b"\r\nWiki\r\n5;x\r\npedia\r\n0;end=1\r\nServer-Timing: infer;dur=2\r\n\r\n'
    )
    got = ours(stream, by_byte=by_byte)
    assert got == Outcome(True, False, 200, [(b"transfer-encoding", b"chunked")], b"Wikipedia",
                          [(b"server-timing", b"infer;dur=2")], True)  # fmt: skip


def test_last_chunk_in_a_later_read() -> None:
    got = read_with_ours(
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", b"0\r\n\r\n"], "GET"
    )
    assert got.complete and not got.error and got.body == b"abc"


def test_conflicting_content_length_is_refused() -> None:
    got = ours(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
    assert not got.complete and got.error


@pytest.mark.parametrize(("connection", "keep"), [(b"keep-alive", True), (b"keep-alive, close", False),
                                                   (b"Close", False), (b"upgrade-ish, te", True)])  # fmt: skip
def test_connection_token_list(connection: bytes, keep: bool) -> None:
    got = ours(b"HTTP/1.1 200 OK\r\nConnection: " + connection + b"\r\nContent-Length: 0\r\n\r\n")
    assert got.complete and got.keep_alive is keep


def test_bytes_after_the_body_are_this_answers_error() -> None:
    got = ours(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabcHTTP/1.1 200 OK\r\n")
    assert got.complete and got.error and got.body == b"ab"


def test_head_answer_has_no_body_whatever_its_length() -> None:
    got = ours(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", "HEAD")
    assert got.complete and not got.error and got.keep_alive and got.body == b""


def test_times_are_the_arrivals_of_the_reads_that_carried_each_part() -> None:
    reader = AnswerReader(keep_body=False)
    reader.start(no_body=False)
    pieces = [b"HTTP/1.1 200 OK\r\n", b"Content-Length: 3\r\n\r\na", b"b", b"c"]
    for t, piece in enumerate(pieces):
        reader.feed(piece, float(t))
    assert (reader.t_first, reader.t_headers, reader.t_done) == (0.0, 1.0, 3.0)
    assert reader.nbytes == len(b"".join(pieces))


# -- real servers ----------------------------------------------------------------------------------------------


def payload_for(path: str):  # type: ignore[no-untyped-def]
    p = build_payload(InputSpec(kind="tensor", base_size=(4,), dtype="float32"), default_template())
    return replace(p, path=path)


async def load(base: str, path: str, requests: int = 3):  # type: ignore[no-untyped-def]
    return await run_load(
        base,
        default_template(),
        payload_for(path),
        LoadPattern(requests=requests, warmup=0, transport="raw", timeout_s=10),
    )


@pytest.fixture
async def streaming_server() -> AsyncIterator[str]:
    """aiohttp answering with a chunked stream: two chunks, then (after a pause) the last chunk alone."""
    from aiohttp import web

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Server-Timing": "infer;dur=1.25"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"outputs": ')
        await asyncio.sleep(0.01)
        await resp.write(b"[1, 2]}")
        await asyncio.sleep(0.02)
        await resp.write_eof()  # the zero-size last chunk, in a write (and a read) of its own
        return resp

    app = web.Application()
    app.router.add_post("/stream", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_aiohttp_stream_whose_last_chunk_comes_later(streaming_server: str) -> None:
    res = await load(streaming_server, "/stream")
    assert [r.outcome for r in res] == ["ok"] * 3, [r.error for r in res]
    assert all(r.infer_ms == 1.25 for r in res)
    assert all(r.latency_s is not None and r.latency_s >= 0.03 for r in res)  # the wait for the last chunk


@dataclass
class Script:
    """What the scripted server answers: per path, the answers in order (the last one repeats), each
    answer a list of parts written separately after a short pause; and how many connections it took."""

    answers: dict[str, list[list[bytes]]] = field(default_factory=dict)
    connections: int = 0
    base: str = ""


@pytest.fixture
async def scripted() -> AsyncIterator[Script]:
    script = Script()
    served: dict[str, int] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                               if line.startswith(b"content-length:")), 0)  # fmt: skip
                await reader.readexactly(length)
                path = head.split(b" ")[1].decode()
                answers = script.answers[path]
                n = served[path] = served.get(path, 0) + 1
                for part in answers[min(n, len(answers)) - 1]:
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(0.005)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    script.base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield script
    finally:
        server.close()
        await server.wait_closed()


async def test_trailers_and_last_chunk_split_over_reads(scripted: Script) -> None:
    scripted.answers["/t"] = [
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n",
            b"0;last\r\nServer-Timi",
            b"ng: infer;dur=4\r\n",
            b"\r\n",
        ]
    ]
    res = await load(scripted.base, "/t")
    assert [r.outcome for r in res] == ["ok"] * 3, [r.error for r in res]
    assert [r.infer_ms for r in res] == [4.0] * 3  # Server-Timing sent as a trailer
    assert scripted.connections == 1  # kept alive


async def test_bytes_after_a_body_fail_that_answer_not_the_next(scripted: Script) -> None:
    ok = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]
    scripted.answers["/extra"] = [[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"], ok]
    res = await load(scripted.base, "/extra", requests=3)
    assert [r.outcome for r in res] == ["error", "ok", "ok"], [r.error for r in res]
    assert "bytes after the end of the answer" in res[0].error


async def test_keep_alive_close_token_list_closes(scripted: Script) -> None:
    scripted.answers["/kc"] = [
        [b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok"]
    ]
    res = await load(scripted.base, "/kc", requests=3)
    assert [r.outcome for r in res] == ["ok"] * 3, [r.error for r in res]
    assert scripted.connections == 3  # one per answer: the server asked to close each time
