"""Client benchmark: our load generator against wrk, hey, plain aiohttp and the reference scripts' style.

Every client sends the same small POST to the same trivial server on loopback: nginx (Debian's
nginx-light) with our own config on a free 127.0.0.1 port, one worker process, answering a fixed 11-byte
JSON body. nginx is pinned to the first usable core and every client to the second (`taskset`), so the
client's cost shows in its own numbers rather than in the server's.

Clients (each its own process):
- `wrk` (one thread, N connections, `--latency`) and `hey` (`-z` duration), the tools users know;
- `ours (library)`: `run_load` with the lean transport on uvloop, without the session files
  (`python -m tui_profiler.bench.workers ours`);
- `ours (cgroup reads)`: the same with the per-request CPU reads on (`[load] per_request_cgroup`: the
  cgroup's cpuacct.usage / cpu.stat read with pread at each request's start and end, attributed);
- `ours (run --url)`: `tui-profiler run --url` end to end — the path users run, writing requests.csv
  and the progress display; numbers read back from the session's cells.csv;
- `plain aiohttp`: a default ClientSession, keep-alive, asyncio's loop — the baseline of the target;
- `reference style`: `requests.post(json={"tensor": [...]}, headers={"Connection": "close"})`.

Rounds interleave the clients (the order rotates every round), so a busy machine slows all of them alike;
each figure is the median over rounds, each ratio the median of the per-round ratios.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tui_profiler.bench.core import BenchReport, Measure, judge, measured, median
from tui_profiler.cgroups import affinity_cores
from tui_profiler.errors import ExitCode, ProfilerError
from tui_profiler.runtime.common import free_port

SETUP_HINT = (
    "install them with `apt-get install -y wrk hey nginx-light` (or `tui-profiler bench --install-tools`)"
)
CLIENTS = (
    "wrk",
    "hey",
    "ours (library)",
    "ours (cgroup reads)",
    "ours (run --url)",
    "plain aiohttp",
    "reference style",
)
OURS = ("ours (library)", "ours (cgroup reads)", "ours (run --url)")
BASE_RPS = "plain aiohttp"


class BenchUnavailable(ProfilerError, RuntimeError):
    """A benchmark cannot run on this machine; the message is one line saying what to do."""

    exit_code = ExitCode.CELL_FAILED  # the other benchmarks still run


def bench_payload() -> Any:
    """The request every client sends: 16 float32 values, raw, through our default template."""
    from tui_profiler.load.inputs import InputSpec
    from tui_profiler.load.template import build_payload

    return build_payload(InputSpec(kind="tensor", base_size=(16,), encoding="raw"))


def bench_values() -> list[float]:
    """The same 16 values as a JSON-able list (what the reference style posts)."""
    import numpy as np

    values: list[float] = np.frombuffer(bench_payload().body, dtype=np.float32).tolist()
    return values


def check_tools() -> None:
    missing = [t for t in ("wrk", "hey", "nginx") if shutil.which(t) is None]
    if missing:
        raise BenchUnavailable(f"{', '.join(missing)} not found: {SETUP_HINT}")


def install_tools() -> int:
    """apt-get install the client benchmark's tools (Debian/Ubuntu, as root)."""
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "wrk", "hey", "nginx-light"]
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def pick_cores() -> tuple[int | None, int | None, str]:
    """(server core, client core, how): two different cores when there are two and taskset exists."""
    cores = affinity_cores()
    if len(cores) >= 2 and shutil.which("taskset"):
        return (
            cores[0],
            cores[1],
            f"nginx pinned to core {cores[0]}, every client to core {cores[1]} (taskset)",
        )
    return None, None, "not pinned (one usable core or no taskset): server and clients share the CPU"


# Raised priority (root only) for nginx and the clients: on a shared machine the other processes' CPU
# time would otherwise decide the latencies. Only the benchmark's own short-lived processes get it.
NICE = -10


def nice_prefix() -> list[str]:
    return ["nice", "-n", str(NICE)] if os.geteuid() == 0 and shutil.which("nice") else []


