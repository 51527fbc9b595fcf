"""`decoder_small` in our model server.

In process (the real aiohttp app on a local port, the real torch model): the OpenAI routes streaming and
not, exact output lengths with `ignore_eos`, usage, Server-Timing and the final stream event's timings,
greedy and seeded determinism, concurrent requests batched at the decode step, bad requests.

On the real Docker engine (marked docker): see the docstrings of the tests below the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer

from servers import model_server as ms
from servers.catalog import get_entry
from servers.decoder import (
    EOS_ID,
    PREFIX_BLOCK_TOKENS,
    Detokenizer,
    PrefixCache,
    block_keys,
    encode_text,
    kv_bytes_per_token,
)
from tests.conftest import RUN_TAG, SESSION_LABEL, needs, session_label_value
from tests.test_server_container import base_url, wait_ready
from tui_profiler.config.files import load_preset
from tui_profiler.load.server_timing import parse_server_timing
from tui_profiler.sample.cgroup import CgroupReader, find_container_cgroup
from tui_profiler.sweep.targets import server_command

REPO = Path(__file__).resolve().parent.parent

PROMPT = list(range(1000, 1064))  # 64 token ids


def sse_events(text: str) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded ("[DONE]" stays a string)."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


@pytest.fixture(scope="module")
@needs("server")
def decoder() -> ms.ModelState:
    state = ms.ModelState(
        entry=get_entry("decoder_small"),
        weights="random",
        device_request="cpu",
        hub_repo=None,
        hub_model=None,
        warmup_runs=1,
        max_batch=4,
    )
    state.load()
    return state


async def client_for(state: ms.ModelState) -> TestClient:
    client = TestClient(TestServer(ms.make_app(state, max_body_bytes=1 << 20), host="127.0.0.1"))
    await client.start_server()
    return client


def test_the_model_is_gpt2_small_sized_and_says_so(decoder: ms.ModelState) -> None:
    info = decoder.info
    assert info["task"] == "text-generation" and info["input_kind"] == "tokens"
    assert 120_000_000 < info["params"] < 130_000_000  # GPT-2 small: 124 M
    assert info["weight_bytes"] >= 4 * info["params"]
    gen = info["generation"]
    assert gen["context"] == 2048 and gen["eos_token_id"] == EOS_ID
    assert gen["kv_cache_bytes_per_token"] == kv_bytes_per_token() == 2 * 12 * 768 * 4
    assert info["max_tokens"] == 2048 and info["vocab_size"] == 50257


async def test_completion_has_exactly_max_tokens_with_ignore_eos_and_reports_timings(
    decoder: ms.ModelState,
) -> None:
    client = await client_for(decoder)
    try:
        r = await client.post(
            "/v1/completions",
            json={"model": "decoder_small", "prompt": PROMPT, "max_tokens": 12, "ignore_eos": True},
        )
        doc = await r.json()
        assert r.status == 200, doc
        assert doc["object"] == "text_completion" and doc["choices"][0]["finish_reason"] == "length"
        assert doc["usage"] == {
            "prompt_tokens": 64,
            "completion_tokens": 12,
            "total_tokens": 76,
            "prompt_tokens_details": {"cached_tokens": 0},  # no prefix cache: nothing cached
        }
        st = parse_server_timing(r.headers["Server-Timing"])
        assert {"queue", "prefill", "decode", "total", "prefill_cpu", "decode_cpu"} == st.keys()
        assert st["prefill"] > 0 and st["decode"] > 0 and st["prefill_cpu"] > 0
        assert st["total"] == pytest.approx(st["queue"] + st["prefill"] + st["decode"], abs=0.01)
        t = doc["timings"]
        assert t["prompt_tokens"] == 64 and t["completion_tokens"] == 12
        assert t["prefill_ms"] == pytest.approx(st["prefill"], abs=0.001)
        assert t["kv_cache_bytes"] == (64 + 12) * kv_bytes_per_token()
        # a text prompt is its UTF-8 bytes
        r = await client.post("/v1/completions", json={"prompt": "héllo", "max_tokens": 1})
        assert (await r.json())["usage"]["prompt_tokens"] == len("héllo".encode())
    finally:
        await client.close()


async def test_streamed_completion_one_chunk_per_token_then_usage_then_done(decoder: ms.ModelState) -> None:
    client = await client_for(decoder)
    try:
        body = {
            "prompt": PROMPT,
            "max_tokens": 9,
            "ignore_eos": True,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        r = await client.post("/v1/completions", json=body)
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(await r.text())
        assert events[-1] == "[DONE]"
        usage = events[-2]
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 9
        assert usage["timings"]["completion_tokens"] == 9 and usage["timings"]["prefill_ms"] > 0
        finish = events[-3]
        assert finish["choices"][0]["finish_reason"] == "length" and "timings" in finish
        tokens = events[:-3]
        assert len(tokens) == 9 and all(e["choices"][0]["finish_reason"] is None for e in tokens)
        streamed = "".join(e["choices"][0]["text"] for e in tokens)
        # greedy: the same request without streaming gives the same text
        r = await client.post("/v1/completions", json={**body, "stream": False})
        assert (await r.json())["choices"][0]["text"] == streamed
        # without include_usage there is no usage chunk, but the last chunk still carries the timings
        body["stream_options"] = {"include_usage": False}
        events = sse_events(await (await client.post("/v1/completions", json=body)).text())
        assert events[-1] == "[DONE]" and "timings" in events[-2] and "usage" not in events[-2]
        assert len(events) == 9 + 2
    finally:
        await client.close()


async def test_chat_streams_a_role_then_content_deltas(decoder: ms.ModelState) -> None:
    client = await client_for(decoder)
    try:
        body = {
            "model": "decoder_small",
            "messages": [{"role": "user", "content": "Say something"}],
            "max_tokens": 5,
            "ignore_eos": True,
            "seed": 7,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        events = sse_events(await (await client.post("/v1/chat/completions", json=body)).text())
        assert events[0]["object"] == "chat.completion.chunk"
        assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        deltas = [e for e in events[1:-1] if e["choices"] and "content" in e["choices"][0]["delta"]]
        assert len(deltas) == 5
        assert events[-2]["usage"]["completion_tokens"] == 5
        prompt = "<|user|>\nSay something\n<|assistant|>\n"
        assert events[-2]["usage"]["prompt_tokens"] == len(encode_text(prompt))
        streamed = "".join(d["choices"][0]["delta"]["content"] for d in deltas)
        # seeded sampling: the same seed gives the same text, streaming or not
        r = await client.post("/v1/chat/completions", json={**body, "stream": False})
        doc = await r.json()
        assert doc["object"] == "chat.completion" and doc["choices"][0]["message"]["role"] == "assistant"
        assert doc["choices"][0]["message"]["content"] == streamed
        assert "prefill" in parse_server_timing(r.headers["Server-Timing"])
    finally:
        await client.close()


async def test_concurrent_requests_share_decode_steps_and_each_gets_its_length(
    decoder: ms.ModelState,
) -> None:
    client = await client_for(decoder)
    try:
        decoder.engine.peak_active = 0  # type: ignore[union-attr]
        lengths = [6, 10, 14]
        answers = await asyncio.gather(
            *(
                client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": n, "ignore_eos": True})
                for n in lengths
            )
        )
        got = [(await a.json())["usage"]["completion_tokens"] for a in answers]
        assert got == lengths
        # the later requests arrive while the first one's prefill runs: they are decoded together
        assert decoder.engine.peak_active >= 2  # type: ignore[union-attr]
    finally:
        await client.close()


async def test_bad_generation_requests_get_one_line_errors(decoder: ms.ModelState) -> None:
    client = await client_for(decoder)
    try:
        for body, status, words in (
            ({"prompt": PROMPT, "max_tokens": 2000}, 400, "maximum context length is 2048"),
            ({"prompt": PROMPT, "model": "gpt-4"}, 404, "not served here"),
            ({"prompt": [1, 2, 60000]}, 400, "token ids must lie in [0, 50257)"),
            ({"prompt": PROMPT, "n": 2}, 400, "one choice per request"),
            ({"prompt": PROMPT, "max_tokens": True}, 400, "max_tokens"),
            ({"prompt": PROMPT, "temperature": -1}, 400, "temperature"),
            ({"max_tokens": 3}, 400, "prompt: required"),
        ):
            r = await client.post("/v1/completions", json=body)
            doc = await r.json()
            assert r.status == status and words in doc["error"], (body, doc)
        r = await client.post("/v1/chat/completions", json={"messages": []})
        assert r.status == 400 and "messages" in (await r.json())["error"]
        r = await client.post(
            "/v1/completions", data=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert r.status == 400
        # the server keeps serving
        r = await client.post("/v1/completions", json={"prompt": "ok", "max_tokens": 2, "ignore_eos": True})
        assert r.status == 200 and (await r.json())["usage"]["completion_tokens"] == 2
    finally:
        await client.close()


async def test_a_model_that_does_not_generate_answers_404_on_the_openai_routes() -> None:
    state = ms.ModelState(
        entry=get_entry("mobilenet_v3_small"),
        weights="random",
        device_request="cpu",
        hub_repo=None,
        hub_model=None,
        warmup_runs=0,
    )
    state.ready = True  # no model needed: the route refuses before using it
    client = await client_for(state)
    try:
        r = await client.post("/v1/completions", json={"prompt": "x"})
        assert r.status == 404 and "does not generate text" in (await r.json())["error"]
    finally:
        await client.close()


def test_detokenizer_holds_back_split_utf8_and_marks_non_byte_ids() -> None:
    text = "héllo €uro"
    detok = Detokenizer()
    pieces = [detok.piece(t) for t in encode_text(text)]
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    assert pieces[1] == "" and pieces[2] == "é"  # é is two bytes: the first is held back
    assert detok.piece(EOS_ID) == "" and detok.piece(4242) == " w4242"


# ---------------------------------------------------------------- the prefix cache


def test_block_keys_name_whole_prefixes_and_only_full_blocks() -> None:
    b = PREFIX_BLOCK_TOKENS
    a = list(range(3 * b + 5))
    keys = block_keys(a)
    assert len(keys) == 3  # the 5 tokens after the third block make no block
    assert block_keys(a[: 2 * b]) == keys[:2]  # a prefix has the prefix's keys
    other = [7, *a[1:]]  # one different token in the first block changes every key after it
    assert not set(block_keys(other)) & set(keys)
    # the same block after a different prefix is a different key (the parent is in the hash)
    assert block_keys(a[b : 2 * b])[0] != keys[1]


def test_prefix_cache_reuses_the_longest_run_and_forgets_the_least_recently_used() -> None:
    cache = PrefixCache(capacity_blocks=3, block_tokens=4)
    keys = block_keys(list(range(16)), 4)  # 4 blocks
    for i, k in enumerate(keys[:3]):
        cache.store(k, f"block{i}")
    assert cache.longest_prefix(keys) == ["block0", "block1", "block2"]  # the 4th is not cached
    assert cache.longest_prefix(block_keys([9, *range(1, 16)], 4)) == []  # another first block: no run
    cache.longest_prefix(keys[:1])  # block0 is now the most recent; block1 the least
    cache.store(keys[3], "block3")
    assert len(cache) == 3 and keys[1] not in cache and cache.evicted_blocks == 1
    assert cache.longest_prefix(keys) == ["block0"]  # the chain breaks at the evicted block
    assert cache.stats()["hit_tokens"] == (3 + 0 + 1 + 1) * 4
    assert PrefixCache(capacity_blocks=0).stats()["capacity_blocks"] == 0


@contextlib.contextmanager
def prefix_cache_on(state: ms.ModelState, blocks: int = 256) -> Iterator[PrefixCache]:
    """The module's server with a fresh prefix cache (the engine is idle between requests)."""
    engine = state.engine
    assert engine is not None
    engine.prefix_cache = PrefixCache(capacity_blocks=blocks)
    try:
        yield engine.prefix_cache
    finally:
        engine.prefix_cache = None


