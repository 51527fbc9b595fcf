"""HTTP/1.1 answers read by llhttp (through httptools), one answer per request on a keep-alive connection.

`AnswerReader` is fed the bytes of one connection as they arrive and says when the final answer is
complete: status, headers, body, trailers, whether the connection may carry the next request, the
Server-Timing values, and three arrival times (first byte, headers done, body done) taken from the reads
that carried them, so parsing never counts as latency. llhttp does the framing (Content-Length, chunked
with extensions and trailers, 1xx interim answers, 204/304, read-until-close) and refuses what is
malformed (conflicting or duplicate Content-Length, Content-Length with chunked, bad chunk sizes).

What llhttp cannot know, this reader decides, as h11 does (tests/test_http_parser.py holds it to h11):
- a HEAD answer has no body whatever its Content-Length says;
- keep-alive only for HTTP/1.1 without a `close` token in `Connection` (`keep-alive, close` closes);
- bytes after the end of the answer are an error of this answer and its connection, never the start of
  the next one. Empty lines (CR/LF only) after an answer are ignored, as llhttp does between messages.

A `BodySink` given to `start()` gets the body as it arrives, each piece with its read's arrival time (a
streamed answer's token events are timed from these).
"""

from __future__ import annotations

from typing import Protocol

import httptools


class BodySink(Protocol):
    """Who reads an answer's body as it arrives (e.g. `load.stream.AnswerStream`): told the final answer's
    status and Content-Type, then given each de-chunked body piece with the arrival time of its read."""

    def head(self, status: int, content_type: str | None) -> bool:
        """False: this answer's body is not wanted."""
        ...

    def feed(self, data: bytes, t_arrival: float) -> None: ...


# How the answer's body ends, once its head is read.
_LENGTH_OR_CHUNKED, _UNTIL_CLOSE, _NO_BODY = 0, 1, 2


class _HeadDone(Exception):
    """Raised from a callback to stop llhttp at the end of a HEAD answer's head (it would read a body)."""


class _ExtraBytes(Exception):
    """Raised from a callback when a new message starts after the final answer."""


