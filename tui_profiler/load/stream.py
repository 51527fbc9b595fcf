"""Generative answers read as they arrive: Server-Sent Events, newline-delimited JSON, or one JSON answer.

An `AnswerStream` is given one answer's status and Content-Type (`head`), then every piece of its body with
the arrival time of the read that carried it (`feed`), then the end (`close`). It records when each token
event arrived, what the server said about token counts and its own prefill/decode times, and an error
event if one came; `metrics(t_start, t_end)` turns that into the per-request columns (`StreamMetrics`).

What is read (the formats of the servers people size):
- SSE (`text/event-stream`): `data:` lines, joined per event, an event ending at an empty line; comments
  and the `event` / `id` / `retry` fields are skipped; `data: [DONE]` ends an OpenAI stream. Lines end in
  LF, CRLF or CR. An event cut before its empty line is not an event (as the SSE standard says).
- NDJSON (`application/x-ndjson`, `application/jsonl`, ...): one JSON document a line (Ollama).
- a whole JSON answer (a generative template whose server did not stream): nothing is timed per token;
  the token counts come from the answer's `usage`.

A token event is an event that carries generated text: OpenAI completions `choices[].text`, chat
`choices[].delta.content` (an empty delta, e.g. the first chunk's role, is not one); TGI `token`; Ollama
`response` / `message.content`; an SSE event whose data is not JSON (the text itself). Token counts:
the server's own (`usage.completion_tokens`, TGI `details.generated_tokens`, Ollama `eval_count`,
llama.cpp `timings.predicted_n`) when given, else the number of token events (a server that packs
several tokens into one event is then under-counted: `output_tokens_source` says which). The server's own
prefill / decode times: `timings.prefill_ms` / `timings.decode_ms` (our model server), llama.cpp's
`timings.prompt_ms` / `timings.predicted_ms`, Ollama's `prompt_eval_duration` / `eval_duration` (ns).
The prompt tokens the server served from its prefix cache: `usage.prompt_tokens_details.cached_tokens`
(OpenAI's and vLLM's field), streamed or not. Why it stopped: the last `choices[].finish_reason` given
(OpenAI: "length" at max_tokens, "stop" at an end token or stop string), TGI's `details.finish_reason`
("length", "eos_token", "stop_sequence"), Ollama's `done_reason`.

The parsing runs on the event loop, once per read: keep it lean (`tui-profiler bench stream` measures it).
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass
from typing import Any

from tui_profiler.stats import percentile

# How one answer's body is read, once its head is known.
SSE, NDJSON, WHOLE = "sse", "ndjson", "whole"
_NDJSON_TYPES = (
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/jsonlines",
    "application/json-lines",
    "application/stream+json",
)


def body_format(mode: str, content_type: str | None, generative: bool) -> str | None:
    """How to read an answer's body: SSE, NDJSON, WHOLE (one JSON answer of a generative template), or
    None (not read at all). `mode` is the template's `stream` (config.request.STREAM_MODES); "auto" goes by the Content-Type."""
    if mode == "sse":
        return SSE
    if mode == "ndjson":
        return NDJSON
    if mode == "auto" and content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media == "text/event-stream":
            return SSE
        if media in _NDJSON_TYPES:
            return NDJSON
    return WHOLE if generative else None


@dataclass(frozen=True, slots=True)
class StreamMetrics:
    """One request's generative columns (None: not available). `itl_s`: every inter-token gap, kept in
    memory for the cell's percentiles and never written per request."""

    streamed: bool
    token_events: int
    ttft_s: float | None = None
    tpot_s: float | None = None
    itl_p50_s: float | None = None
    itl_p99_s: float | None = None
    itl_s: tuple[float, ...] = ()
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    output_tokens_source: str | None = None  # "usage" (the server's count) | "events" (counted here)
    server_prefill_ms: float | None = None
    server_decode_ms: float | None = None
    error: str = ""  # an error event's message
    cached_prompt_tokens: int | None = None  # prompt tokens the server served from its prefix cache
    finish_reason: str | None = None  # why the server stopped generating ("length": the length asked for)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _first(value: int | None, before: int | None) -> int | None:
    return before if value is None else value


def _ms(value: Any, scale: float = 1.0) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value) * scale
    return None


