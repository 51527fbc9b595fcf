"""Resource sampling of a running target: CPU, memory, throttling, OOM kills, GPU.

`ResourceSampler` reads the target's cgroup files (v1 or v2) in its own thread at `interval_s`
(default 20 Hz), keeping the files open and using `pread`; when they cannot be read it falls back to the
Docker stats API (about 1 Hz, its own rate) or, for a process without a cgroup, to /proc. GPU fields come
from NVML when there is one. Samples reach `on_sample` on the event loop's thread (call_soon_threadsafe),
so a consumer never sees a call from another thread. Whatever cannot be read is None, never 0.

Per-sample `cpu_cores` is averaged over the trailing `cpu_window_s` (0.2 s: two CFS periods, so a capped
target does not appear to exceed its quota within one period); `mean_cpu_cores` in the summary is total
CPU time / wall time. `throttled_*` and `oom_kills` count from the sampler's start.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tui_profiler.cgroups import CgroupPaths
from tui_profiler.events import ResourceSample
from tui_profiler.sample.cgroup import CgroupReader
from tui_profiler.sample.nvml import GpuReading, NvmlReader

if TYPE_CHECKING:
    from tui_profiler.sample.docker_stats import DockerStatsStream
    from tui_profiler.sample.procfs import ProcGroupReader

__all__ = ["ResourceSampler", "SampleTarget", "SamplerSummary"]


@dataclass(frozen=True, slots=True)
class SampleTarget:
    """What the sampler reads: the target's cgroup, its processes, and for a container the id and a Docker
    client factory for the stats fallback. The runtime that started the target fills it in
    (`RunningTarget.sample_target()`)."""

    cgroup: CgroupPaths | None = None  # read when its files are readable from here
    pids: tuple[int, ...] = ()  # host pids (NVML VRAM attribution; /proc fallback)
    pgid: int | None = None  # the process group the /proc fallback sums (default: the first pid)
    container_id: str | None = None  # a container: the Docker stats API is the fallback
    docker_client: Callable[[], Any] | None = None  # makes the Docker SDK client for that fallback
    cpu_cap: float | None = None  # the enforced CPU cap in cores (None: not capped or not enforced)


@dataclass(slots=True)
class SamplerSummary:
    peak_cpu_cores: float | None = None
    mean_cpu_cores: float | None = None
    peak_mem_bytes: int | None = None  # the cgroup's own peak counter where there is one
    peak_mem_source: str = ""  # "cgroup-peak-counter" | "max-sample" | "docker-stats-max-usage" | ...
    throttled_periods: int | None = None
    throttled_s: float | None = None
    oom_kills: int | None = None
    peak_vram_bytes: int | None = None
    gpu_util_max_pct: float | None = None
    gpu_note: str = ""  # why GPU fields are not available
    sample_source: str = ""
    sample_rate_hz: float | None = None
    n_samples: int = 0
    duration_s: float = 0.0
    sampler_cpu_s: float | None = None  # the sampler thread's own CPU time
    sampler_cpu_per_sample_us: float | None = None

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Point:
    t: float
    cpu_ns: int | None


@dataclass(slots=True)
class _Raw:
    """A full reading of one tick (cgroup or procfs counters, GPU)."""

    t: float
    final: bool
    gpu: GpuReading | None
    reading: Any = None


_NO_GPU = GpuReading()


class ResourceSampler:
    def __init__(
        self,
        target: SampleTarget,
        *,
        interval_s: float = 0.05,
        on_sample: Callable[[ResourceSample], None] | None = None,
        cell_index: int = 0,
        t0: float | None = None,
        cpu_window_s: float = 0.2,
        docker_client: Any | None = None,
    ) -> None:
        """`t0`: the perf_counter origin of the samples' `t_s` (default: when `start()` runs)."""
        self.target = target
        self.interval_s = interval_s
        self.on_sample = on_sample
        self.cell_index = cell_index
        self.t0 = t0
        self.cpu_window_s = max(cpu_window_s, interval_s)
        self._docker_client = docker_client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: CgroupReader | None = None
        self._proc: ProcGroupReader | None = None
        self._stats: DockerStatsStream | None = None
        self._nvml: NvmlReader | None = None
        self._lock = threading.Lock()
        self.source = "none"
        # accumulated state
        self._window: deque[_Point] = deque()
        self._first: _Point | None = None
        self._last: _Point | None = None
        self._base_throttled: tuple[int | None, int | None] = (None, None)
        self._last_throttled: tuple[int | None, int | None] = (None, None)
        self._base_oom: int | None = None
        self._last_oom: int | None = None
        self._peak_cpu: float | None = None
        self._max_mem: int | None = None
        self._peak_counter: int | None = None
        self._peak_vram: int | None = None
        self._max_util: float | None = None
        self._n = 0
        self._cpu_s = 0.0
        self._t_start = 0.0
        self._t_end = 0.0
        self._pids: list[int] = list(target.pids)
        self._pids_refreshed = 0.0
        self._hwm: int | None = None
        self._pending: list[ResourceSample] = []  # samples not yet handed to the event loop
        self._last_delivery = 0.0
        self._deliver_lock = threading.Lock()
        self._gpu_note = ""

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open_sources)
        self._t_start = time.perf_counter()
        if self.t0 is None:
            self.t0 = self._t_start
        if self.source == "docker-stats":
            from tui_profiler.sample.docker_stats import DockerStatsStream

            assert self.target.container_id is not None
            self._stats = DockerStatsStream(self._docker_client, self.target.container_id, self._on_stats)
            self._stats.start()
        if self.source != "docker-stats" or self._nvml is not None:
            self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
            self._thread.start()

    def _open_sources(self) -> None:
        t = self.target
        if t.cgroup is not None:
            reader = CgroupReader(t.cgroup)
            if reader.readable:
                self._reader = reader
                self.source = f"cgroup-v{t.cgroup.version}"
            else:
                reader.close()
        if (
            self._reader is None
            and t.container_id is not None
            and (self._docker_client is not None or t.docker_client is not None)
        ):
            if self._docker_client is None:
                assert t.docker_client is not None
                self._docker_client = t.docker_client()
            self.source = "docker-stats"
        elif self._reader is None and t.pids:
            from tui_profiler.sample.procfs import ProcGroupReader

            self._proc = ProcGroupReader(t.pgid or t.pids[0])
            self.source = "procfs"
        nv = NvmlReader()
        self._nvml = nv if nv.available else None
        self._gpu_note = "" if nv.available else nv.reason

    async def stop(self) -> SamplerSummary:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        if self._stats is not None:
            await asyncio.to_thread(self._stats.stop)
        await asyncio.sleep(0)  # batches already handed to the loop run first, in order
        with self._deliver_lock:
            rest, self._pending = self._pending, []
        if rest:
            self._call_consumer(rest)
        summary = self._summary()
        if self._reader is not None:
            self._reader.close()
        return summary

    # ---------------------------------------------------------------- the sampling thread

    def _run(self) -> None:
        """Most ticks only read CPU usage and memory, unparsed (two preads); one every FULL_READ_EVERY_S
        reads every counter, and one every DELIVER_EVERY_S turns the batch into samples and hands them to
        the event loop at once. On a VM everything a freshly woken thread runs is slow (cold caches), so the
        per-tick work is kept to the reads (measured by `tui-profiler bench sampler`)."""
        cpu0 = time.thread_time()
        perf, sleep = time.perf_counter, time.sleep
        fast = self._reader.usage_reader() if self._reader is not None else None
        nvml = self._nvml
        raw: list[Any] = []
        tick, batch_ticks, full_every = (
            0,
            self._ticks(self.DELIVER_EVERY_S),
            self._ticks(self.FULL_READ_EVERY_S),
        )
        next_t = perf()
        while not self._stop.is_set():
            tick += 1
            if fast is not None and tick % full_every != 1 % full_every:
                raw.append((perf(), fast(), nvml.read(self._target_pids()) if nvml is not None else None))
            else:  # the first tick too, so the cumulative counters' baseline is the start
                raw.append(self._read_raw(final=False))
            if len(raw) >= batch_ticks:
                self._process(raw)
                raw = []
            next_t += self.interval_s
            delay = next_t - perf()
            if delay < 0:  # fell behind (a busy host): skip missed ticks rather than burst
                next_t = perf()
                delay = 0.0
            if delay <= 0.1:
                sleep(delay)  # cheaper to wake from than Event.wait; stop() waits at most this long
            else:
                self._stop.wait(delay)
        # one last full reading so the cumulative counters cover the whole window
        raw.append(self._read_raw(final=True))
        self._process(raw)
        self._cpu_s += time.thread_time() - cpu0  # all of the thread's CPU, its wake-ups included

    def _target_pids(self) -> list[int]:
        now = time.perf_counter()
        if now - self._pids_refreshed >= 1.0:
            self._pids_refreshed = now
            if self._reader is not None:
                self._pids = self._reader.pids() or self._pids
            elif self._proc is not None:
                self._pids = self._proc.pids() or self._pids
        return self._pids

    def _read_raw(self, final: bool) -> _Raw:
        """A full reading: every counter, and the GPU (the sampling thread's slow path)."""
        now = time.perf_counter()
        gpu = self._nvml.read(self._target_pids()) if self._nvml is not None else None
        if self._reader is not None:
            return _Raw(now, final, gpu, self._reader.read())
        if self._proc is not None:
            return _Raw(now, final, gpu, self._proc.read())
        return _Raw(now, final, gpu)

    def _process(self, batch: list[Any]) -> None:
        """Readings (a `_Raw`, or (t, unparsed usage, GPU) from a fast tick) → samples, handed over at once."""
        self._deliver([s for s in map(self._sample_of, batch) if s is not None], now=True)

    def _sample_of(self, raw: Any) -> ResourceSample | None:
        if type(raw) is tuple:  # a fast tick: CPU usage and memory (and the GPU when there is one)
            assert self._reader is not None
            cpu_ns, mem = self._reader.parse_usage(raw[1])
            return self._record(
                raw[0],
                cpu_ns,
                mem,
                None,
                None,
                None,
                None,
                self._reader.cpu_limit_cores,
                self._reader.mem_limit_bytes,
                raw[2] or _NO_GPU,
                self.source,
                False,
            )
        now, final, gpu = raw.t, raw.final, raw.gpu or _NO_GPU
        if self._reader is not None:
            r = raw.reading
            return self._record(
                now,
                r.cpu_usage_ns,
                r.mem_bytes,
                r.mem_peak_bytes,
                r.nr_throttled,
                r.throttled_ns,
                r.oom_kills,
                self._reader.cpu_limit_cores,
                self._reader.mem_limit_bytes,
                gpu,
                self.source,
                final,
            )
        if self._proc is not None and raw.reading is not None:
            p = raw.reading
            return self._record(
                now,
                p.cpu_usage_ns,
                p.mem_bytes,
                None,
                None,
                None,
                None,
                None,
                None,
                gpu,
                self.source,
                final,
                hwm=p.mem_peak_bytes,
            )
        if self.source == "docker-stats":  # GPU only: the stats thread delivers the rest
            if gpu.vram_bytes is None and gpu.gpu_util_pct is None:
                return None
            return self._record(now, None, None, None, None, None, None, None, None, gpu, "nvml", final)
        return None

    def _on_stats(self, s: Any) -> None:  # from the docker-stats thread
        sample = self._record(
            s.t,
            s.cpu_usage_ns,
            s.mem_bytes,
            s.mem_peak_bytes,
            s.nr_throttled,
            s.throttled_ns,
            None,
            self.target.cpu_cap,
            s.mem_limit_bytes,
            GpuReading(),
            "docker-stats",
            False,
            cpu_cores=s.cpu_cores,
        )
        self._deliver([sample])

    def _record(
        self,
        now: float,
        cpu_ns: int | None,
        mem: int | None,
        peak_counter: int | None,
        nr_throttled: int | None,
        throttled_ns: int | None,
        oom: int | None,
        cpu_cap: float | None,
        mem_cap: int | None,
        gpu: GpuReading,
        source: str,
        final: bool,
        *,
        hwm: int | None = None,
        cpu_cores: float | None = None,
    ) -> ResourceSample:
        with self._lock:
            point = _Point(now, cpu_ns)
            if cpu_ns is not None:
                if self._first is None or self._first.cpu_ns is None:
                    self._first = point
                self._last = point
                self._window.append(point)
                while len(self._window) > 2 and self._window[1].t <= now - self.cpu_window_s:
                    self._window.popleft()
                oldest = self._window[0]
                if (
                    cpu_cores is None
                    and now - oldest.t > 0
                    and oldest.cpu_ns is not None
                    and oldest is not point
                ):
                    cpu_cores = (cpu_ns - oldest.cpu_ns) / 1e9 / (now - oldest.t)
            # The peak is over full windows only: in a shorter one (the first samples) a quota'd container's
            # legitimate burst across all cores within one CFS period would read as a peak far above its cap.
            full_window = self._window and now - self._window[0].t >= 0.9 * self.cpu_window_s
            if cpu_cores is not None and not final and (full_window or source == "docker-stats"):
                self._peak_cpu = cpu_cores if self._peak_cpu is None else max(self._peak_cpu, cpu_cores)
            if mem is not None:
                self._max_mem = mem if self._max_mem is None else max(self._max_mem, mem)
            if peak_counter is not None:
                self._peak_counter = peak_counter
            elif hwm is not None:
                self._hwm = hwm
            if nr_throttled is not None or throttled_ns is not None:
                if self._base_throttled == (None, None):
                    self._base_throttled = (nr_throttled, throttled_ns)
                self._last_throttled = (nr_throttled, throttled_ns)
            if oom is not None:
                if self._base_oom is None:
                    self._base_oom = oom
                self._last_oom = oom
            if gpu.vram_bytes is not None:
                self._peak_vram = (
                    gpu.vram_bytes if self._peak_vram is None else max(self._peak_vram, gpu.vram_bytes)
                )
            if gpu.gpu_util_pct is not None:
                self._max_util = (
                    gpu.gpu_util_pct if self._max_util is None else max(self._max_util, gpu.gpu_util_pct)
                )
            if not final:
                self._n += 1
            self._t_end = now
            (base_n, base_ns), (last_n, last_ns) = self._base_throttled, self._last_throttled
            return ResourceSample(
                cell_index=self.cell_index,
                t_s=now - (self.t0 or self._t_start),
                cpu_cores=cpu_cores,
                cpu_cap=cpu_cap,
                mem_bytes=mem,
                mem_cap_bytes=mem_cap,
                mem_peak_bytes=peak_counter if peak_counter is not None else self._peak_counter,
                throttled_periods=last_n - base_n if last_n is not None and base_n is not None else None,
                throttled_s=(last_ns - base_ns) / 1e9
                if last_ns is not None and base_ns is not None
                else None,
                gpu_util_pct=gpu.gpu_util_pct,
                vram_bytes=gpu.vram_bytes,
                source=source,
            )

    # Samples reach the event loop in batches, every DELIVER_EVERY_S: waking the loop (and a freshly woken
    # sampler thread processing the batch) costs per batch, not per sample; at 0.4 s a 20 Hz sampler costs
    # ~0.40% of a core against ~0.47% at 0.2 s on the test VM (`tui-profiler bench sampler`), and a live
    # plot that is 0.4 s behind still reads as live. The cumulative cgroup counters (peak, throttling,
    # OOM) are read every FULL_READ_EVERY_S and at the end: live samples may show them up to a second
    # old; the summary's are from the end.
    DELIVER_EVERY_S = 0.4
    FULL_READ_EVERY_S = 1.0

    def _ticks(self, seconds: float) -> int:
        """How many sampling ticks make `seconds` (at least one)."""
        return max(1, round(seconds / self.interval_s))

    def _deliver(self, samples: list[ResourceSample], *, now: bool = False) -> None:
        """Queue samples for the event loop; hand the queue over when `now` (the sampling thread batches by
        ticks itself) or once DELIVER_EVERY_S has passed (the docker-stats thread's one-at-a-time samples)."""
        if not samples or self.on_sample is None or self._loop is None:
            return
        with self._deliver_lock:  # the sampling and docker-stats threads both deliver
            self._pending.extend(samples)
            t = time.perf_counter()
            if not now and t - self._last_delivery < self.DELIVER_EVERY_S:
                return
            batch, self._pending = self._pending, []
            self._last_delivery = t
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody left to tell
            self._loop.call_soon_threadsafe(self._call_consumer, batch)

    def _call_consumer(self, batch: list[ResourceSample]) -> None:
        if self.on_sample is not None:
            for sample in batch:
                try:
                    self.on_sample(sample)
                except Exception:  # a consumer's bug must not stop the sampling
                    pass

    # ---------------------------------------------------------------- summary

    def _summary(self) -> SamplerSummary:
        s = SamplerSummary(sample_source=self.source, n_samples=self._n, gpu_note=self._gpu_note)
        duration = max(self._t_end - self._t_start, 0.0)
        s.duration_s = duration
        if self._n and duration > 0:
            s.sample_rate_hz = self._n / duration
        first, last = self._first, self._last
        if first and last and last.t > first.t and first.cpu_ns is not None and last.cpu_ns is not None:
            s.mean_cpu_cores = (last.cpu_ns - first.cpu_ns) / 1e9 / (last.t - first.t)
        s.peak_cpu_cores = self._peak_cpu
        if s.peak_cpu_cores is None and s.mean_cpu_cores is not None:
            # sampled for less than one full window: the whole span is the only full window there is
            s.peak_cpu_cores = s.mean_cpu_cores
        if self._peak_counter is not None:
            s.peak_mem_bytes = self._peak_counter
            s.peak_mem_source = (
                "docker-stats-max-usage" if self.source == "docker-stats" else "cgroup-peak-counter"
            )
        elif self._hwm is not None:
            s.peak_mem_bytes = self._hwm
            s.peak_mem_source = "procfs-vmhwm-sum"
        elif self._max_mem is not None:
            s.peak_mem_bytes = self._max_mem
            s.peak_mem_source = "max-sample"
        (base_n, base_ns), (last_n, last_ns) = self._base_throttled, self._last_throttled
        if base_n is not None and last_n is not None:
            s.throttled_periods = last_n - base_n
        if base_ns is not None and last_ns is not None:
            s.throttled_s = (last_ns - base_ns) / 1e9
        if self._base_oom is not None and self._last_oom is not None:
            s.oom_kills = self._last_oom - self._base_oom
        s.peak_vram_bytes = self._peak_vram
        s.gpu_util_max_pct = self._max_util
        cpu_s = self._cpu_s + (self._stats.cpu_s if self._stats is not None else 0.0)
        s.sampler_cpu_s = cpu_s
        if self._n:
            s.sampler_cpu_per_sample_us = cpu_s / self._n * 1e6
        return s
