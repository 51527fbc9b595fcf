"""Measure the harness overhead of each request encoding: client encode + server decode + server encode.

    python -m servers.overhead --model fcn_resnet50 --shape 1,3,667,1000

starts the model server on a free local port (or uses --url), sends the same float32 tensor as raw bytes
and as the reference scripts' JSON list, and prints, per encoding, the body size, the client's encode time
(numpy → bytes; numpy → list → json.dumps), the server's decode / encode times (its Server-Timing header),
the inference time, and the rest of the wall time (transfer, HTTP, queueing). Medians over --repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[dict[str, float], float]:
    req = urllib.request.Request(f"{url}/predict", data=body, headers=headers, method="POST")
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        r.read()
        timing = r.headers.get("Server-Timing", "")
    wall = (time.perf_counter() - t0) * 1000
    parts = {
        p.split(";dur=")[0].strip(): float(p.split(";dur=")[1]) for p in timing.split(",") if ";dur=" in p
    }
    return parts, wall


def measure(
    url: str, shape: tuple[int, ...], repeats: int, json_repeats: int
) -> list[dict[str, float | str]]:
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    rows: list[dict[str, float | str]] = []
    for name, n in (("raw float32 bytes", repeats), ("JSON list", json_repeats)):
        samples: list[dict[str, float]] = []
        for _ in range(n):
            t0 = time.perf_counter()
            if name.startswith("raw"):
                body = x.tobytes()
                headers = {
                    "Content-Type": "application/octet-stream",
                    "X-Tensor-Shape": ",".join(map(str, shape)),
                    "X-Tensor-Dtype": "float32",
                }
            else:
                body = json.dumps({"tensor": x.tolist()}).encode()
                headers = {"Content-Type": "application/json", "Connection": "close"}
            client_encode = (time.perf_counter() - t0) * 1000
            parts, wall = _post(url, body, headers)
            server = sum(parts.values())
            samples.append(
                {
                    "bytes": len(body),
                    "client_encode_ms": client_encode,
                    "decode_ms": parts["decode"],
                    "encode_ms": parts["encode"],
                    "infer_ms": parts["infer"],
                    "wall_ms": wall,
                    "transfer_http_ms": wall - server,
                    "overhead_ms": client_encode + parts["decode"] + parts["encode"],
                }
            )
        row: dict[str, float | str] = {"encoding": name}
        for k in samples[0]:
            row[k] = statistics.median(s[k] for s in samples)
        rows.append(row)
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m servers.overhead", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fcn_resnet50")
    p.add_argument("--shape", default="1,3,667,1000")
    p.add_argument("--url", help="an already running server (default: start one)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json-repeats", type=int, default=2)
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    proc = None
    url = args.url
    if url is None:
        port = _free_port()
        repo = Path(__file__).resolve().parent.parent
        proc = subprocess.Popen(
            [sys.executable, "-m", "servers.model_server", "--model", args.model, "--port", str(port)],
            cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)},
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(3000):
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
            runtime = json.load(r)["runtime"]
        print(
            f"# {args.model} {args.shape} on {runtime['device']}, torch {runtime['torch']}, "
            f"{runtime['threads']} threads; medians of {args.repeats} (raw) / {args.json_repeats} (JSON)"
        )
        rows = measure(url, shape, args.repeats, args.json_repeats)
        cols = [
            "encoding",
            "bytes",
            "client_encode_ms",
            "decode_ms",
            "encode_ms",
            "overhead_ms",
            "infer_ms",
            "transfer_http_ms",
            "wall_ms",
        ]
        print(" | ".join(cols))
        for row in rows:
            print(" | ".join(str(row[c]) if c == "encoding" else f"{row[c]:.1f}" for c in cols))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