class AnswerStream:
    """One answer's body, read incrementally (see the module docstring). `keep_text` keeps the generated
    text of every token event (tests compare it); the load generator does not."""

    __slots__ = (
        "_data",
        "_format",
        "_mode",
        "_pending",
        "_whole",
        "cached_prompt_tokens",
        "decode_ms",
        "done",
        "error",
        "finish_reason",
        "format",
        "generative",
        "prefill_ms",
        "prompt_tokens",
        "server_output_tokens",
        "texts",
        "times",
    )

    def __init__(self, mode: str = "auto", generative: bool = False, keep_text: bool = False) -> None:
        # Cheap to make: one is made per request, and most answers are not read (see `head`).
        self._mode = mode
        self.generative = generative
        self.format: str | None = None
        self._format = ""
        self.error = ""
        self.texts: list[str] | None = [] if keep_text else None

    def _ready(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []  # the data lines of the SSE event being read
        self._whole: list[bytes] = []
        self.times = array("d")  # arrival time of each token event (perf_counter)
        self.done = False  # an end marker came ([DONE], TGI's generated_text, Ollama's done)
        self.prompt_tokens: int | None = None
        self.server_output_tokens: int | None = None
        self.prefill_ms: float | None = None
        self.decode_ms: float | None = None
        self.cached_prompt_tokens: int | None = None
        self.finish_reason: str | None = None

    # -- input ---------------------------------------------------------------------------------------------

    def head(self, status: int, content_type: str | None) -> bool:
        """The answer's head: decides how its body is read; False when it is not read at all."""
        self.format = body_format(self._mode, content_type, self.generative)
        self._format = self.format or ""
        if self.format is None:
            return False
        self._ready()
        return True

    def feed(self, data: bytes, t_arrival: float) -> None:
        """Body bytes (de-chunked) that arrived at `t_arrival`."""
        fmt = self._format
        if fmt == WHOLE:
            self._whole.append(data)
            return
        if not fmt:
            return
        if self._pending:
            data = self._pending + data
        hold = b""
        if data.endswith(b"\r"):  # maybe the first half of a CRLF: decide when the next byte comes
            data, hold = data[:-1], b"\r"
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = data.split(b"\n")
        self._pending = lines.pop() + hold
        if fmt == SSE:
            for line in lines:
                self._sse_line(line, t_arrival)
        else:
            for line in lines:
                if line.strip():
                    self._document(line, t_arrival)

    def close(self, t_arrival: float) -> None:
        """The body is complete (not called for a cut one)."""
        fmt = self._format
        if fmt == WHOLE:
            body = b"".join(self._whole)
            self._whole = []
            try:
                doc = json.loads(body) if body.strip() else None
            except ValueError:
                return
            if isinstance(doc, list) and doc and isinstance(doc[0], dict):
                doc = doc[0]  # TGI's /generate answers [{"generated_text": ...}] to a batch
            if isinstance(doc, dict):
                self._event(doc, t_arrival, whole=True)
            return
        pending, self._pending = self._pending, b""
        ended = pending.endswith(b"\r")  # a CR held back: it ended its line after all
        if ended:
            pending = pending[:-1]
        if fmt == NDJSON and pending.strip():  # a last line without its newline, in a complete body
            self._document(pending, t_arrival)
        elif fmt == SSE and (pending or ended):
            self._sse_line(pending, t_arrival)
        # An SSE event not ended by an empty line when the body ends is dropped (the standard's rule).

    # -- formats -------------------------------------------------------------------------------------------

    def _sse_line(self, line: bytes, t: float) -> None:
        if not line:
            if self._data:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                self._data = []
                self._sse_event(data, t)
            return
        if line[0] == 0x3A:  # ":" a comment
            return
        name, colon, value = line.partition(b":")
        if name == b"data":
            if colon and value[:1] == b" ":
                value = value[1:]
            self._data.append(value)

    def _sse_event(self, data: bytes, t: float) -> None:
        if data == b"[DONE]" or data.strip() == b"[DONE]":
            self.done = True
            return
        try:
            doc = json.loads(data)
        except ValueError:
            doc = data.decode("utf-8", "replace")
        if isinstance(doc, dict):
            self._event(doc, t)
        elif isinstance(doc, str) and doc:
            self._token(doc, t)

    def _document(self, line: bytes, t: float) -> None:
        try:
            doc = json.loads(line)
        except ValueError:
            return
        if isinstance(doc, dict):
            self._event(doc, t)

    def _token(self, text: str, t: float) -> None:
        self.times.append(t)
        if self.texts is not None:
            self.texts.append(text)

    def _event(self, doc: dict[str, Any], t: float, whole: bool = False) -> None:
        """One JSON event (or a whole answer): its text, token counts, timings, end marker, error."""
        err = doc.get("error")
        if err:
            message = err.get("message", err) if isinstance(err, dict) else err
            self.error = " ".join(str(message).split())[:200] or "error event"
            return
        text: str | None = None
        choices = doc.get("choices")
        if isinstance(choices, list):
            parts = []
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                piece = choice.get("text")
                if piece is None:
                    delta = choice.get("delta") or choice.get("message")
                    if isinstance(delta, dict):
                        piece = delta.get("content")
                if isinstance(piece, str) and piece:
                    parts.append(piece)
                reason = choice.get("finish_reason")
                if isinstance(reason, str) and reason:
                    self.finish_reason = reason
            if parts:
                text = parts[0] if len(parts) == 1 else "".join(parts)
        else:
            token = doc.get("token")
            if isinstance(token, dict):  # TGI: one token an event (special ones too)
                piece = token.get("text")
                text = piece if isinstance(piece, str) else ""
            else:
                piece = doc.get("response")
                if piece is None:
                    message = doc.get("message")
                    if isinstance(message, dict):
                        piece = message.get("content")
                if isinstance(piece, str) and piece:
                    text = piece
        if text is not None and not whole:
            self._token(text, t)
        usage = doc.get("usage")
        if isinstance(usage, dict):
            self.server_output_tokens = _first(
                _count(usage.get("completion_tokens")), self.server_output_tokens
            )
            self.prompt_tokens = _first(_count(usage.get("prompt_tokens")), self.prompt_tokens)
            prompt_details = usage.get("prompt_tokens_details")
            if isinstance(prompt_details, dict):
                self.cached_prompt_tokens = _first(
                    _count(prompt_details.get("cached_tokens")), self.cached_prompt_tokens
                )
        details = doc.get("details")
        if isinstance(details, dict):
            reason = details.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finish_reason = reason
            n = _count(details.get("generated_tokens"))
            if n is not None:
                self.server_output_tokens = n
            n = _count(details.get("input_length"))
            if n is not None:
                self.prompt_tokens = n
        if doc.get("generated_text") is not None:
            self.done = True
        if doc.get("done") is True:  # Ollama's last line
            self.done = True
            self.server_output_tokens = _first(_count(doc.get("eval_count")), self.server_output_tokens)
            self.prompt_tokens = _first(_count(doc.get("prompt_eval_count")), self.prompt_tokens)
            reason = doc.get("done_reason")
            if isinstance(reason, str) and reason:
                self.finish_reason = reason
            self.prefill_ms = _ms(doc.get("prompt_eval_duration"), 1e-6)
            self.decode_ms = _ms(doc.get("eval_duration"), 1e-6)
        timings = doc.get("timings")
        if isinstance(timings, dict):
            prefill = _ms(timings.get("prefill_ms"))
            decode = _ms(timings.get("decode_ms"))
            self.prefill_ms = prefill if prefill is not None else _ms(timings.get("prompt_ms"))
            self.decode_ms = decode if decode is not None else _ms(timings.get("predicted_ms"))
            n = _count(timings.get("predicted_n"))
            if n is not None and self.server_output_tokens is None:
                self.server_output_tokens = n
            n = _count(timings.get("prompt_n"))
            if n is not None and self.prompt_tokens is None:
                self.prompt_tokens = n

    # -- output --------------------------------------------------------------------------------------------

    @property
    def token_events(self) -> int:
        return len(self.times)

    @property
    def streamed(self) -> bool:
        """The answer is read as a stream (SSE or NDJSON), not as one whole answer."""
        return self._format in (SSE, NDJSON)

    def metrics(self, t_start: float, t_end: float | None) -> StreamMetrics:
        """The request's columns. `t_start`: its send (open loop: its scheduled send, as latency_s);
        `t_end`: when the whole answer had arrived (None: it never did, e.g. a cut stream)."""
        streamed = self._format in (SSE, NDJSON)
        n_events = len(self.times)
        if self.server_output_tokens is not None:
            output, source = self.server_output_tokens, "usage"
        elif streamed and (n_events or t_end is not None):
            output, source = n_events, "events"
        else:
            output, source = None, None
        ttft = tpot = p50 = p99 = None
        gaps: tuple[float, ...] = ()
        if streamed:
            times = self.times
            if n_events:
                ttft = times[0] - t_start
                gaps = tuple(times[i] - times[i - 1] for i in range(1, n_events))
                if gaps:
                    p50, p99 = percentile(gaps, 50), percentile(gaps, 99)
            if ttft is not None and t_end is not None and output is not None and output > 1:
                tpot = (t_end - t_start - ttft) / (output - 1)
        elif t_end is not None:  # one whole answer: its first token came with its last
            ttft = t_end - t_start
        return StreamMetrics(
            streamed=streamed,
            token_events=n_events,
            ttft_s=ttft,
            tpot_s=tpot,
            itl_p50_s=p50,
            itl_p99_s=p99,
            itl_s=gaps,
            prompt_tokens=self.prompt_tokens,
            output_tokens=output,
            output_tokens_source=source,
            server_prefill_ms=self.prefill_ms,
            server_decode_ms=self.decode_ms,
            error=self.error,
            cached_prompt_tokens=self.cached_prompt_tokens,
            finish_reason=self.finish_reason,
        )
