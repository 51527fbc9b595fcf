"""The Python HTTP clients the client benchmark compares, each run as its own process (pinned to the client
core by the caller): `python -m tui_profiler.bench.workers KIND URL --concurrency N --duration S`.

- `ours`: the load generator's library path (`run_load`, lean HTTP/1.1 transport, uvloop), no CSV;
- `aiohttp`: plain aiohttp keep-alive (one default ClientSession, asyncio's loop), the usual async client;
- `reference`: the reference scripts' style, `requests.post(url, json=[...], headers={"Connection": "close"})`
  in a loop (one thread per concurrent client).

Each prints one JSON line: n, errors, rps, p50_us, p99_us, mean_us. Every time is `time.perf_counter()`;
a short warm-up (not counted) comes first, like wrk's and hey's connection set-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from tui_profiler.stats import percentile


def summary(latencies: list[float], errors: int, t_start: float, t_end: float) -> dict[str, Any]:
    n = len(latencies)
    lat = [v * 1e6 for v in latencies]
    elapsed = t_end - t_start
    return {
        "n": n,
        "errors": errors,
        "seconds": elapsed,
        "rps": n / elapsed if n and elapsed > 0 else None,
        "p50_us": percentile(lat, 50),
        "p99_us": percentile(lat, 99),
        "mean_us": sum(lat) / n if n else None,
    }


def run_ours_cgroup(url: str, concurrency: int, duration: float, warmup: int) -> dict[str, Any]:
    """`ours` with the per-request CPU reads on (`sample.request_cpu`, as `[load] per_request_cgroup`):
    the counters of this process's own cgroup, the same files and syscalls as a target's."""
    return run_ours(url, concurrency, duration, warmup, cgroup_reads=True)


def run_ours(
    url: str, concurrency: int, duration: float, warmup: int, cgroup_reads: bool = False
) -> dict[str, Any]:
    from tui_profiler.bench.client import bench_payload
    from tui_profiler.load.client import run, run_load, uvloop_active
    from tui_profiler.load.patterns import LoadPattern
    from tui_profiler.load.template import default_template

    payload = bench_payload()
    pattern = LoadPattern(
        concurrency=concurrency, requests=None, duration_s=duration, warmup=warmup, timeout_s=10.0
    )
    loop_kind: list[bool] = []

    meter = None
    if cgroup_reads:
        import os

        from tui_profiler.sample.cgroup import cgroup_of_pid
        from tui_profiler.sample.request_cpu import RequestCpuMeter

        meter = RequestCpuMeter.open(cgroup_of_pid(os.getpid()))
        if meter is None:
            raise SystemExit("this process's cgroup CPU counters cannot be read")

    async def go() -> Any:
        loop_kind.append(uvloop_active())
        return await run_load(url, default_template(), payload, pattern, cpu_meter=meter)

    results = run(go())
    if meter is not None:
        meter.close()
    timed = [r for r in results if not r.warmup]
    ok = [r for r in timed if r.ok and r.latency_s is not None]
    t0 = min((r.t_send_s for r in timed), default=0.0)
    t1 = max((r.t_recv_s for r in ok if r.t_recv_s is not None), default=0.0)
    out = summary([r.latency_s for r in ok], len(timed) - len(ok), t0, t1)
    out["loop"] = "uvloop" if loop_kind and loop_kind[0] else "asyncio"
    return out


def run_aiohttp(url: str, concurrency: int, duration: float, warmup: int) -> dict[str, Any]:
    import asyncio

    import aiohttp

    from tui_profiler.bench.client import bench_payload

    payload = bench_payload()
    headers = {"Content-Type": payload.content_type or "application/octet-stream", **payload.headers}
    target = url.rstrip("/") + payload.path
    body = payload.body

    async def go() -> dict[str, Any]:
        latencies: list[float] = []
        errors = 0
        async with aiohttp.ClientSession() as session:  # defaults: keep-alive pool, the usual set-up

            async def one() -> bool:
                async with session.post(target, data=body, headers=headers) as resp:
                    await resp.read()
                    return resp.status == 200

            # Warm the pool with every connection open, as wrk and hey do before timing.
            for _ in range(max(1, warmup // concurrency)):
                await asyncio.gather(*(one() for _ in range(concurrency)))
            t_start = time.perf_counter()
            deadline = t_start + duration

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    try:
                        ok = await one()
                    except aiohttp.ClientError:
                        ok = False
                    if ok:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            t_end = time.perf_counter()
        return summary(latencies, errors, t_start, t_end)

    out = asyncio.run(go())
    out["loop"] = "asyncio"
    return out


def run_reference(url: str, concurrency: int, duration: float, warmup: int) -> dict[str, Any]:
    import requests

    from tui_profiler.bench.client import bench_values

    values = bench_values()
    target = url.rstrip("/") + "/predict"

    def one() -> bool:
        r = requests.post(target, json={"tensor": values}, headers={"Connection": "close"}, timeout=10)
        return r.status_code == 200

    for _ in range(max(1, warmup)):
        one()
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    t_start = time.perf_counter()
    deadline = t_start + duration

    def worker() -> None:
        mine: list[float] = []
        bad = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                ok = one()
            except requests.RequestException:
                ok = False
            if ok:
                mine.append(time.perf_counter() - t0)
            else:
                bad += 1
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t_end = time.perf_counter()
    out = summary(latencies, errors[0], t_start, t_end)
    out["loop"] = f"{concurrency} thread(s)"
    return out


KINDS = {"ours": run_ours, "ours-cgroup": run_ours_cgroup, "aiohttp": run_aiohttp, "reference": run_reference}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tui_profiler.bench.workers")
    p.add_argument("kind", choices=sorted(KINDS))
    p.add_argument("url")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--warmup", type=int, default=50)
    args = p.parse_args(argv)
    out = KINDS[args.kind](args.url, args.concurrency, args.duration, args.warmup)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