def test_a_cached_prefix_gives_the_logits_of_a_full_prefill(decoder: ms.ModelState) -> None:
    """The KV of a prefix plus a prefill of the rest (the offset causal mask) equals one whole prefill."""
    torch, model = decoder.torch, decoder.model
    prompt = token_prompt(70, seed=3)
    with torch.inference_mode():
        whole = model.new_cache(80)
        full = model.step(torch.tensor([prompt]), [whole])
        split = model.new_cache(80)
        split.k[:, :, :48] = whole.k[:, :, :48]
        split.v[:, :, :48] = whole.v[:, :, :48]
        split.length = 48
        rest = model.step(torch.tensor([prompt[48:]]), [split])
    assert torch.allclose(full, rest, atol=1e-4, rtol=1e-4)
    assert torch.allclose(whole.k[:, :, :70], split.k[:, :, :70], atol=1e-5)


async def completion_usage(client: TestClient, prompt: list[int], *, stream: bool) -> dict[str, Any]:
    """`usage` and `timings` of one greedy completion of 4 tokens (streamed: from the usage chunk)."""
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": 4, "ignore_eos": True, "temperature": 0}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        r = await client.post("/v1/completions", json=body)
        doc = sse_events(await r.text())[-2]
    else:
        r = await client.post("/v1/completions", json=body)
        doc = await r.json()
    assert r.status == 200, doc
    assert doc["usage"]["prompt_tokens_details"]["cached_tokens"] == doc["timings"]["cached_tokens"]
    return {**doc["usage"], **doc["timings"]}


