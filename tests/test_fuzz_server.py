"""Issue 7, bad input to the running model server: malformed bodies, wrong shapes and dtypes, enormous
declared sizes (Content-Length, X-Tensor-Shape, image headers), deep JSON, and slow trickled bodies over a
raw socket. Every answer is a 4xx (never a 5xx, never a hang), the server's memory stays bounded (RSS
within a margin of its idle RSS) and it keeps serving valid requests. The number of cases is printed.

The server is the real one (`servers.model_server`, MobileNetV3-Small, random weights) started by the
`process` runtime under a 1-CPU / 2 GiB cgroup cap, so a memory blow-up would be contained (and seen).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_profiler.runtime.base import ReadinessProbe, RunningTarget, TargetSpec
from tui_profiler.runtime.process import ProcessRuntime

COUNTS: Counter[str] = Counter()
RSS_MARGIN = 400 * 2**20  # the largest legit buffer is one request body; the fuzz bodies are far smaller
IO_TIMEOUT_S = 60.0


class Server:
    def __init__(self, target: RunningTarget, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self.loop = loop
        self.port = int(target.base_url.rsplit(":", 1)[1])
        self.pid = target.pids[0] if target.pids else int(target.ident)
        self.idle_rss = 0
        self.max_rss = 0

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def check(self) -> None:
        """Alive (a valid request answers 200) and memory bounded."""
        rss = self.rss()
        self.max_rss = max(self.max_rss, rss)
        assert rss <= self.idle_rss + RSS_MARGIN, (
            f"RSS {rss / 2**20:.0f} MiB vs idle {self.idle_rss / 2**20:.0f} MiB"
        )
        status, body = http(self.port, "POST", "/predict", RAW_HEADERS, VALID)
        assert status == 200, body[:300]


def http(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes = b"",
    *,
    content_length: int | None = None,
    chunks: int = 1,
    pause_s: float = 0.0,
) -> tuple[int, bytes]:
    """One request over a raw socket (so lengths and pacing can lie); returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as s:
        length = len(body) if content_length is None else content_length
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {length}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        s.sendall(head.encode("latin-1"))
        step = max(1, -(-len(body) // chunks))
        try:
            for i in range(0, len(body), step):
                s.sendall(body[i : i + step])
                if pause_s:
                    time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (413) and close before the whole body is sent
        data = b""
        while True:
            try:
                part = s.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), f"no HTTP answer: {data[:200]!r}"
    return int(status_line.split()[1]), data.split(b"\r\n\r\n", 1)[-1]


def png(width: int, height: int, data: bytes | None = None) -> bytes:
    """A PNG whose header declares width x height (the pixel data may be missing or short)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(data if data is not None else b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


pytestmark = pytest.mark.server  # the real model server, one process for the module
RAW_HEADERS = {
    "Content-Type": "application/octet-stream",
    "X-Tensor-Shape": "1,3,64,64",
    "X-Tensor-Dtype": "float32",
}
VALID = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32).tobytes()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    rt = ProcessRuntime()
    spec = TargetSpec(
        session_id="test-fuzz-server",
        image="",
        model="mobilenet_v3_small",
        cpus=1,
        memory_gb=2,
        readiness=ReadinessProbe(timeout_s=300),
    )
    target = asyncio.run_coroutine_threadsafe(rt.start(spec), loop).result(timeout=330)
    try:
        srv = Server(target, loop)
        for _ in range(3):  # settle the allocator before taking the idle RSS
            assert http(srv.port, "POST", "/predict", RAW_HEADERS, VALID)[0] == 200
        srv.idle_rss = srv.rss()
        yield srv
    finally:
        facts = asyncio.run_coroutine_threadsafe(rt.stop(target), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        print(
            f"\nserver fuzz: {dict(COUNTS)} cases; server RSS idle {srv.idle_rss / 2**20:.0f} MiB, "
            f"max {srv.max_rss / 2**20:.0f} MiB; exit {facts.get('exit_code')}"
        )


def _expect_4xx(status: int, body: bytes, what: Any, *, protocol: bool = False) -> None:
    """A 4xx naming the problem: JSON from the server's handlers, plain text from aiohttp's HTTP parser
    for what is not even HTTP (`protocol`)."""
    assert 400 <= status < 500, f"{what}: HTTP {status}: {body[:300]!r}"
    try:
        doc = json.loads(body)
    except ValueError:
        protocol = True
    if protocol:  # rejected by the HTTP parser before any handler: a plain-text 400
        assert status == 400 and body.strip(), (what, status, body[:200])
        COUNTS["protocol_400"] += 1
        return
    assert doc.get("error"), doc


_dtype = st.one_of(
    st.sampled_from(
        [
            "float32",
            "float16",
            "uint8",
            "int64",
            "int32",
            "float64",
            "bool",
            "",
            "FLOAT32",
            "complex64",
            "float32; drop table",
            "\u00e9",
        ]
    ),
    st.text(max_size=10),
)
_dims = st.lists(
    st.one_of(st.integers(-3, 4), st.integers(0, 10**6), st.sampled_from([2**31, 2**63, 10**30])),
    min_size=0,
    max_size=6,
)
_shape_header = st.one_of(
    _dims.map(lambda d: ",".join(map(str, d))),
    st.text(max_size=20),
    st.sampled_from(["1,3,224,224,", "1x3x224x224", "1, 3 , 2e2, 224", "nan", "-1"]),
)


@settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(shape=_shape_header, dtype=_dtype, body=st.binary(min_size=0, max_size=4096))
def test_fuzzed_raw_tensors_get_4xx(server: Server, shape: str, dtype: str, body: bytes) -> None:
    headers = {"Content-Type": "application/octet-stream", "X-Tensor-Shape": shape, "X-Tensor-Dtype": dtype}
    headers = {
        k: v.encode("utf-8", "replace").decode("latin-1")
        for k, v in headers.items()
        if "\r" not in v and "\n" not in v
    }
    status, answer = http(server.port, "POST", "/predict", headers, body)
    COUNTS["raw"] += 1
    if status == 200:  # only a consistent shape/dtype/length may be accepted
        assert len(body) > 0
        COUNTS["raw_accepted_200"] += 1
        return
    _expect_4xx(status, answer, (shape, dtype, len(body)))


_json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**20), 10**20),
        st.floats(allow_nan=False),
        st.text(max_size=5),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    doc=st.one_of(
        _json_values,
        st.dictionaries(st.sampled_from(["tensor", "tokens", "text", "x"]), _json_values, max_size=2),
    ),
    ctype=st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "image/png",
            "image/jpeg",
            "application/x-www-form-urlencoded",
            "",
        ]
    ),
)
def test_fuzzed_json_and_content_types_get_4xx(server: Server, doc: Any, ctype: str) -> None:
    body = json.dumps(doc).encode()
    status, answer = http(server.port, "POST", "/predict", {"Content-Type": ctype} if ctype else {}, body)
    COUNTS["json"] += 1
    _expect_4xx(status, answer, (ctype, body[:100]))


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.binary(min_size=1, max_size=2048),
    ctype=st.sampled_from(["image/png", "image/jpeg", "application/json"]),
)
def test_fuzzed_malformed_bodies_get_4xx(server: Server, body: bytes, ctype: str) -> None:
    status, answer = http(server.port, "POST", "/predict", {"Content-Type": ctype}, body)
    COUNTS["malformed"] += 1
    _expect_4xx(status, answer, (ctype, body[:50]))


ENORMOUS = {
    "content_length_1TB": ({**RAW_HEADERS}, b"x" * 16, 10**12),
    "content_length_over_int64": ({**RAW_HEADERS}, b"x" * 16, 2**70),
    "shape_product_huge": ({**RAW_HEADERS, "X-Tensor-Shape": "1,3,1000000,1000000"}, VALID, None),
    "shape_int64_overflow": ({**RAW_HEADERS, "X-Tensor-Shape": f"{2**63},{2**63},3,3"}, VALID, None),
    "png_declares_10G_pixels": ({"Content-Type": "image/png"}, png(100_000, 100_000), None),
    "png_declares_4G_pixels_wide": ({"Content-Type": "image/png"}, png(2**31 - 1, 2), None),
    "json_nested_100k_deep": (
        {"Content-Type": "application/json"},
        b'{"tensor": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        None,
    ),
    "json_ragged": ({"Content-Type": "application/json"}, b'{"tensor": [[1,2],[3]]}', None),
    "json_many_numbers_wrong_shape": (
        {"Content-Type": "application/json"},
        json.dumps({"tensor": [0.5] * 200_000}).encode(),
        None,
    ),
    "body_over_the_limit": ({**RAW_HEADERS, "X-Tensor-Shape": "1,3,5000,5000"}, b"\0" * (300 * 2**20), None),
}


@pytest.mark.parametrize("name", list(ENORMOUS))
def test_enormous_declared_sizes_get_4xx(server: Server, name: str) -> None:
    headers, body, declared = ENORMOUS[name]
    status, answer = http(server.port, "POST", "/predict", headers, body, content_length=declared)
    COUNTS["enormous"] += 1
    _expect_4xx(status, answer, name, protocol=name == "content_length_over_int64")
    server.check()


def test_trickled_bodies_get_4xx_and_do_not_block_others(server: Server) -> None:
    """Bodies sent a few bytes at a time (and some that stall half-way): each complete one gets its 4xx,
    while a valid request is still served at once."""
    bad = np.zeros((1, 3, 16, 16), dtype=np.uint8).tobytes()  # 768 bytes, declared with a wrong shape
    headers = {**RAW_HEADERS, "X-Tensor-Shape": "1,4,16,16", "X-Tensor-Dtype": "uint8"}
    stalled = []
    for _ in range(20):  # connections that send half a body and then nothing
        s = socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT_S)
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nContent-Type: "
            b"application/octet-stream\r\n\r\n" + b"\0" * 500
        )
        stalled.append(s)
    results: list[tuple[int, bytes]] = []

    def trickle() -> None:
        results.append(http(server.port, "POST", "/predict", headers, bad, chunks=24, pause_s=0.05))

    threads = [threading.Thread(target=trickle) for _ in range(8)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    server.check()  # served while 20 stalled and 8 trickling connections are open
    served_in = time.perf_counter() - t0
    for t in threads:
        t.join(timeout=IO_TIMEOUT_S)
    for s in stalled:
        s.close()
    COUNTS["trickled"] += len(threads) + len(stalled)
    assert len(results) == len(threads)
    for status, answer in results:
        _expect_4xx(status, answer, "trickled")
    assert served_in < 1.2 * 0.05 * 24 + 5  # not queued behind the trickled bodies
    server.check()


def test_server_alive_and_bounded_after_the_fuzzing(server: Server) -> None:
    server.check()
    assert server.max_rss <= server.idle_rss + RSS_MARGIN
