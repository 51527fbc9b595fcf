"""The load generator against our real model server (servers/model_server.py, a real torchvision model
with random weights, run as a local subprocess): every encoding is understood, the server's timings come
back through Server-Timing, and latency grows with the input size."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tui_profiler.load.client import run_load
from tui_profiler.load.inputs import InputSpec
from tui_profiler.load.patterns import LoadPattern
from tui_profiler.load.template import (
    build_payload,
    builtin_template,
    default_template,
    parse_request_section,
)
from tui_profiler.runtime.common import free_port

REPO = Path(__file__).resolve().parent.parent


def start_server(model: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "TUI_PROFILER_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "servers.model_server", "--model", model, "--weights", "random",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"model server exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except Exception:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("model server never became ready")


@pytest.fixture(scope="module")
def mobilenet() -> Iterator[str]:
    proc, url = start_server("mobilenet_v3_small")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg", "json"])
async def test_every_encoding_is_understood_and_timed_by_the_server(mobilenet: str, encoding: str) -> None:
    payload = build_payload(InputSpec(kind="image", base_size=(224, 224), scale=0.5, encoding=encoding))
    res = await run_load(mobilenet, default_template(), payload, LoadPattern(requests=3, warmup=1))
    assert len(res) == 4 and res[0].warmup
    for r in res:
        assert r.ok, r.error
        assert r.infer_ms is not None and r.infer_ms > 0 and r.decode_ms is not None
        assert r.server_total_ms is not None and r.overhead_ms is not None
        assert r.latency_s is not None and r.latency_s * 1000 >= r.infer_ms
        assert r.queue_ms is not None


async def test_latency_grows_with_scale(mobilenet: str) -> None:
    medians = {}
    for scale in (0.5, 2.0):
        payload = build_payload(InputSpec(kind="image", base_size=(224, 224), scale=scale))
        res = await run_load(mobilenet, default_template(), payload, LoadPattern(requests=8, warmup=2))
        assert all(r.ok for r in res)
        medians[scale] = statistics.median(r.infer_ms for r in res if not r.warmup)  # type: ignore[type-var]
    assert medians[2.0] > 2.0 * medians[0.5]  # 16x the pixels; a generous margin for a busy machine


async def test_explicit_template_drives_our_server_the_same_way(mobilenet: str) -> None:
    """The example preset's explicit table: same request path, a JSON-field check on the answer."""
    import tomllib

    doc = tomllib.loads((REPO / "presets/examples/own-server-explicit-template.toml").read_text())
    tpl = parse_request_section(doc["request"], "own-server-explicit-template.toml: request", doc["model"])
    payload = build_payload(InputSpec(kind="image", base_size=(224, 224), scale=0.5), tpl)
    res = await run_load(mobilenet, tpl, payload, LoadPattern(requests=3))
    assert all(r.ok and r.infer_ms is not None for r in res), [r.error for r in res]
    # a check that does not match the server's answer is recorded per request, not hidden
    bad = parse_request_section({"check": {"json_field": "predictions"}}, "t", "m")
    res = await run_load(mobilenet, bad, payload, LoadPattern(requests=2))
    assert all(r.outcome == "check_failed" for r in res)
    # a foreign template on our server: wrong path → HTTP errors as data
    tf = builtin_template("tfserving").with_model("x")
    res = await run_load(
        mobilenet, tf, build_payload(InputSpec(kind="image", base_size=(8, 8)), tf), LoadPattern(requests=2)
    )
    assert all(r.outcome == "http_error" and r.status == 404 for r in res)


def test_server_info_matches_the_default_input(mobilenet: str) -> None:
    with urllib.request.urlopen(f"{mobilenet}/info") as f:
        info = json.loads(f.read())
    assert info["input_kind"] == "image"


async def test_token_inputs_on_the_text_encoder() -> None:
    proc, url = start_server("text_encoder")
    try:
        medians = {}
        for enc, n in (("raw", 16), ("json", 16), ("text", 16), ("raw", 256)):
            payload = build_payload(InputSpec(kind="tokens", base_size=(128,), token_len=n, encoding=enc))
            res = await run_load(url, default_template(), payload, LoadPattern(requests=4, warmup=1))
            assert all(r.ok and r.infer_ms is not None for r in res), [r.error for r in res]
            if enc == "raw":
                medians[n] = statistics.median(r.infer_ms for r in res if not r.warmup)  # type: ignore[type-var]
        assert medians[256] > medians[16]
    finally:
        proc.terminate()
        proc.wait(20)