class AnswerReader:
    """One connection's answers, one at a time: `start()` before each request, `feed()` every read,
    `eof()` when the server closed. `done` (the final answer is complete) and `error` (a one-line reason;
    the connection must not be reused) are what the caller waits on; both can be set when the answer
    was complete and bytes followed it."""

    __slots__ = (
        "_body",
        "_connection",
        "_framed",
        "_framing",
        "_in_trailers",
        "_keep_body",
        "_no_body",
        "_parser",
        "_sink",
        "_t",
        "body",
        "done",
        "error",
        "headers",
        "keep_alive",
        "nbytes",
        "server_timing",
        "status",
        "t_done",
        "t_first",
        "t_headers",
        "trailers",
    )

    def __init__(self, keep_body: bool) -> None:
        self._keep_body = keep_body
        self._parser: httptools.HttpResponseParser | None = None
        self.start(no_body=False)

    def start(self, no_body: bool, sink: BodySink | None = None) -> None:
        """Expect a new answer; `no_body` for the answer to a HEAD request; `sink` reads its body as it
        arrives."""
        self._no_body = no_body
        self._sink = sink
        self._body: list[bytes] = []
        self._connection: list[bytes] = []
        self._framing = _LENGTH_OR_CHUNKED
        self._framed = False  # a Content-Length, or chunked as the last transfer coding
        self._in_trailers = False
        self._t = 0.0
        self.body = b""
        self.done = False
        self.error: str | None = None
        self.headers: list[tuple[bytes, bytes]] = []  # names lower-cased, values stripped
        self.trailers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.nbytes = 0
        self.server_timing: list[str] = []  # header values, then trailer values
        self.status = 0
        self.t_first: float | None = None
        self.t_headers: float | None = None
        self.t_done: float | None = None
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)

    # -- input ---------------------------------------------------------------------------------------------

    def feed(self, data: bytes, t_arrival: float) -> None:
        """The bytes of one read, which arrived at `t_arrival` (perf_counter)."""
        if self.error is not None:
            return
        if self.done:  # after the final answer (a later read): nothing but empty lines may follow
            if data.strip(b"\r\n"):
                self._fail("bytes after the end of the answer")
            return
        if self.t_first is None:
            self.t_first = t_arrival
        self._t = t_arrival
        self.nbytes += len(data)
        parser = self._parser
        assert parser is not None
        try:
            if self._no_body:
                self._feed_by_line(parser, data)
            else:
                parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _ExtraBytes):
                self._fail("bytes after the end of the answer")
            elif not isinstance(exc.__context__, _HeadDone):
                self._fail(str(exc.__context__ or exc))
        except httptools.HttpParserUpgrade:
            self._fail("the server switched protocols (101); only HTTP/1.1 answers are read")
        except httptools.HttpParserError as exc:
            self._fail("bytes after the end of the answer" if self.done else str(exc))

    def _feed_by_line(self, parser: httptools.HttpResponseParser, data: bytes) -> None:
        """A HEAD answer, fed up to each LF: llhttp ends a head only on an LF, so when `_HeadDone` stops it,
        what is left of `data` is exactly what came after the head."""
        start, n = 0, len(data)
        while start < n:
            end = data.find(b"\n", start) + 1 or n
            try:
                parser.feed_data(data[start:end])
            except httptools.HttpParserCallbackError as exc:
                if isinstance(exc.__context__, _HeadDone):
                    self._parser = None  # stopped mid-message: the next answer needs a fresh parser
                    if data[end:].strip(b"\r\n"):
                        self._fail("bytes after the end of the answer")
                raise
            start = end

    def eof(self, t_arrival: float) -> None:
        """The server closed the connection: that ends a read-until-close body, and nothing else."""
        if self.done or self.error is not None:
            return
        if self.t_headers is not None and self._framing == _UNTIL_CLOSE:
            self._t = t_arrival
            self._finish()
        elif self.nbytes == 0:
            self._fail("connection closed by the server before an answer")
        else:
            self._fail("connection closed by the server in the middle of the answer")

    def _fail(self, reason: str) -> None:
        self.error = reason
        self.keep_alive = False
        self._parser = None

    def _finish(self) -> None:
        self.done = True
        self.t_done = self._t
        if self._keep_body:
            self.body = b"".join(self._body)

    # -- llhttp callbacks ----------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:
            raise _ExtraBytes

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        value = value.strip(b" \t")
        if self._in_trailers:
            self.trailers.append((name, value))
        else:
            self.headers.append((name, value))
            if name == b"connection":
                self._connection.append(value)
            elif name == b"content-length":
                self._framed = True
            elif name == b"transfer-encoding":
                self._framed = value.rsplit(b",", 1)[-1].strip(b" \t").lower() == b"chunked"
        if name == b"server-timing":
            self.server_timing.append(value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if status < 200:
            if status < 100:
                raise ValueError(f"status {status} is not an HTTP status")
            self.headers = []  # an interim answer (100 Continue, 103 Early Hints): the final one follows
            self._connection = []
            self._framed = False
            self.server_timing = []
            return
        self.status = status
        self.t_headers = self._t
        close = parser.get_http_version() != "1.1" or any(
            token.strip(b" \t").lower() == b"close"
            for value in self._connection
            for token in value.split(b",")
        )
        if self._no_body or status == 204 or status == 304:
            self._framing = _NO_BODY
        elif not self._framed:
            self._framing = _UNTIL_CLOSE
            close = True
        self.keep_alive = not close
        sink = self._sink
        if sink is not None:
            content_type = next((v for k, v in self.headers if k == b"content-type"), None)
            if not sink.head(status, None if content_type is None else content_type.decode("latin-1")):
                self._sink = None
        self._in_trailers = True  # llhttp reports trailer fields through on_header too
        if self._no_body:
            self._finish()
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._sink.feed(body, self._t)
        if self._keep_body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._in_trailers:  # the end of an interim answer
            return
        self._finish()