async def test_prefix_cache_reports_cached_tokens_and_prefills_only_the_rest(decoder: ms.ModelState) -> None:
    """With the cache on, a repeated prompt is served from its cached blocks: `cached_tokens` (usage, streamed
    and not) is the prompt's full blocks short of its last token, and only the rest is prefilled
    (`prefill_tokens`, counted by the engine as the tokens it ran through the model). Distinct prompts share
    nothing; a common 100-token prefix shares its 6 full blocks. With the cache off nothing is cached.
    Measured once (in process, 2 cores busy with a C++ build): prefill_cpu 1,642 ms uncached, 95 ms cached
    at 500 tokens (not asserted: the counts above are the proof)."""
    b = PREFIX_BLOCK_TOKENS
    client = await client_for(decoder)
    try:
        long = token_prompt(500, seed=11)
        for _ in range(2):  # cache off (the default): a repeat is prefilled whole
            u = await completion_usage(client, long, stream=True)
            assert u["cached_tokens"] == 0 and u["prefill_tokens"] == 500
        with prefix_cache_on(decoder) as cache:
            first = await completion_usage(client, long, stream=True)
            assert first["cached_tokens"] == 0 and first["prefill_tokens"] == 500
            assert len(cache) == 500 // b  # every full block of the prompt is stored
            for stream in (True, False):
                again = await completion_usage(client, long, stream=stream)
                assert again["cached_tokens"] == 496 and again["prefill_tokens"] == 4  # 31 blocks; 4 left
                assert again["prompt_tokens"] == 500
            # distinct prompts (different first tokens): no block in common
            for seed in (12, 13):
                u = await completion_usage(client, token_prompt(500, seed=seed), stream=True)
                assert u["cached_tokens"] == 0 and u["prefill_tokens"] == 500
            # a shared 100-token prefix (a system prompt): its 6 full blocks, whatever follows
            system = token_prompt(100, seed=14)
            await completion_usage(client, system + token_prompt(60, seed=15), stream=False)
            u = await completion_usage(client, system + token_prompt(60, seed=16), stream=False)
            assert u["cached_tokens"] == 96 and u["prefill_tokens"] == 64
            # a short prompt: at most its full blocks before the last token
            await completion_usage(client, long[:b], stream=False)
            assert (await completion_usage(client, long[:b], stream=False))["cached_tokens"] == 0
            assert (await completion_usage(client, long[: b + 1], stream=False))["cached_tokens"] == b
            print(
                f"prefill_cpu_ms uncached {first['prefill_cpu_ms']:.0f}, cached {again['prefill_cpu_ms']:.0f}"
            )
    finally:
        await client.close()


