"""Measure the load generator's own cost against a trivial server (e.g. nginx on loopback).

`python -m tui_profiler.load.overhead URL [--concurrency 1,8,64] [--requests N] [--transport raw|aiohttp]
[--baseline-aiohttp]` prints one JSON line per run: requests/s, p50 and p99 latency. The BENCH command
compares these with wrk and hey on the same server; this module only runs our client (in this process, on
uvloop when installed) and, with --baseline-aiohttp, a plain aiohttp keep-alive loop for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from tui_profiler.config.model import Transport
from tui_profiler.load.client import run, run_load, uvloop_active
from tui_profiler.load.inputs import InputSpec
from tui_profiler.load.patterns import LoadPattern
from tui_profiler.load.template import build_payload, parse_template
from tui_profiler.stats import quantile_sorted


def _summary(
    name: str, concurrency: int, latencies: list[float], span_s: float, errors: int
) -> dict[str, Any]:
    lat = sorted(latencies)
    return {
        "client": name,
        "concurrency": concurrency,
        "n": len(lat),
        "errors": errors,
        "rps": len(lat) / span_s if span_s > 0 else None,
        "p50_us": quantile_sorted(lat, 0.5) * 1e6 if lat else None,
        "p99_us": quantile_sorted(lat, 0.99) * 1e6 if lat else None,
    }


async def measure_ours(
    url: str, concurrency: int, requests: int, transport: Transport, path: str
) -> dict[str, Any]:
    tpl = parse_template({"path": path, "server_timing": True}, "bench")
    payload = build_payload(InputSpec(kind="tensor", base_size=(16,), dtype="float32"), tpl)
    pattern = LoadPattern(
        concurrency=concurrency, requests=requests, warmup=min(1000, requests // 10), transport=transport
    )
    res = await run_load(url, tpl, payload, pattern)
    timed = [r for r in res if not r.warmup]
    ok = [r.latency_s for r in timed if r.ok and r.latency_s is not None]
    span = max(r.t_recv_s or 0 for r in timed) - min(r.t_send_s for r in timed)
    out = _summary(f"tui-profiler ({transport})", concurrency, ok, span, len(timed) - len(ok))
    out["uvloop"] = uvloop_active()
    return out


async def measure_plain_aiohttp(url: str, concurrency: int, requests: int, path: str) -> dict[str, Any]:
    """What a user would write: one ClientSession, session.post(...) in N tasks, keep-alive."""
    import aiohttp

    body = b"\0" * 64
    lat: list[float] = []
    left = [requests]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                t = time.perf_counter()
                async with session.post(url + path, data=body) as r:
                    await r.read()
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        span = time.perf_counter() - t0
    return _summary("plain aiohttp", concurrency, lat, span, 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tui_profiler.load.overhead")
    ap.add_argument("url")
    ap.add_argument("--path", default="/")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--transport", default="raw", choices=("raw", "aiohttp"))
    ap.add_argument("--baseline-aiohttp", action="store_true", help="also run a plain aiohttp loop")
    args = ap.parse_args(argv)
    for c in (int(x) for x in args.concurrency.split(",")):
        print(
            json.dumps(run(measure_ours(args.url, c, args.requests, args.transport, args.path))), flush=True
        )
        if args.baseline_aiohttp:
            # asyncio.run, as a user's script would: the plain baseline gets no uvloop
            print(
                json.dumps(asyncio.run(measure_plain_aiohttp(args.url, c, args.requests, args.path))),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
