"""Fallback sampler source: the Docker stats API, at its own rate (about 1 Hz), read in a thread.

Used only when the container's cgroup files cannot be read from here (e.g. a remote engine). CPU is
derived the way `docker stats` does it: container usage delta / host usage delta x online CPUs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class StatsReading:
    t: float  # perf_counter when it arrived
    cpu_cores: float | None
    cpu_usage_ns: int | None
    mem_bytes: int | None
    mem_peak_bytes: int | None  # v1 engines report memory_stats.max_usage; v2 engines do not
    mem_limit_bytes: int | None
    nr_throttled: int | None
    throttled_ns: int | None


def parse_stats(stat: dict[str, Any], t: float) -> StatsReading:
    cpu = stat.get("cpu_stats") or {}
    pre = stat.get("precpu_stats") or {}
    usage = (cpu.get("cpu_usage") or {}).get("total_usage")
    pre_usage = (pre.get("cpu_usage") or {}).get("total_usage")
    system, pre_system = cpu.get("system_cpu_usage"), pre.get("system_cpu_usage")
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or None
    cores = None
    if (
        usage is not None
        and pre_usage is not None
        and system is not None
        and pre_system is not None
        and online is not None
        and system > pre_system
    ):
        cores = (usage - pre_usage) / (system - pre_system) * online
    mem = stat.get("memory_stats") or {}
    throttling = cpu.get("throttling_data") or {}
    return StatsReading(
        t=t,
        cpu_cores=cores,
        cpu_usage_ns=usage,
        mem_bytes=mem.get("usage"),
        mem_peak_bytes=mem.get("max_usage"),
        mem_limit_bytes=mem.get("limit"),
        nr_throttled=throttling.get("throttled_periods") if throttling else None,
        throttled_ns=throttling.get("throttled_time") if throttling else None,
    )


class DockerStatsStream:
    """Streams a container's stats in a daemon thread, calling `on_reading` for each."""

    def __init__(self, client: Any, container_id: str, on_reading: Callable[[StatsReading], None]) -> None:
        self._client = client
        self._container_id = container_id
        self._on_reading = on_reading
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="docker-stats", daemon=True)
        self.error: str | None = None
        self.cpu_s = 0.0  # this thread's own CPU time

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            stream = self._client.api.stats(self._container_id, stream=True, decode=True)
            for stat in stream:
                c0 = time.thread_time()
                if self._stop.is_set():
                    break
                self._on_reading(parse_stats(stat, time.perf_counter()))
                self.cpu_s += time.thread_time() - c0
        except Exception as exc:  # the container went away, or the engine did
            self.error = str(exc)

    def stop(self, timeout: float = 2.5) -> None:
        self._stop.set()
        self._thread.join(timeout)
