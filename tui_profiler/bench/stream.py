"""Stream benchmark: what reading a streamed answer costs the client, and how well it times the tokens.

A local server (`python -m tui_profiler.bench.stream PORT`, plain sockets, its own process pinned to the
first usable core) answers each request with OpenAI-style SSE events on a known schedule: the first one
`TTFT_S` after it has read the request, then one every `GAP_S` (1,000 events/s), each written as its own
chunk at the scheduled instant (a sleep, then a busy wait for the last 0.3 ms, so the schedule holds to
microseconds when the server's core is free). The client is
`run_load` on the lean transport and uvloop, in this process, pinned to another core.

Measured:
- the client's CPU time per stream event (process time of this process over the load, divided by the
  events read): the event loop, llhttp, the SSE parser and the per-request bookkeeping, all of it;
- the SSE parser alone per event (`AnswerStream.feed`, one event a read, no I/O);
- TTFT and inter-token gaps as tui-profiler measured them against the schedule: the error (measured minus
  scheduled), p50 and p99 over requests (TTFT) and over every gap (ITL). The TTFT error includes the
  request's trip to the server; both include the server's wake-up and the loopback delivery.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from tui_profiler.bench.core import BenchReport, judge, measured, median
from tui_profiler.cgroups import affinity_cores
from tui_profiler.stats import percentile

TTFT_S = 0.020
GAP_S = 0.001  # 1,000 events/s
SPIN_S = 0.0003  # the server sleeps until this close to an event's time, then spins
TARGET_US = 50.0


def _event(i: int) -> bytes:
    doc = {
        "id": "cmpl-bench",
        "object": "text_completion",
        "created": 1700000000,
        "model": "bench",
        "choices": [{"index": 0, "text": f" tok{i}", "logprobs": None, "finish_reason": None}],
    }
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def serve(port: int, lateness_file: str) -> None:
    """The scheduled-event server: one connection at a time, keep-alive, `max_tokens` events a request.
    Each request's lateness (actual write - scheduled time, per event) goes to `lateness_file` as a line."""
    late_out = open(lateness_file, "a")
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    print("ready", flush=True)
    clock = time.perf_counter
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        with contextlib.suppress(OSError):
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        raise OSError("closed")
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                t_recv = clock()
                n = int(json.loads(body).get("max_tokens") or 16)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                events = [_chunk(_event(i)) for i in range(n)]
                late = []
                for i, ev in enumerate(events):
                    due = t_recv + TTFT_S + i * GAP_S
                    ahead = due - clock() - SPIN_S
                    if ahead > 0:
                        time.sleep(ahead)
                    while clock() < due:  # the last stretch a busy wait: the schedule to the microsecond
                        pass
                    late.append(clock() - due)
                    conn.sendall(ev)
                late_out.write(json.dumps(late) + "\n")
                late_out.flush()
                usage = {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": n}}
                tail = b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n"
                conn.sendall(_chunk(tail) + b"0\r\n\r\n")
        conn.close()


def _cores() -> tuple[int | None, int | None]:
    cores = affinity_cores()
    if len(cores) >= 2:
        return cores[0], cores[1]
    return None, None


@contextlib.contextmanager
def _server(core: int | None, lateness_file: str) -> Iterator[str]:
    from tui_profiler.runtime.common import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "tui_profiler.bench.stream", str(port), lateness_file]
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd] if _has_taskset() else cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the scheduled-event server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _has_taskset() -> bool:
    import shutil

    return shutil.which("taskset") is not None


def _parser_us_per_event(n: int) -> float:
    from tui_profiler.load.stream import AnswerStream

    events = [_event(i) for i in range(n)]
    s = AnswerStream("auto", True)
    s.head(200, "text/event-stream")
    t0 = time.process_time()
    for i, ev in enumerate(events):
        s.feed(ev, float(i))
    dt = time.process_time() - t0
    assert s.token_events == n
    return dt / n * 1e6


