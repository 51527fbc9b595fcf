"""A server whose answers take a known time: the known answer that tests and benchmarks check the profiler
against (stdlib and numpy only, no model). Each request's service time comes from a law, by its arrival
number k (0, 1, ...):

- `fixed:S` — S seconds;
- `lognormal:MEDIAN:SIGMA` — drawn from a lognormal with that median and shape, seeded (`seed`);
- `rising:BASE:STEP` — BASE + STEP * k: a server that slows down through a cell.

`serial` (the default): one request at a time, in arrival order (FIFO), on a fixed schedule — a service ends
at max(its start, the previous end) + its time, so a sleep's overshoot does not pile up in the queue; at
concurrency c each latency is then the sum of c consecutive service times. Otherwise requests are served side
by side. Every answer carries `Server-Timing: decode;dur=<the law's time, ms>, infer;dur=<time served, ms>`;
`GET /` answers at once (readiness) and `GET /stats` with `{"served": N}`. Nagle is off: headers and body
are two writes, and a delayed ACK would add ~40 ms to every answer.

Run it as `python -m tui_profiler.testing.known_server PORT LAW [--seed N] [--parallel]`, or start it in a
subprocess with `known_server(...)`, which answers its base URL once the server is up."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def service_law(law: str, seed: int = 0) -> Callable[[int], float]:
    """The service time in seconds of the k-th request under `law` (see the module docstring)."""
    kind, _, args = law.partition(":")
    values = [float(a) for a in args.split(":")] if args else []
    if kind == "fixed" and len(values) == 1:
        return lambda k: values[0]
    if kind == "rising" and len(values) == 2:
        return lambda k: values[0] + values[1] * k
    if kind == "lognormal" and len(values) == 2:
        import numpy as np

        rng = np.random.default_rng(seed)
        mu, sigma = math.log(values[0]), values[1]
        return lambda k: float(rng.lognormal(mu, sigma))
    raise ValueError(f"law: {law!r} — 'fixed:S', 'lognormal:MEDIAN:SIGMA' or 'rising:BASE:STEP'")


def serve(port: int, law: str, *, seed: int = 0, serial: bool = True) -> None:
    """Serve on 127.0.0.1:`port` until killed."""
    draw = service_law(law, seed)
    turn = threading.Condition()
    state = {"arrived": 0, "serving": 0, "served": 0, "end": 0.0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            with turn:
                served = state["served"]
            self._answer(json.dumps({"served": served}).encode() if self.path == "/stats" else b"{}", "")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with turn:
                k = int(state["arrived"])
                state["arrived"] += 1
                drawn = draw(k)
                if serial:  # FIFO: wait for its turn, then end on the schedule
                    turn.wait_for(lambda: state["serving"] == k)
            t0 = time.perf_counter()
            end = max(t0, state["end"]) + drawn if serial else t0 + drawn
            if end > t0:
                time.sleep(end - t0)
            served = time.perf_counter() - t0
            with turn:
                if serial:
                    state["end"] = end
                    state["serving"] += 1
                state["served"] += 1
                turn.notify_all()
            self._answer(b'{"ok": true}', f"decode;dur={drawn * 1000:.6f}, infer;dur={served * 1000:.6f}")

        def _answer(self, body: bytes, timing: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if timing:
                self.send_header("Server-Timing", timing)
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


@contextmanager
def known_server(
    law: str, *, seed: int = 0, serial: bool = True, cores: set[int] | None = None, timeout_s: float = 20.0
) -> Iterator[str]:
    """The server in a subprocess (pinned to `cores` when given), its base URL once it answers; killed on
    exit."""
    from tui_profiler.runtime.common import free_port

    service_law(law)  # a bad law fails here, in one line, not in the child
    port = free_port()
    argv = [sys.executable, "-m", "tui_profiler.testing.known_server", str(port), law, "--seed", str(seed)]
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    proc = subprocess.Popen([*argv, *([] if serial else ["--parallel"])], preexec_fn=pin)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(base + "/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield base
    finally:
        proc.kill()
        proc.wait(10)


def served(base: str) -> int:
    """How many requests the server at `base` has answered."""
    with urllib.request.urlopen(base + "/stats", timeout=5) as answer:
        return int(json.loads(answer.read())["served"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tui_profiler.testing.known_server")
    parser.add_argument("port", type=int)
    parser.add_argument("law", help="fixed:S | lognormal:MEDIAN:SIGMA | rising:BASE:STEP")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", action="store_true", help="serve requests side by side")
    args = parser.parse_args()
    serve(args.port, args.law, seed=args.seed, serial=not args.parallel)


if __name__ == "__main__":
    main()