async def test_an_end_of_sequence_ends_early_unless_ignore_eos_or_min_tokens(
    decoder: ms.ModelState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the model's logits pushed to <|endoftext|> (so the end of sequence is every step's pick): a plain
    request stops after it (finish_reason `stop`); `min_tokens` 5 holds it off for 5 tokens; `ignore_eos`
    gives exactly `max_tokens` (finish_reason `length`). Streamed, with usage, as the openai templates ask."""
    step = decoder.model.step

    def eos_first(ids: Any, caches: Any) -> Any:
        logits = step(ids, caches)
        logits[:, EOS_ID] += 1e4
        return logits

    monkeypatch.setattr(decoder.model, "step", eos_first)
    client = await client_for(decoder)
    try:
        for extra, tokens, finish in (
            ({}, 1, "stop"),
            ({"min_tokens": 5}, 6, "stop"),  # 5 tokens, then the end of sequence
            ({"ignore_eos": True}, 8, "length"),
        ):
            body = {
                "prompt": PROMPT,
                "max_tokens": 8,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            events = sse_events(await (await client.post("/v1/completions", json=body | extra)).text())
            assert events[-2]["usage"]["completion_tokens"] == tokens, extra
            assert events[-3]["choices"][0]["finish_reason"] == finish, extra
    finally:
        await client.close()


def test_the_prefix_cache_switch_comes_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not ms.parse_args(["--model", "decoder_small"]).prefix_cache
    assert ms.parse_args(["--model", "decoder_small", "--prefix-cache"]).prefix_cache
    monkeypatch.setenv(ms.PREFIX_CACHE_ENV, "1")
    assert ms.parse_args(["--model", "decoder_small"]).prefix_cache
    # a preset's switch: `server_args` reach the built-in server's command line
    preset = load_preset("llm_smoke", ["server_args=--prefix-cache"], check_host=False)
    command = server_command(preset)
    assert command is not None and ms.parse_args(command).prefix_cache


# ---------------------------------------------------------------- on the real Docker engine

LENGTHS = (32, 256, 1024)
REPS = 6  # per prompt length: the ranges below, measured over 10, never overlapped
SMALL_CAP, LARGE_CAP = 0.5, 2.0


def token_prompt(length: int, seed: int) -> list[int]:
    return [1000 + (seed * 7919 + i * 104729) % 49000 for i in range(length)]


@pytest.fixture(scope="module")
def decoder_image(docker_client, server_image) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """This tree's server image under a tag of its own, so a rebuild of the shared tag from another tree
    during the (minutes-long) tests cannot swap the server under them."""
    tag = f"tui-profiler-server:decoder-test-{RUN_TAG}"
    docker_client.images.get(server_image).tag(tag)
    try:
        yield tag
    finally:
        docker_client.images.remove(tag, noprune=True)


@pytest.fixture
def start_decoder(docker_client, decoder_image) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    started: list[Any] = []

    def start(**kwargs: Any) -> Any:
        container = docker_client.containers.run(
            decoder_image,
            command=["--model", "decoder_small", "--weights", "random"],
            detach=True,
            labels={SESSION_LABEL: session_label_value("decoder")},
            ports={"8000/tcp": ("127.0.0.1", None)},
            read_only=True,
            tmpfs={"/tmp": "rw,size=512m"},
            **kwargs,
        )
        started.append(container)
        return container

    try:
        yield start
    finally:
        for c in started:
            with contextlib.suppress(Exception):
                c.remove(force=True)


def cgroup_of(container: Any) -> CgroupReader:
    container.reload()
    reader = CgroupReader(find_container_cgroup(container.id, pid=container.attrs["State"]["Pid"]))
    assert reader.read().cpu_usage_ns is not None and reader.read().throttled_ns is not None
    return reader


@dataclass
class Window:
    """What the kernel counted for the container over a run of requests."""

    wall_s: float
    cpu_s: float
    throttled_s: float
    nr_throttled: int


def measured(
    reader: CgroupReader, url: str, length: int, max_tokens: int, reps: int
) -> tuple[list[dict[str, Any]], Window]:
    """`completions(...)` and what the kernel counted meanwhile."""
    before, t0 = reader.read(), time.perf_counter()
    out = completions(url, length, max_tokens, reps)
    after, wall = reader.read(), time.perf_counter() - t0
    assert before.cpu_usage_ns is not None and after.cpu_usage_ns is not None
    assert before.throttled_ns is not None and after.throttled_ns is not None
    return out, Window(
        wall,
        (after.cpu_usage_ns - before.cpu_usage_ns) / 1e9,
        (after.throttled_ns - before.throttled_ns) / 1e9,
        (after.nr_throttled or 0) - (before.nr_throttled or 0),
    )


def completions(url: str, length: int, max_tokens: int, reps: int) -> list[dict[str, Any]]:
    """`reps` greedy completions of exactly `max_tokens` tokens one after another; their `timings`."""
    out = []
    for rep in range(reps):
        r = requests.post(
            f"{url}/v1/completions",
            json={
                "prompt": token_prompt(length, rep),
                "max_tokens": max_tokens,
                "ignore_eos": True,
                "temperature": 0,
            },
            timeout=600,
        )
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["usage"]["completion_tokens"] == max_tokens
        out.append(doc["timings"])
    return out


@pytest.mark.docker
@pytest.mark.alone  # asserts the 0.5 cap throttles: a busy machine starves the container below it
def test_prefill_work_grows_with_prompt_length_and_the_smaller_cap_binds(start_decoder) -> None:  # type: ignore[no-untyped-def]
    """decoder_small in two containers, --cpus 0.5 and --cpus 2 (torch threads `auto`: 1 and 2). For each
    prompt length (32, 256, 1024 tokens), REPS requests of one output token each: the server's own
    prefill CPU seconds (process CPU over the prefill, `timings.prefill_cpu_ms`) and the cgroup's CPU usage
    over them (cpuacct.usage, from the host). Then 3 requests of 32 output tokens (decode).

    Asserted, under both caps: every longer prompt's prefill took more CPU than every shorter one's (no
    overlap); the kernel's CPU usage over them grows with the length too; the server's CPU
    seconds are within what the kernel counted. Under the 0.5 cap: the kernel throttled the container
    (nr_throttled and throttled time grow, during prefill and during decode) and its usage stayed under
    the quota. No latency is compared.

    Measured here (2 cores shared by several jobs), prefill CPU per request, min–max of 10, at 32 / 256 /
    1024 tokens: 0.14–0.18 / 0.69–0.81 / 3.04–3.66 s under 0.5, 0.21–0.26 / 0.78–0.92 / 2.89–3.54 s under
    2 (the smallest gap between neighbouring ranges 0.51 s); the server's sums within the kernel's usage
    over the 10 (5 % allowed for the two clocks). Under 0.5: usage 0.49–0.50 cores of wall time, throttled time 39–51 % of wall time
    (28–665 throttled periods); under 2: at most 8 throttled periods, 0.025 s.
    """
    containers = {
        SMALL_CAP: start_decoder(nano_cpus=int(SMALL_CAP * 1e9)),
        LARGE_CAP: start_decoder(nano_cpus=int(LARGE_CAP * 1e9)),
    }
    urls = {cap: base_url(c) for cap, c in containers.items()}
    for cap, c in containers.items():
        _, doc = wait_ready(c, urls[cap], timeout_s=300)
        assert doc["runtime"]["cgroup_cpu_quota"] == pytest.approx(cap)
    report: dict[float, dict[str, Any]] = {}
    for cap, c in containers.items():
        reader = cgroup_of(c)
        url = urls[cap]

        prefill: dict[int, list[float]] = {}
        windows: dict[int, Window] = {}
        for length in LENGTHS:
            timings, window = measured(reader, url, length, 1, REPS)
            prefill[length] = [t["prefill_cpu_ms"] / 1000 for t in timings]
            windows[length] = window
            assert sum(prefill[length]) <= window.cpu_s * 1.05 + 0.05, (cap, length, prefill, window)
        decode_timings, decode_window = measured(reader, url, 32, 32, 3)
        report[cap] = {"prefill": prefill, "windows": windows, "decode": decode_window}
        for shorter, longer in itertools.pairwise(LENGTHS):
            assert min(prefill[longer]) > max(prefill[shorter]), (cap, report[cap])
            assert windows[longer].cpu_s > windows[shorter].cpu_s, (cap, report[cap])
        assert all(t["decode_cpu_ms"] > 0 for t in decode_timings)
        reader.close()
    for cap, r in report.items():  # the spread, for the docstring (shown with -s)
        spans = {n: f"{min(v):.2f}-{max(v):.2f}" for n, v in r["prefill"].items()}
        print(f"cap {cap}: prefill cpu s {spans}; windows {r['windows']}; decode {r['decode']}")
    small = report[SMALL_CAP]
    for window in [*small["windows"].values(), small["decode"]]:
        assert window.cpu_s <= SMALL_CAP * window.wall_s * 1.1 + 0.05, report  # the quota holds
    longest = small["windows"][LENGTHS[-1]]
    assert longest.nr_throttled > 0 and longest.throttled_s > 0.1 * longest.wall_s, report
    assert small["decode"].nr_throttled > 0 and small["decode"].throttled_s > 0.1 * small["decode"].wall_s, (
        report
    )


@pytest.mark.docker
@pytest.mark.xdist_group(
    "llm_memory"
)  # minutes on its own; statuses only: it may run beside the engine tests
def test_llm_memory_records_its_oom_cell_and_finishes_the_rest(decoder_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`tui-profiler run llm_memory --headless` (this tree's image, less work per cell): the cell with four
    2000-token contexts under the 1.4 GiB cap ends `oom`; every other cell (both caps) ends `ok`; nothing
    is left running."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUI_PROFILER_PRESETS": str(tmp_path / "user-presets")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tui_profiler",
            "run",
            "llm_memory",
            "--headless",
            "--output",
            str(tmp_path),
            "--set",
            f"image={decoder_image}",
            # the preset's cells and caps as shipped, with less work in each (no warm-up, 16 tokens out):
            # the cache of four 1984 + 16 token contexts still overflows 1.4 GiB (the arithmetic in the preset)
            "--set",
            "load.warmup=0",
            "--set",
            "input.output_lens=16",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    sessions = [p for p in tmp_path.iterdir() if p.is_dir() and (p / "cells.csv").exists()]
    assert len(sessions) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(sessions[0] / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    got = {(float(c["mem_cap_gb"]), int(c["token_len"]), int(c["concurrency"])): c["status"] for c in cells}
    assert len(got) == 8, got
    assert got.pop((1.4, 1984, 4)) == "oom", cells
    assert set(got.values()) == {"ok"}, cells
    requests_ok = []
    with open(sessions[0] / "requests.csv") as f:
        requests_ok = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    assert requests_ok and all(r["http_status"] == "200" for r in requests_ok)
