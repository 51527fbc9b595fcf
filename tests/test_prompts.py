"""Distinct prompts, a shared prefix as a plan axis, cached prompt tokens and output lengths you can trust
(issue 21, the client side).

Fast tier: the prompt pools (token ids and text, through the templates that carry them), the plan axis and
its one-line errors, the stream parser's `cached_tokens` and `finish_reason`, and whole sweeps against a
stdlib SSE server (`ToyLLM`) with a toy prefix cache: it answers `cached_tokens` = the longest prefix its
prompt shares with any prompt it saw before, as a prefix cache keyed on tokens would, and stops early with
finish_reason "stop" when told to.

On the real Docker engine: `llm_smoke` against `decoder_small` (see the last test's docstring).
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tui_profiler.config import PresetError, preset_from_dict
from tui_profiler.config.model import Preset
from tui_profiler.load.client import run_load
from tui_profiler.load.inputs import UNBOUNDED_POOL, InputSpec, PayloadSet, pool_size, shared_prefix_text
from tui_profiler.load.patterns import LoadPattern
from tui_profiler.load.stream import AnswerStream
from tui_profiler.load.template import build_payloads, builtin_template, template_for
from tui_profiler.plan import build_plan
from tui_profiler.session.store import recording

REPO = Path(__file__).resolve().parent.parent
# llm_smoke's request: the prompt as token ids ({flat}), streamed, usage asked for
SMOKE_JSON = {
    "model": "{model}",
    "prompt": "{flat}",
    "max_tokens": "{output_len}",
    "ignore_eos": "{ignore_eos}",
    "temperature": 0,
    "stream": True,
    "stream_options": {"include_usage": True},
}


def common_prefix(a: list[Any], b: list[Any]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def token_ids(body: bytes) -> list[int]:
    """The prompt of an llm_smoke-style request: its token ids ({flat})."""
    prompt: list[int] = json.loads(body)["prompt"]
    return prompt


def chat_words(body: bytes) -> list[str]:
    """The prompt of an openai-chat request, in words (the token approximation generated text is sized by)."""
    words: list[str] = json.loads(body)["messages"][0]["content"].split()
    return words


def smoke_template() -> Any:
    return template_for(smoke_preset())


def smoke_preset(input_extra: dict[str, Any] | None = None, **top: Any) -> Preset:
    data = {
        "name": "t",
        "model": "decoder_small",
        "weights": "random",
        "input": {
            "kind": "tokens",
            "token_lens": [32],
            "encoding": "json",
            "vocab_size": 50257,
            "output_lens": [8],
            **(input_extra or {}),
        },
        "request": {"path": "/v1/completions", "body": "json", "json": SMOKE_JSON, "generative": True},
        **top,
    }
    return preset_from_dict(data, "p.toml", check_host=False)


# ------------------------------------------------------------------------------------ the prompt pools


@pytest.mark.parametrize("shared", [0, 1, 20])
def test_token_prompts_are_distinct_and_share_exactly_the_prefix(shared: int) -> None:
    spec = InputSpec(kind="tokens", base_size=(32,), token_len=32, encoding="json", vocab_size=50257)
    tpl = smoke_template()
    pool = build_payloads(spec, tpl, "m", 8, count=30, shared_prefix_tokens=shared, stream=4)
    prompts = [token_ids(p.body) for p in pool.payloads]
    assert len(prompts) == 30 and all(len(p) == 32 for p in prompts)
    assert all(1000 <= t < 50257 for p in prompts for t in p)
    assert [p.input_index for p in pool.payloads] == list(range(30))
    assert len({p.input_hash for p in pool.payloads}) == 30
    assert {common_prefix(a, b) for a, b in itertools.combinations(prompts, 2)} == {shared}
    # the same prefix in another cell (stream) of that prefix length, and a prompt of its own there
    other = [
        token_ids(p.body)
        for p in build_payloads(spec, tpl, "m", 8, count=30, shared_prefix_tokens=shared, stream=5).payloads
    ]
    assert all(o[:shared] == prompts[0][:shared] for o in other)
    assert (
        max(common_prefix(a, b) for a in prompts for b in other) <= shared + 1
    )  # a chance first token at most
    assert not {tuple(p) for p in prompts} & {tuple(o) for o in other}
    # reproducible: the same seed, cell and request, the same bytes
    again = build_payloads(spec, tpl, "m", 8, count=30, shared_prefix_tokens=shared, stream=4)
    assert [p.body for p in again.payloads] == [p.body for p in pool.payloads]


def test_a_small_vocabulary_counts_requests_in_several_leading_tokens() -> None:
    """Three ids to draw from: 40 prompts need four leading tokens (3**4 = 81) to stay apart."""
    spec = InputSpec(kind="tokens", base_size=(8,), token_len=8, encoding="json", vocab_size=1003)
    pool = build_payloads(spec, smoke_template(), "m", None, count=40, shared_prefix_tokens=2)
    prompts = [token_ids(p.body) for p in pool.payloads]
    assert {common_prefix(a, b) for a, b in itertools.combinations(prompts, 2)} <= {2, 3, 4, 5}
    assert len({tuple(p) for p in prompts}) == 40


def test_text_prompts_through_the_chat_template_are_distinct_with_the_prefix_in_words() -> None:
    spec = InputSpec(kind="text", base_size=(24,), token_len=24, encoding="text")
    pool = build_payloads(spec, builtin_template("openai-chat"), "m", 16, count=25, shared_prefix_tokens=10)
    prompts = [chat_words(p.body) for p in pool.payloads]
    assert all(len(p) == 24 for p in prompts)
    assert {common_prefix(a, b) for a, b in itertools.combinations(prompts, 2)} == {10}
    assert " ".join(prompts[0][:10]) == shared_prefix_text(0, 10)
    assert len({p.input_hash for p in pool.payloads}) == 25


def test_images_stay_one_a_cell_and_the_pool_stops_at_the_memory_bound() -> None:
    image = build_payloads(InputSpec(kind="image", base_size=(8, 8)), None, count=50)
    assert len(image.payloads) == 1 and image.first.input_hash is None
    spec = InputSpec(kind="tokens", base_size=(64,), token_len=64, encoding="json", vocab_size=50257)
    whole = build_payloads(spec, smoke_template(), "m", 8, count=10)
    size = len(whole.first.body)
    cut = build_payloads(spec, smoke_template(), "m", 8, count=10, max_bytes=3 * size + size // 2)
    assert len(cut.payloads) == 3  # the requests cycle through these (inputs_cycled says so)
    assert [p.body for p in cut.payloads] == [p.body for p in whole.payloads[:3]]


def test_pool_size_is_every_request_or_a_documented_bound() -> None:
    assert pool_size(2, 20) == 22
    assert pool_size(2, None) == 2 + UNBOUNDED_POOL == 1026
    assert pool_size(0, None, max_requests=300) == 300


def test_random_order_sends_every_input_once_a_pass() -> None:
    spec = InputSpec(kind="text", base_size=(4,), token_len=4, encoding="text")
    pool = build_payloads(spec, None, count=7)
    draw = PayloadSet(pool.payloads, order="random", seed=3).chooser()
    drawn = [draw() for _ in range(21)]
    assert all(sorted(drawn[i : i + 7]) == list(range(7)) for i in (0, 7, 14))
    assert drawn[:7] != list(range(7)) and drawn[:7] != drawn[7:14]
    again = PayloadSet(pool.payloads, order="random", seed=3).chooser(start=7)
    assert [again() for _ in range(7)] == drawn[7:14]  # a process starting later takes the same order


# ------------------------------------------------------------------------------------ the plan axis


def test_shared_prefix_is_a_plan_axis_and_a_setting_column() -> None:
    p = smoke_preset({"token_lens": [32, 64], "shared_prefix_tokens": [0, 16, 28]})
    cells = build_plan(p)
    assert [(c.token_len, c.shared_prefix_tokens) for c in cells] == [
        (32, 0), (32, 16), (32, 28), (64, 0), (64, 16), (64, 28),
    ]  # fmt: skip
    assert {c.shared_prefix_tokens for c in build_plan(smoke_preset())} == {0}
    image = preset_from_dict({"name": "t", "model": "mobilenet_v3_small"}, "p.toml", check_host=False)
    assert {c.shared_prefix_tokens for c in build_plan(image)} == {None}


@pytest.mark.parametrize(
    ("model", "section", "message"),
    [
        (
            "decoder_small",
            {"kind": "tokens", "token_lens": [32, 64], "shared_prefix_tokens": [0, 32]},
            "p.toml: input.shared_prefix_tokens: [0, 32] — each must be below every input.token_lens "
            "(the shortest is 32)",
        ),
        (
            "mobilenet_v3_small",
            {"shared_prefix_tokens": 4},
            "p.toml: input.shared_prefix_tokens: [4] — only for input.kind 'tokens' or 'text'",
        ),
    ],
)
def test_a_shared_prefix_that_leaves_no_prompt_of_its_own_is_one_line(
    model: str, section: dict[str, Any], message: str
) -> None:
    with pytest.raises(PresetError) as err:
        preset_from_dict({"name": "t", "model": model, "input": section}, "p.toml", check_host=False)
    assert str(err.value) == message


# ------------------------------------------------------------------------------------ the stream parser


def _sse(*docs: Any) -> bytes:
    return b"".join(
        b"data: " + (d if isinstance(d, bytes) else json.dumps(d).encode()) + b"\n\n" for d in docs
    )


def test_the_stream_parser_reads_cached_tokens_and_the_finish_reason() -> None:
    s = AnswerStream(generative=True)
    assert s.head(200, "text/event-stream")
    s.feed(
        _sse(
            {"choices": [{"text": "a", "finish_reason": None}]},
            {"choices": [{"text": "b", "finish_reason": "stop"}]},
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": 40,
                    "completion_tokens": 2,
                    "prompt_tokens_details": {"cached_tokens": 32},
                },
            },
            b"[DONE]",
        ),
        1.0,
    )
    s.close(1.1)
    m = s.metrics(0.0, 1.1)
    assert (m.cached_prompt_tokens, m.finish_reason, m.prompt_tokens, m.output_tokens) == (32, "stop", 40, 2)
    # a whole (not streamed) answer; a server that gives no details: not available, never 0
    whole = AnswerStream(generative=True)
    whole.head(200, "application/json")
    whole.feed(json.dumps({"choices": [{"text": "ab", "finish_reason": "length"}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 2,
                                     "prompt_tokens_details": {"cached_tokens": 0}}}).encode(), 1.0)  # fmt: skip
    whole.close(1.0)
    assert (whole.metrics(0.0, 1.0).cached_prompt_tokens, whole.metrics(0.0, 1.0).finish_reason) == (
        0,
        "length",
    )
    bare = AnswerStream(generative=True)
    bare.head(200, "text/event-stream")
    bare.feed(
        _sse({"choices": [{"text": "a"}]}, {"choices": [], "usage": {"prompt_tokens": 3}}, b"[DONE]"), 1.0
    )
    bare.close(1.0)
    assert (bare.metrics(0.0, 1.0).cached_prompt_tokens, bare.metrics(0.0, 1.0).finish_reason) == (None, None)
    # TGI's details and Ollama's last line
    tgi = AnswerStream(generative=True)
    tgi.head(200, "text/event-stream")
    tgi.feed(_sse({"token": {"text": "a"}}, {"token": {"text": "b"}, "generated_text": "ab",
                                           "details": {"finish_reason": "eos_token", "generated_tokens": 2}}), 1.0)  # fmt: skip
    tgi.close(1.0)
    assert tgi.metrics(0.0, 1.0).finish_reason == "eos_token"
    ollama = AnswerStream(generative=True)
    ollama.head(200, "application/x-ndjson")
    ollama.feed(
        b'{"response": "a", "done": false}\n{"response": "", "done": true, "done_reason": "length", "eval_count": 1}\n',
        1.0,
    )
    ollama.close(1.0)
    assert ollama.metrics(0.0, 1.0).finish_reason == "length"


# ------------------------------------------------------------------------------------ a toy LLM server


class _ToyLLM(BaseHTTPRequestHandler):
    """OpenAI completions / chat, streamed as one SSE body: `max_tokens` tokens ("length"), or half of them
    with finish_reason "stop" when `short`; `usage` with the prompt's length and `cached_tokens` = the
    longest prefix it shares with a prompt seen before (a prefix cache keyed on tokens; chat: words)."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[list[Any]]]
    short: ClassVar[list[bool]]
    lock: ClassVar[threading.Lock]

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = doc["prompt"] if "prompt" in doc else doc["messages"][0]["content"].split()
        with self.lock:
            cached = max((common_prefix(prompt, p) for p in self.seen), default=0)
            self.seen.append(prompt)
        asked = int(doc.get("max_tokens") or 16)
        n, reason = (max(1, asked // 2), "stop") if self.short[0] else (asked, "length")
        chat = "messages" in doc
        events = []
        for i in range(n):
            choice = {"delta": {"content": f" t{i}"}} if chat else {"text": f" t{i}"}
            events.append(
                {"choices": [{"index": 0, **choice, "finish_reason": reason if i == n - 1 else None}]}
            )
        usage = {"prompt_tokens": len(prompt), "completion_tokens": n, "total_tokens": len(prompt) + n,
                 "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip
        events.append({"choices": [], "usage": usage})
        body = _sse(*events, b"[DONE]")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def toy_llm() -> Iterator[tuple[str, list[bool], list[list[Any]]]]:
    seen: list[list[Any]] = []
    short = [False]
    handler = type("Handler", (_ToyLLM,), {"seen": seen, "short": short, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", short, seen
    finally:
        server.shutdown()
        server.server_close()


def sweep(p: Preset, url: str, out: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Run the preset against `url`: (cells.csv rows, requests.csv rows)."""
    from tui_profiler.sweep import SweepRunner

    finished = asyncio.run(SweepRunner(p, output_dir=out, url=url).run(recording()))
    assert finished.status == "ok"
    with open(Path(finished.session_dir) / "cells.csv", newline="") as fh:
        cells = list(csv.DictReader(fh))
    with open(Path(finished.session_dir) / "requests.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return cells, rows


def test_every_request_of_a_cell_sends_its_own_prompt_and_the_cache_serves_only_the_prefix(
    toy_llm: tuple[str, list[bool], list[list[Any]]], tmp_path: Path
) -> None:
    url, _, _ = toy_llm
    p = smoke_preset(
        {"token_lens": [32, 64], "shared_prefix_tokens": [0, 24]},
        load={"concurrency": [1, 3], "requests": 9, "warmup": 2},
    )
    cells, rows = sweep(p, url, tmp_path)
    assert len(cells) == 8 and len(rows) == 8 * 11
    for cell in cells:
        mine = [r for r in rows if r["cell_index"] == cell["cell_index"]]
        assert len({r["input_hash"] for r in mine}) == 11  # warm-up and timed: every prompt its own
        assert cell["distinct_inputs"] == "11" and cell["inputs_cycled"] == "0"
        shared = int(cell["shared_prefix_tokens"])
        assert {r["shared_prefix_tokens"] for r in mine} == {str(shared)}
        assert {int(r["prompt_tokens"]) for r in mine} == {int(cell["token_len"])}
        timed = [r for r in mine if r["warmup"] == "0"]
        # the toy cache served each timed request its shared prefix and no more (a chance first token aside)
        assert all(shared <= int(r["cached_prompt_tokens"]) <= shared + 1 for r in timed), cell
        assert shared <= float(cell["cached_prompt_tokens_mean"]) <= shared + 1
    hashes = [r["input_hash"] for r in rows]
    assert len(set(hashes)) == len(hashes)  # and no cell sent another cell's prompt


def test_output_len_honoured_is_false_when_the_server_stops_early_and_tpot_uses_the_tokens_received(
    toy_llm: tuple[str, list[bool], list[list[Any]]], tmp_path: Path
) -> None:
    url, short, _ = toy_llm
    p = smoke_preset({"output_lens": [8]}, load={"requests": 4, "warmup": 1})
    cells, rows = sweep(p, url, tmp_path / "full")
    assert (cells[0]["output_len_honoured"], cells[0]["output_short_requests"]) == ("1", "0")
    assert {(r["finish_reason"], r["output_tokens"]) for r in rows} == {("length", "8")}
    short[0] = True
    cells, rows = sweep(p, url, tmp_path / "short")
    assert (cells[0]["output_len_honoured"], cells[0]["output_short_requests"]) == ("0", "4")
    assert {(r["finish_reason"], r["output_tokens"]) for r in rows} == {("stop", "4")}
    assert float(cells[0]["output_tokens_mean"]) == 4
    for r in rows:  # TPOT divides by the tokens received (4), not the 8 asked for
        tpot, latency, ttft = float(r["tpot_s"]), float(r["latency_s"]), float(r["ttft_s"])
        assert tpot * 3 == pytest.approx(latency - ttft, abs=1e-6)
    # without an output length asked for there is nothing to honour
    no_len = smoke_preset(load={"requests": 2, "warmup": 0})
    no_len = no_len.model_copy(update={"input": no_len.input.model_copy(update={"output_lens": []})})
    cells, _ = sweep(no_len, url, tmp_path / "none")
    assert (cells[0]["output_len_honoured"], cells[0]["output_short_requests"]) == ("", "")


def test_chat_prompts_are_distinct_and_prompts_from_a_file_are_cycled_only_when_too_few(
    toy_llm: tuple[str, list[bool], list[list[Any]]], tmp_path: Path
) -> None:
    url, _, seen = toy_llm
    (tmp_path / "three.txt").write_text("why is the sky blue\nwrite a poem\ncount to ten please\n")
    (tmp_path / "six.txt").write_text("".join(f"prompt number {i} here\n" for i in range(6)))
    for name, cycled, distinct in (("three.txt", "1", "3"), ("six.txt", "0", "6")):
        p = preset_from_dict(
            {
                "name": "t",
                "model": "decoder_small",
                "weights": "random",
                "input": {
                    "kind": "text",
                    "encoding": "text",
                    "files": [name],
                    "token_lens": [12],
                    "shared_prefix_tokens": [4],
                },
                "request": {"template": "openai-chat", "model_name": "m"},
                "load": {"requests": 5, "warmup": 1},
            },
            str(tmp_path / "p.toml"),
            check_host=False,
        )
        cells, rows = sweep(p, url, tmp_path / f"out-{name}")
        assert (cells[0]["inputs_cycled"], cells[0]["distinct_inputs"]) == (cycled, distinct)
        assert len({r["input_hash"] for r in rows}) == int(distinct)
        sent = seen[-6:]
        assert all(len(s) == 12 and " ".join(s[:4]) == shared_prefix_text(0, 4) for s in sent)
    # generated chat prompts: distinct
    p = preset_from_dict(
        {"name": "t", "model": "decoder_small", "weights": "random",
         "input": {"kind": "text", "token_lens": [16]},
         "request": {"template": "openai-chat", "model_name": "m"}, "load": {"requests": 6, "warmup": 1}},
        "p.toml", check_host=False,
    )  # fmt: skip
    cells, rows = sweep(p, url, tmp_path / "chat")
    assert (cells[0]["distinct_inputs"], cells[0]["inputs_cycled"]) == ("7", "0")
    assert len({tuple(s) for s in seen[-7:]}) == 7


async def test_several_client_processes_send_each_prompt_once(
    toy_llm: tuple[str, list[bool], list[list[Any]]],
) -> None:
    url, _, seen = toy_llm
    spec = InputSpec(kind="tokens", base_size=(16,), token_len=16, encoding="json", vocab_size=50257)
    tpl = smoke_template()
    pattern = LoadPattern(concurrency=3, requests=20, warmup=3, processes=2)
    payloads = build_payloads(spec, tpl, "m", 4, count=pool_size(pattern.warmup, pattern.requests))
    res = await run_load(url, tpl, payloads, pattern)
    assert len(res) == 23 and all(r.ok for r in res)
    assert sorted(r.input_index for r in res) == list(range(23))  # type: ignore[type-var]
    assert len({tuple(s) for s in seen}) == 23


# ------------------------------------------------------------------------------------ llm_smoke, for real


@pytest.mark.docker
def test_llm_smoke_sends_distinct_prompts_and_the_server_prefills_every_token(
    server_image: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """`tui-profiler run llm_smoke --headless` on decoder_small (our server image, no prefix cache), cut
    short: one CPU (torch then runs one thread), concurrency 1, 3 timed requests + 1 warm-up, 4 output
    tokens, prompts of 32 and 1024 tokens (the preset's shortest and longest). Asserted from the server's
    own counts: every request of a cell sent its own prompt (4 distinct `input_hash` values a cell, none
    shared between cells), the server counted every prompt token (`prompt_tokens` = `token_len`), each
    answer had its 4 tokens (`finish_reason` length), and the server's own prefill time (Server-Timing
    `prefill`, `server_prefill_ms`; TTFT holds it) of every 1024-token prompt passed that of every 32-token
    one. 32 times the tokens is 20-30 times the prefill CPU (tests/test_decoder_small.py measures it:
    0.14-0.18 s against 3.04-3.66 s under half a CPU); the wall time on this shared box is noisier (a first
    try with 2 CPUs and 256 tokens too: 0.96-1.68 s at 32 tokens, 1.36-1.55 s at 256, 6.4-8.7 s at 1024),
    so only the far pair is compared. Measured under one CPU: 371-397 ms at 32 tokens, 4,859-5,927 ms at
    1024 (printed with -s)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUI_PROFILER_PRESETS": str(tmp_path / "user-presets")}
    sets = [
        "resources.cpus=1",
        "input.token_lens=32,1024",
        "load.concurrency=1",
        "load.requests=3",
        "load.warmup=1",
        "input.output_lens=4",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "tui_profiler", "run", "llm_smoke", "--headless", "--output", str(tmp_path),
         "--set", f"image={server_image}", *itertools.chain.from_iterable(("--set", s) for s in sets)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    sessions = [p for p in tmp_path.iterdir() if p.is_dir() and (p / "cells.csv").exists()]
    assert len(sessions) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(sessions[0] / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    with open(sessions[0] / "requests.csv") as f:
        rows = list(csv.DictReader(f))
    assert [c["status"] for c in cells] == ["ok"] * 2, cells
    assert all(c["distinct_inputs"] == "4" and c["inputs_cycled"] == "0" for c in cells)
    assert all(c["output_len_honoured"] == "1" for c in cells)
    assert len({r["input_hash"] for r in rows}) == len(rows) == 8
    prefill: dict[int, list[float]] = {}
    for r in rows:
        assert int(r["prompt_tokens"]) == int(r["token_len"]) and r["finish_reason"] == "length"
        if r["warmup"] == "0":
            prefill.setdefault(int(r["token_len"]), []).append(float(r["server_prefill_ms"]))
            assert float(r["ttft_s"]) * 1000 >= float(r["server_prefill_ms"])
    print(
        {
            n: f"{min(v):.0f}-{max(v):.0f} ms (median {statistics.median(v):.0f})"
            for n, v in sorted(prefill.items())
        }
    )
    for shorter, longer in itertools.pairwise(sorted(prefill)):
        assert min(prefill[longer]) > max(prefill[shorter]), prefill


@pytest.mark.docker
def test_a_shared_prefix_axis_shows_what_decoder_smalls_prefix_cache_saves(
    server_image: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """`llm_smoke` with the server's prefix cache on (`server_args = ["--prefix-cache"]`) and
    `shared_prefix_tokens` 0 and 480 of 512-token prompts, one CPU, concurrency 1, 3 timed requests + 1
    warm-up, 2 output tokens. Asserted from the server's own counts (`usage.prompt_tokens_details.
    cached_tokens`): with no shared prefix no timed request was served from the cache (every prompt is
    its own from its first block); with 480 shared tokens (30 blocks of 16) every timed request got exactly
    those 480 from the cache, every prompt still distinct. The server's prefill time is printed (-s), not
    asserted: it follows the tokens prefilled (512 against 32)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUI_PROFILER_PRESETS": str(tmp_path / "user-presets")}
    sets = [
        "server_args=--prefix-cache",
        "resources.cpus=1",
        "input.token_lens=512",
        "input.shared_prefix_tokens=0,480",
        "load.concurrency=1",
        "load.requests=3",
        "load.warmup=1",
        "input.output_lens=2",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "tui_profiler", "run", "llm_smoke", "--headless", "--output", str(tmp_path),
         "--set", f"image={server_image}", *itertools.chain.from_iterable(("--set", s) for s in sets)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    sessions = [p for p in tmp_path.iterdir() if p.is_dir() and (p / "cells.csv").exists()]
    assert len(sessions) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(sessions[0] / "cells.csv") as f:
        cells = {int(c["shared_prefix_tokens"]): c for c in csv.DictReader(f)}
    with open(sessions[0] / "requests.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["warmup"] == "0"]
    assert sorted(cells) == [0, 480] and all(c["status"] == "ok" for c in cells.values()), cells
    assert len({r["input_hash"] for r in rows}) == len(rows) == 6
    cached = {
        s: [int(r["cached_prompt_tokens"]) for r in rows if int(r["shared_prefix_tokens"]) == s]
        for s in (0, 480)
    }
    assert cached == {0: [0, 0, 0], 480: [480, 480, 480]}, cached
    assert float(cells[480]["cached_prompt_tokens_mean"]) == 480.0
    print(
        {s: [r["server_prefill_ms"] for r in rows if int(r["shared_prefix_tokens"]) == s] for s in (0, 480)}
    )
