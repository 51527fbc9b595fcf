"""`decoder_small` in our model server.

In process (the real aiohttp app on a local port, the real torch model): the OpenAI routes streaming and
not, exact output lengths with `ignore_eos`, usage, Server-Timing and the final stream event's timings,
greedy and seeded determinism, concurrent requests batched at the decode step, bad requests.

On the real Docker engine (marked docker): see the docstrings of the tests below the line.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from servers import model_server as ms
from servers.catalog import get_entry
from servers.decoder import EOS_ID, Detokenizer, encode_text, kv_bytes_per_token

PROMPT = list(range(1000, 1064))  # 64 token ids


def parse_server_timing(value: str) -> dict[str, float]:
    out = {}
    for part in value.split(","):
        name, _, dur = part.strip().partition(";dur=")
        out[name] = float(dur)
    return out


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
        assert doc["usage"] == {"prompt_tokens": 64, "completion_tokens": 12, "total_tokens": 76}
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
