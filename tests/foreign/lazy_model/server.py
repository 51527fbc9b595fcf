"""A serving stack that loads its model lazily (stdlib only), for the readiness tests.

Like some real stacks, its HTTP front end answers its health endpoint as soon as it listens, while a
worker thread is still loading the "model":
- GET  /health   200 at once: {"status": "ok", "model_state": "LOADING" | "READY", "load_s", "refused",
                 "waits_s"}; `load_s` is the load's own duration (perf_counter), measured by this server
- POST /predict  while loading: 503 (WHILE_LOADING=503) or held until the model is loaded
                 (WHILE_LOADING=block); then 200 {"predictions": [...]} with `Server-Timing: queue;dur=`
                 the time this request waited for the model (0 once it is loaded)
The "model load" is real CPU work, not a sleep: LOAD_ROUNDS chained SHA-256 rounds, so it takes as long as
the CPU cap makes it. `refused` counts the 503s, `waits_s` the waits of held requests, in arrival order.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOAD_ROUNDS = int(os.environ.get("LOAD_ROUNDS", "1500000"))
WHILE_LOADING = os.environ.get("WHILE_LOADING", "503")
LOADED = threading.Event()
LOCK = threading.Lock()
STATE: dict = {"load_s": None, "weights": b"", "refused": 0, "waits_s": []}


def load_model() -> None:
    t0 = time.perf_counter()
    digest = b"lazy model"
    for _ in range(LOAD_ROUNDS):
        digest = hashlib.sha256(digest).digest()
    STATE["weights"] = digest
    STATE["load_s"] = time.perf_counter() - t0
    LOADED.set()
    print(f"model loaded in {STATE['load_s']:.3f} s", flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:  # quiet
        return

    def _send(self, status: int, doc: dict, timing: str = "") -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if timing:
            self.send_header("Server-Timing", timing)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != "/health":
            self._send(404, {"error": f"no route GET {self.path}"})
            return
        with LOCK:
            report = {
                "status": "ok",
                "model_state": "READY" if LOADED.is_set() else "LOADING",
                "load_s": STATE["load_s"],
                "refused": STATE["refused"],
                "waits_s": list(STATE["waits_s"]),
            }
        self._send(200, report)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/predict":
            self._send(404, {"error": f"no route POST {self.path}"})
            return
        waited = 0.0
        if not LOADED.is_set():
            if WHILE_LOADING != "block":
                with LOCK:
                    STATE["refused"] += 1
                self._send(503, {"error": "the model is still loading"})
                return
            t0 = time.perf_counter()
            LOADED.wait()
            waited = time.perf_counter() - t0
            with LOCK:
                STATE["waits_s"].append(waited)
        t0 = time.perf_counter()
        score = hashlib.sha256(STATE["weights"] + raw).digest()
        infer_ms = (time.perf_counter() - t0) * 1000.0
        self._send(
            200,
            {"predictions": [b / 255.0 for b in score[:4]], "bytes": len(raw)},
            f"queue;dur={waited * 1000.0:.3f}, infer;dur={infer_ms:.3f}",
        )


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    host = sys.argv[2] if len(sys.argv) > 2 else "0.0.0.0"
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=load_model, name="loader", daemon=True).start()  # after the bind: health is up
    print(f"listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