def pinned(core: int | None, cmd: list[str]) -> list[str]:
    return [*nice_prefix(), *(["taskset", "-c", str(core)] if core is not None else []), *cmd]


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{{"ok":true}}'; }}
  }}
}}
"""


@contextlib.contextmanager
def nginx_server(core: int | None) -> Iterator[str]:
    """A one-process nginx on a free loopback port answering every request with a fixed JSON body."""
    workdir = Path(tempfile.mkdtemp(prefix="tui-profiler-bench-nginx-"))
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port), encoding="utf-8")
    log = (workdir / "stderr.log").open("w")
    proc = subprocess.Popen(
        pinned(core, ["nginx", "-c", str(conf), "-p", str(workdir)]),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.perf_counter() + 10
        while True:
            if proc.poll() is not None:
                raise BenchUnavailable(
                    f"nginx exited at start: {(workdir / 'stderr.log').read_text()[-300:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.perf_counter() > deadline:
                raise BenchUnavailable("nginx did not listen within 10 s")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


# -------------------------------------------------------------------------------------------- the clients

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _wrk_time_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"wrk time {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    n = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (rps and p50 and p99 and n):
        raise ValueError(f"unexpected wrk output: {out[-300:]!r}")
    errors = int(bad.group(1)) if bad else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return {
        "rps": float(rps.group(1)),
        "p50_us": _wrk_time_us(p50.group(1)),
        "p99_us": _wrk_time_us(p99.group(1)),
        "n": int(n.group(1)),
        "errors": errors,
    }


def parse_hey(out: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50% in ([\d.]+) secs", out)
    p99 = re.search(r"99% in ([\d.]+) secs", out)
    codes = {int(c): int(k) for c, k in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    # "Error distribution:" lines look like `  [12]\tPost "http://...": dial tcp ...`
    errs = sum(int(k) for k in re.findall(r"^\s+\[(\d+)\]\s+[A-Za-z]+ \"", out, re.M))
    if not (rps and p50 and p99):
        raise ValueError(f"unexpected hey output: {out[-300:]!r}")
    return {
        "rps": float(rps.group(1)),
        "p50_us": float(p50.group(1)) * 1e6,
        "p99_us": float(p99.group(1)) * 1e6,
        "n": sum(codes.values()),
        "errors": sum(k for c, k in codes.items() if c != 200) + errs,
    }


class ClientRunner:
    """Runs one client at one concurrency for `duration` seconds and returns its figures."""

    def __init__(self, url: str, core: int | None, duration: float, workdir: Path) -> None:
        self.url = url
        self.core = core
        self.duration = duration
        self.workdir = workdir
        payload = bench_payload()
        self.payload = payload
        self.body_file = workdir / "body.bin"
        self.body_file.write_bytes(payload.body)
        self.lua = workdir / "post.lua"
        lines = [
            f'wrk.method = "{payload.method}"',
            f'wrk.headers["Content-Type"] = "{payload.content_type}"',
            *(f'wrk.headers["{k}"] = "{v}"' for k, v in payload.headers.items()),
            f'local f = io.open("{self.body_file}", "rb"); wrk.body = f:read("*a"); f:close()',
        ]
        self.lua.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _run(self, cmd: list[str], timeout: float) -> str:
        out = subprocess.run(pinned(self.core, cmd), capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(
                f"{cmd[0]} exited {out.returncode}: {(out.stderr or out.stdout).strip()[-300:]}"
            )
        return out.stdout

    def run(self, client: str, c: int) -> dict[str, Any]:
        d = self.duration
        target = self.url + self.payload.path
        limit = d * 3 + 60
        if client == "wrk":
            secs = max(1, round(d))
            return parse_wrk(
                self._run(
                    ["wrk", "-t1", f"-c{c}", f"-d{secs}s", "--latency", "-s", str(self.lua), target], limit
                )
            )
        if client == "hey":
            headers = [a for k, v in self.payload.headers.items() for a in ("-H", f"{k}: {v}")]
            return parse_hey(
                self._run(
                    [
                        "hey",
                        "-z",
                        f"{d:g}s",
                        "-c",
                        str(c),
                        "-m",
                        self.payload.method,
                        "-T",
                        str(self.payload.content_type),
                        *headers,
                        "-D",
                        str(self.body_file),
                        target,
                    ],
                    limit,
                )
            )
        if client == "ours (run --url)":
            return self._run_url(c, limit)
        kind = {
            "ours (library)": "ours",
            "ours (cgroup reads)": "ours-cgroup",
            "plain aiohttp": "aiohttp",
            "reference style": "reference",
        }[client]
        out = self._run(
            [
                sys.executable,
                "-m",
                "tui_profiler.bench.workers",
                kind,
                self.url,
                "--concurrency",
                str(c),
                "--duration",
                f"{d:g}",
            ],
            limit,
        )
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    def _run_url(self, c: int, limit: float) -> dict[str, Any]:
        from tui_profiler.session.reader import read_rows

        out_dir = Path(tempfile.mkdtemp(prefix="run-url-", dir=self.workdir))
        cmd = [
            sys.executable,
            "-m",
            "tui_profiler.cli",
            "run",
            "--url",
            self.url,
            "--headless",
            "--output",
            str(out_dir),
            "--concurrency",
            str(c),
            "--set",
            "input.kind=tensor",
            "--set",
            "input.base_size=16",
            "--set",
            "input.encoding=raw",
            "--set",
            f"load.duration_s={self.duration:g}",
            "--set",
            "load.warmup=50",
        ]
        self._run(cmd, limit)
        sessions = sorted(p for p in out_dir.iterdir() if (p / "cells.csv").is_file())
        if not sessions:
            raise RuntimeError("tui-profiler run --url wrote no session")
        _, rows = read_rows(sessions[-1] / "cells.csv")
        row = rows[0]
        shutil.rmtree(out_dir, ignore_errors=True)

        def f(key: str, scale: float = 1.0) -> float | None:
            return float(row[key]) * scale if row.get(key) not in (None, "") else None

        return {
            "rps": f("throughput_rps"),
            "p50_us": f("p50_s", 1e6),
            "p99_us": f("p99_s", 1e6),
            "n": int(row.get("n") or 0),
            "errors": int(row.get("errors") or 0),
            "loop": _run_loop(),
        }


def _run_loop() -> str:
    """The event loop `tui-profiler run` uses: the one `load.client.run` runs on."""
    from tui_profiler.load.client import run_loop_name

    return f"{run_loop_name()} (run)"


# -------------------------------------------------------------------------------------------- the bench


def run_client_bench(
    report: BenchReport,
    *,
    quick: bool,
    say: Callable[[str], None],
    clients: tuple[str, ...] = CLIENTS,
    concurrencies: tuple[int, ...] = (1, 8, 64),
    rounds: int | None = None,
    duration: float | None = None,
) -> None:
    """Measure `clients` (a subset of CLIENTS, wrk and plain aiohttp always included: they are the
    baselines) at each concurrency; add the rows to `report`."""
    check_tools()
    server_core, client_core, how = pick_cores()
    rounds = rounds or (1 if quick else 3)
    duration = duration or (1.0 if quick else 3.0)
    clients = tuple(c for c in CLIENTS if c in clients or c in ("wrk", BASE_RPS))
    # results[client][c] = list over rounds of the client's figures (None when a run failed)
    results: dict[str, dict[int, list[dict[str, Any] | None]]] = {
        k: {c: [] for c in concurrencies} for k in clients
    }
    failures: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="tui-profiler-bench-client-"))
    try:
        with nginx_server(server_core) as url:
            runner = ClientRunner(url, client_core, duration, workdir)
            total = rounds * len(concurrencies) * len(clients)
            k = 0
            for r in range(rounds):
                order = clients[r % len(clients) :] + clients[: r % len(clients)]
                for c in concurrencies:
                    for client in order:
                        k += 1
                        say(f"client {k}/{total}: round {r + 1}, {client}, c={c}, {duration:g} s")
                        try:
                            res = runner.run(client, c)
                        except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as exc:
                            failures.append(f"{client} c={c}: {str(exc).splitlines()[0][:160]}")
                            res = None
                        results[client][c].append(res)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def vals(client: str, c: int, key: str) -> list[float | None]:
        return [None if x is None else x.get(key) for x in results[client][c]]

    def per_round(
        client: str, base: str, c: int, key: str, fn: Callable[[float, float], float]
    ) -> list[float | None]:
        out: list[float | None] = []
        for a, b in zip(vals(client, c, key), vals(base, c, key), strict=True):
            out.append(None if a is None or b is None else fn(a, b))
        return out

    add = report.measures.append
    for c in concurrencies:
        for client in clients:
            rps = vals(client, c, "rps")
            rel = per_round(client, BASE_RPS, c, "rps", lambda a, b: a / b if b else float("nan"))
            m = measured(
                "client",
                f"requests/s c={c}",
                client,
                rps,
                "req/s",
                ratio=median(rel),
                baseline="plain aiohttp (same round)",
            )
            if client in OURS:
                m.target = "≥ 2× plain aiohttp"
                m.met = judge(m.ratio, at_least=2.0)
            errs = sum(x.get("errors") or 0 for x in results[client][c] if x)
            if errs:
                m.note = f"{errs} errors"
            add(m)
    if 1 not in concurrencies:
        clients_c1: tuple[str, ...] = ()
    else:
        clients_c1 = clients
    for client in clients_c1:
        for key, label in (("p50_us", "p50 c=1"), ("p99_us", "p99 c=1")):
            rel = per_round(client, "wrk", 1, key, lambda a, b: a / b if b else float("nan"))
            add(
                measured(
                    "client",
                    label,
                    client,
                    vals(client, 1, key),
                    "µs",
                    ratio=median(rel),
                    baseline="wrk (same round)",
                    note="hey prints times to 0.1 ms" if client == "hey" else "",
                )
            )
    for client in clients_c1:
        if client == "wrk":
            continue
        added = per_round(client, "wrk", 1, "p50_us", lambda a, b: a - b)
        m = measured(
            "client",
            "p50 added over wrk c=1",
            client,
            added,
            "µs",
            baseline="wrk p50 (same round)",
            note="hey's 0.1 ms resolution" if client == "hey" else "",
        )
        # The mean time per request (1/rps at c=1) is exact for every client, hey included.
        cyc = per_round(
            client, "wrk", 1, "rps", lambda a, b: (1 / a - 1 / b) * 1e6 if a and b else float("nan")
        )
        m2 = measured(
            "client",
            "time/request added over wrk c=1 (1/rps)",
            client,
            cyc,
            "µs",
            baseline="wrk (same round)",
        )
        if client in OURS:
            m.target = "≤ +100 µs"
            m.met = judge(m.value, at_most=100.0)
        # 1/rps also holds the client's work between requests (outside the latency it reports)
        m2.note = "includes the client's bookkeeping between requests"
        add(m)
        add(m2)

    loops = {
        k: next((x.get("loop") for cc in concurrencies for x in results[k][cc] if x and x.get("loop")), None)
        for k in clients
    }
    prio = f"nginx and clients at nice {NICE}" if nice_prefix() else "normal priority (not root)"
    report.note(
        "client",
        f"{rounds} round(s) of {duration:g} s per client and concurrency, clients interleaved "
        f"(order rotated each round); {how}; {prio}.",
    )
    report.note(
        "client",
        f"every client POSTs the same {len(bench_payload().body)}-byte raw float32 body with "
        "our template's headers to nginx (1 worker, fixed 11-byte JSON answer) on loopback; "
        "the reference style posts the same 16 numbers as JSON with `Connection: close`.",
    )
    report.note(
        "client",
        "event loops: "
        + ", ".join(f"{k}: {v}" for k, v in loops.items() if v)
        + ". `ours (run --url)` is the whole CLI path (requests.csv row and progress event per "
        "request) read back from its cells.csv; `ours (library)` is `run_load` alone.",
    )
    report.note(
        "client",
        "Reference figures (same kind of machine, idle): wrk c=1 p50 39 µs at 21.8k req/s; "
        "hey +61 µs; plain aiohttp +291 µs at 2.6k req/s; reference +1,247 µs at 683 req/s.",
    )
    if failures:
        report.note("client", "failed runs (counted as missing): " + "; ".join(failures[:6]))


__all__ = ["BenchUnavailable", "Measure", "bench_payload", "install_tools", "run_client_bench"]
