"""Per-request CPU and throttling on real counters (`sample.request_cpu` through `run_load`): a stdlib
server in a container whose every request burns more CPU than one CFS period's quota under 0.5 CPU, so
the kernel throttles it; the same server uncapped is never throttled. Asserted on the kernel's own
counters (cpuacct.usage, cpu.stat), never on a latency.

`alone` (docs/development.md): they assert throttling and compare CPU time, so nothing else may run
beside them."""

from __future__ import annotations

import contextlib
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tui_profiler.bench.client import bench_payload
from tui_profiler.load.client import run, run_load
from tui_profiler.load.patterns import LoadPattern
from tui_profiler.load.template import default_template
from tui_profiler.runtime.common import free_port
from tui_profiler.sample.cgroup import CgroupReader, find_container_cgroup
from tui_profiler.sample.request_cpu import RequestCpuMeter

IMAGE = "tui-profiler-base:bookworm"  # the local Python base image (scripts/base-image.sh)
WORK_S = 0.25  # CPU seconds each request burns: five times a 0.5-CPU quota's 50 ms per 100 ms period

# Each POST burns WORK_S of CPU (thread CPU time), then answers; GET answers at once (readiness).
SERVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
work = float(sys.argv[1])
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        t = time.thread_time()
        while time.thread_time() - t < work:
            pass
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a):
        pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
"""


@contextlib.contextmanager
def busy_server(docker_client: Any, cpus: float | None) -> Iterator[tuple[str, Any]]:
    port = free_port()
    kwargs: dict[str, Any] = {"nano_cpus": int(cpus * 1e9)} if cpus else {}
    container = docker_client.containers.run(
        IMAGE, ["python3", "-c", SERVER, str(WORK_S)], detach=True, remove=False,
        ports={"8000/tcp": ("127.0.0.1", port)}, labels={"tui-profiler.session": "test-tail"}, **kwargs,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        container.reload()
        yield url, find_container_cgroup(container.id, container.attrs["State"]["Pid"])
    finally:
        container.remove(force=True)


def measure(url: str, paths: Any, concurrency: int, requests: int) -> tuple[list[Any], Any, Any, Any]:
    """The load with the per-request reads on, and the cgroup's counters read on their own around it."""
    meter = RequestCpuMeter.open(paths)
    assert meter is not None, paths
    pattern = LoadPattern(concurrency=concurrency, requests=requests, warmup=2, timeout_s=60.0)
    payload = bench_payload()  # 16 float32 values, raw: the server reads and ignores them
    with CgroupReader(paths) as reader:
        before = reader.read()
        results = run(run_load(url, default_template(), payload, pattern, cpu_meter=meter))
        after = reader.read()
    span = meter.attribution.span()
    meter.close()
    return results, span, before, after


@pytest.mark.docker
@pytest.mark.alone
@pytest.mark.parametrize("concurrency", [1, 3])
def test_throttled_requests_carry_their_throttling_and_the_sums_are_the_cgroups(
    docker_client: Any, concurrency: int
) -> None:
    """0.5 CPU, every request 250 ms of CPU: each needs five periods' 50 ms quota, so the kernel throttles
    while it runs — when the container gets the CPU at all: on a busy box other work may hold it below its
    quota, which is why these run `alone`. Asserted: the cgroup was throttled during the load and at least
    half of the requests carry throttled_ms > 0 and throttled_periods > 0; the per-request sums of CPU,
    throttled time and periods equal the cgroup's delta from the first send to the last answer (float
    rounding), and its delta around the whole load within 5% (what the server did outside the requests).

    Measured when written (2 shared cores, load 7, cgroup v1), 22 requests (2 warm-up) of 250 ms each:
    c=1 20 of 22 throttled (70 periods, 2530 ms), c=3 19 of 22 (22 periods, 539 ms); sum of cpu_ms
    5514.8 ms, equal to the span's delta and 0.5 ms (0.01%) under the delta around the load; c=3 5521.3
    against 5521.3. (At 120 ms a request the busy box throttled only 13 of 22.)"""
    with busy_server(docker_client, 0.5) as (url, paths):
        results, span, before, after = measure(url, paths, concurrency, 20)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert after.nr_throttled > before.nr_throttled  # the kernel throttled the container during the load
    throttled = [r for r in results if (r.throttled_ms or 0) > 0 and (r.throttled_periods or 0) > 0]
    assert len(throttled) >= len(results) // 2, [(r.cpu_ms, r.throttled_ms) for r in results]
    total_cpu_ns = sum(r.cpu_ms for r in results) * 1e6
    total_thr_ns = sum(r.throttled_ms for r in results) * 1e6
    total_periods = sum(r.throttled_periods for r in results)
    first, last = span
    assert total_cpu_ns == pytest.approx(last[0] - first[0], rel=1e-9)
    assert total_periods == pytest.approx(last[1] - first[1], rel=1e-9)
    assert total_thr_ns == pytest.approx(last[2] - first[2], rel=1e-9)
    around = after.cpu_usage_ns - before.cpu_usage_ns
    assert total_cpu_ns <= around * (1 + 1e-9)  # a sum of milliseconds in floats: within rounding
    # the work itself: every request burned WORK_S of thread CPU time, so the sum is at least that
    assert total_cpu_ns >= len(results) * WORK_S * 1e9 * 0.99
    assert total_cpu_ns >= around * 0.95, (total_cpu_ns, around)


@pytest.mark.docker
@pytest.mark.alone
def test_an_uncapped_server_is_never_throttled(docker_client: Any) -> None:
    """The same server without a CPU cap: no quota, so no period is throttled; every request still
    carries its CPU time (at least the 250 ms it burned, shared equally at concurrency 1: its own)."""
    with busy_server(docker_client, None) as (url, paths):
        results, _, _, _ = measure(url, paths, 1, 10)
    assert all(r.ok for r in results)
    assert all(r.throttled_periods == 0 and r.throttled_ms == 0 for r in results)
    assert all(r.cpu_ms is not None and r.cpu_ms >= WORK_S * 1000 * 0.99 for r in results)
