"""Sampler benchmark: the rate the resource sampler achieves and the CPU it costs, on a running container.

A small container (the base image running Python's http.server, CPU-capped at 0.5) is started through
our Docker runtime; the `ResourceSampler` then runs for a while at its default 20 Hz with a consumer
attached, as in a sweep. Its cost is measured twice: the sampler thread's own CPU time (what it reports)
and this whole process's CPU time over the window (everything it caused: the thread, the deliveries to
the event loop, the consumer), with the loop otherwise idle. The Docker stats fallback (the sampler on a
target whose cgroup files it may not read) is measured the same way.
"""

from __future__ import annotations

import asyncio
import resource
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tui_profiler.bench.core import BenchReport, judge, measured, median
from tui_profiler.sample import ResourceSampler, SampleTarget

BASE_IMAGE = "tui-profiler-base:bookworm"
IDLE_SERVER = "import http.server; http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=8000, bind='0.0.0.0')"


def _process_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _idle_cpu_pct(seconds: float) -> float:
    """This process's CPU over a window with no sampler (the floor the sampler's cost is measured above)."""
    cpu0, t0 = _process_cpu_s(), time.perf_counter()
    await asyncio.sleep(seconds)
    return 100.0 * (_process_cpu_s() - cpu0) / (time.perf_counter() - t0)


async def _sample(target: SampleTarget, seconds: float) -> dict[str, Any]:
    from tui_profiler.sample import ResourceSampler

    got: list[Any] = []
    sampler = ResourceSampler(target, on_sample=got.append)
    await sampler.start()
    # Steady state only: from after start() to before stop() (opening the sources is paid once per cell).
    await asyncio.sleep(0.2)
    n0, cpu0, t0 = len(got), _process_cpu_s(), time.perf_counter()
    await asyncio.sleep(seconds)
    n1, cpu1, t1 = len(got), _process_cpu_s(), time.perf_counter()
    summary = await sampler.stop()
    idle = await _idle_cpu_pct(min(seconds, 3.0))
    wall, n = t1 - t0, n1 - n0
    cpu = max(0.0, cpu1 - cpu0 - idle / 100.0 * wall)
    return {
        "source": summary.sample_source,
        "rate_hz": summary.sample_rate_hz,
        "n": summary.n_samples,
        "delivered": len(got),
        "thread_cpu_us_per_sample": summary.sampler_cpu_per_sample_us,
        "thread_core_pct": 100.0 * summary.sampler_cpu_s / summary.duration_s
        if summary.sampler_cpu_s is not None and summary.duration_s
        else None,
        "process_cpu_us_per_sample": cpu / n * 1e6 if n else None,
        "process_core_pct": 100.0 * cpu / wall,
        "idle_core_pct": idle,
    }


async def _bench(
    quick: bool, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    from tui_profiler.runtime.base import ReadinessProbe, TargetSpec
    from tui_profiler.runtime.docker import DockerRuntime

    rt = DockerRuntime()
    sid = f"bench-sampler-{secrets.token_hex(3)}"
    spec = TargetSpec(
        session_id=sid,
        image=BASE_IMAGE,
        model="",
        command=["python3", "-c", IDLE_SERVER],
        cpus=0.5,
        memory_gb=0.25,
        readiness=ReadinessProbe(path="/", timeout_s=60),
    )
    say("sampler: starting a container (base image, http.server, 0.5 CPU)")
    target = await rt.start(spec)
    rounds, secs = (1, 3.0) if quick else (3, 10.0)
    cg: list[dict[str, Any]] = []
    ds: list[dict[str, Any]] = []
    try:
        for r in range(rounds):
            say(f"sampler: cgroup sampler, round {r + 1}/{rounds}, {secs:g} s")
            cg.append(await _sample(target.sample_target(), secs))
        blind = replace(target.sample_target(), cgroup=None)
        for r in range(1 if quick else 2):
            say(f"sampler: docker-stats fallback, round {r + 1}, {secs:g} s")
            ds.append(await _sample(blind, secs))
    finally:
        await rt.stop(target)
        await rt.cleanup_session(sid)
    return cg, ds, f"{rounds} × {secs:g} s"


def run_sampler_bench(report: BenchReport, *, quick: bool, say: Callable[[str], None]) -> None:
    from tui_profiler.load.client import run

    cg, ds, how = run(_bench(quick, say))
    add = report.measures.append
    for label, runs in (("cgroup sampler", cg), ("docker-stats fallback", ds)):
        subject = f"{label} ({runs[0]['source']})" if runs else label
        rate = measured("sampler", "samples/s achieved", subject, [x["rate_hz"] for x in runs], "Hz")
        core = measured(
            "sampler",
            "CPU, whole process (above idle)",
            subject,
            [x["process_core_pct"] for x in runs],
            "% of a core",
        )
        per = measured(
            "sampler",
            "CPU per sample, whole process (above idle)",
            subject,
            [x["process_cpu_us_per_sample"] for x in runs],
            "µs",
        )
        thread_core = measured(
            "sampler",
            "CPU, sampler thread (self-reported)",
            subject,
            [x["thread_core_pct"] for x in runs],
            "% of a core",
        )
        thread = measured(
            "sampler",
            "CPU per sample, sampler thread (self-reported)",
            subject,
            [x["thread_cpu_us_per_sample"] for x in runs],
            "µs",
        )
        if label == "cgroup sampler":
            rate.target, rate.met = "≥ 20 Hz", judge(rate.value, at_least=20.0 * 0.95)
            core.target, core.met = "≤ 0.5% of a core", judge(core.value, at_most=0.5)
        else:
            rate.note = "the Docker stats API streams about once a second; no target"
        add(rate)
        add(core)
        add(per)
        add(thread_core)
        add(thread)
    report.note(
        "sampler",
        f"A {BASE_IMAGE} container running http.server under a 0.5-CPU cap; the sampler at "
        f"its default 0.05 s interval with a consumer attached, {how} (cgroup), then the Docker "
        "stats fallback (the same target with its cgroup paths withheld). Whole-process CPU is "
        "getrusage over the steady-state window (after start(), before stop()) with the event "
        "loop otherwise idle, minus the same process's CPU over an idle window with no sampler "
        f"(median {median(x['idle_core_pct'] for x in cg + ds) or 0:.3f}% of a core); targets are judged on "
        "the median round (rate ≥ 95% of 20 Hz allows for the start and stop ticks). The "
        "sampler thread's self-reported CPU is its whole life's thread time, its wake-ups included (on a VM a wake-up alone costs "
        "~60-150 µs); it reads CPU usage and memory every tick, every counter once a second, "
        f"and hands samples to the loop every {ResourceSampler.DELIVER_EVERY_S:g} s.",
    )