def _one_run(base: str, n_tokens: int, requests: int) -> dict[str, Any]:
    from tui_profiler.load.client import run, run_load
    from tui_profiler.load.inputs import InputSpec
    from tui_profiler.load.patterns import LoadPattern
    from tui_profiler.load.template import build_payload, builtin_template

    template = builtin_template("openai-completions").with_model("bench")
    payload = build_payload(
        InputSpec(kind="text", base_size=(8,), token_len=8, encoding="text"), template, output_len=n_tokens
    )
    pattern = LoadPattern(concurrency=1, requests=requests, warmup=1, transport="raw", timeout_s=60)
    cpu0 = time.process_time()
    results = run(run_load(base, template, payload, pattern, keep_gaps=True))
    cpu = time.process_time() - cpu0
    timed = [r for r in results if not r.warmup and r.ok]
    events = sum(len(r.itl_s) + 1 for r in results if r.ttft_s is not None)
    return {
        "cpu_us_per_event": cpu / events * 1e6 if events else None,
        "ttft_err_s": [r.ttft_s - TTFT_S for r in timed if r.ttft_s is not None],
        "itl_err_s": [g - GAP_S for r in timed for g in r.itl_s],
        "ok": len(timed),
        "requests": requests,
    }


def run_stream_bench(report: BenchReport, *, quick: bool, say: Callable[[str], None]) -> None:
    server_core, client_core = _cores()
    n_tokens = 200 if quick else 1000
    requests = 5 if quick else 10
    rounds = 2 if quick else 3
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    runs: list[dict[str, Any]] = []
    parser: list[float] = []
    import tempfile

    late_path = os.path.join(tempfile.mkdtemp(prefix="tui-profiler-bench-"), "lateness.jsonl")
    try:
        if client_core is not None:
            os.sched_setaffinity(0, {client_core})
        with _server(server_core, late_path) as base:
            for i in range(rounds):
                say(f"stream: round {i + 1}/{rounds}: {requests} requests x {n_tokens} events at 1,000/s")
                runs.append(_one_run(base, n_tokens, requests))
                parser.append(_parser_us_per_event(20_000))
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    add = report.measures.append
    pinned = "client and server on separate cores" if client_core is not None else "not pinned (one core)"
    add(
        measured(
            "stream",
            "client CPU per stream event at 1,000 events/s",
            "ours (run_load, raw, uvloop)",
            [r["cpu_us_per_event"] for r in runs],
            "µs",
            target=f"≤ {TARGET_US:g} µs per event",
            met=judge(median([r["cpu_us_per_event"] for r in runs]), at_most=TARGET_US),
            note=f"{requests} requests x {n_tokens} events a round; {pinned}",
        )
    )
    add(measured("stream", "SSE parser alone per event", "load.stream.AnswerStream", parser, "µs"))
    ttft = [e for r in runs for e in r["ttft_err_s"]]
    itl = [e for r in runs for e in r["itl_err_s"]]
    for name, errs, what in (
        ("TTFT", ttft, f"scheduled {TTFT_S * 1e3:g} ms after the request is read"),
        ("ITL", itl, f"scheduled every {GAP_S * 1e3:g} ms"),
    ):
        for q in (50, 99):
            value = percentile([abs(e) for e in errs], q)
            add(
                measured(
                    "stream",
                    f"{name} error vs the schedule, p{q} of |measured - scheduled|",
                    "ours (run_load, raw, uvloop)",
                    [None if value is None else value * 1e6],
                    "µs",
                    note=f"{what}; {len(errs)} values; signed median {_fmt_us(percentile(errs, 50))}",
                )
            )
    with open(late_path) as f:
        late = [x for line in f for x in json.loads(line)]
    for q in (50, 99):
        value = percentile(late, q)
        add(
            measured(
                "stream",
                f"the server's own lateness, p{q} (its write - the schedule)",
                "scheduled-event server",
                [None if value is None else value * 1e6],
                "µs",
                note="the part of the errors above that is the server's, not the client's",
            )
        )
    together = [r for r in runs for g in r["itl_err_s"] if g + GAP_S < 1e-4]
    add(
        measured(
            "stream",
            "gaps under 0.1 ms (events that came in one read)",
            "ours (run_load, raw, uvloop)",
            [100.0 * len(together) / len(itl) if itl else None],
            "% of gaps",
            note="a late server or client on a busy machine delivers events in bursts",
        )
    )
    report.note(
        "stream",
        f"a scheduled-event server (sleep then busy wait to each event's time, {pinned}); "
        f"{sum(r['ok'] for r in runs)} of {sum(r['requests'] for r in runs)} timed requests answered.",
    )


def _fmt_us(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1e6:+.0f} µs"


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
