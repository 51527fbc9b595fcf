"""One cell on a ready target: its inputs prepared, the resource sampler, the load (each request a
`RequestDone`), its status, and its `CellFinished` with the cells.csv row. A cell that cannot run gets its
row all the same, through `fail_cells`, the one way a cell fails without running."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tui_profiler.events import (
    CellFinished,
    CellStarted,
    ColdStartDone,
    ColdStartPhase,
    RequestDone,
    ResourceSample,
)
from tui_profiler.plan import Cell
from tui_profiler.runtime.base import EnforcedCaps, RunningTarget
from tui_profiler.session.schema import CellStatus, ColdStartPhaseName, StopReason
from tui_profiler.sweep.container import alive, stop_target
from tui_profiler.sweep.context import Placement, SweepContext
from tui_profiler.sweep.control import Stopped
from tui_profiler.sweep.outcome import (
    CellSetting,
    ColdStart,
    cell_row,
    classify_cell,
    cold_total,
    model_name,
    needs_liveness_check,
    request_constants,
)
from tui_profiler.sweep.saturation import LoadShape
from tui_profiler.sweep.targets import target_config

if TYPE_CHECKING:
    from tui_profiler.load.client import RequestResult
    from tui_profiler.load.inputs import PayloadSet
    from tui_profiler.sample import SamplerSummary
    from tui_profiler.sample.contention import CpuWindow
    from tui_profiler.sample.prometheus import MetricsScraper
    from tui_profiler.sample.request_cpu import RequestCpuMeter

# What the cells after the first of a group say when its container did not start.
CONTAINER_DID_NOT_START = "container did not start"

# The input columns of a request that never picked an input (an open-loop arrival dropped unsent).
_NO_INPUT: dict[str, Any] = {"input_index": None, "input_hash": None, "body_bytes": None}


def cell_setting(
    ctx: SweepContext,
    place: Placement,
    cell: Cell,
    enforced: EnforcedCaps,
    payloads: PayloadSet | None = None,
) -> CellSetting:
    return CellSetting(
        cell=cell,
        model_name=model_name(
            ctx.model_facts.get("model"), ctx.preset.model, target_config(ctx.preset).image
        ),
        batch_size=ctx.preset.input.batch_size,
        enforced=enforced,
        container_idx=cell.container_group,
        payload_row=payloads.common_row() if payloads is not None else {},
        host=place.host,
        host_class=place.host_class,
        input_hashes=tuple(p.input_hash for p in payloads.payloads) if payloads is not None else (),
    )


def finish_cell(
    ctx: SweepContext,
    place: Placement,
    setting: CellSetting,
    results: Sequence[RequestResult],
    *,
    status: CellStatus,
    reason: str,
    sampled: SamplerSummary | None = None,
    cold: ColdStart | None = None,
    measures_cold_start: bool = False,
    load_wall_s: float | None = None,
    target_facts: dict[str, Any] | None = None,
    load_shape: LoadShape | None = None,
    cpu_window: CpuWindow | None = None,
    server_metrics: dict[str, dict[str, float | None]] | None = None,
) -> None:
    """The cell's end: its cells.csv row, carried by `CellFinished`; a warning first when the row says the
    cell was saturated (`sweep.saturation`), so both front ends say so. `results`: the load generator's
    `LoadResults` (why the load ended and the pooled gaps ride on it), or a plain list."""
    row = cell_row(
        setting,
        results,
        status=status,
        reason=reason,
        sampled=sampled,
        cold=cold,
        measures_cold_start=measures_cold_start,
        profiling_url=ctx.url is not None,
        load_wall_s=load_wall_s,
        target_facts=target_facts,
        weight_bytes=ctx.model_facts.get("weight_bytes"),
        slo=ctx.preset.slo,
        load_shape=load_shape,
        cpu_window=cpu_window,
        stop_reason=getattr(results, "stop_reason", ""),
        itl=getattr(results, "itl", None),
        server_metrics=server_metrics,
    )
    if row.get("saturation"):
        place.log(
            "warning", f"saturated ({row['saturation']}): {row['saturation_reason']}", setting.cell.index
        )
    place.emit(CellFinished(setting.cell.index, status, reason, row))


def announce(ctx: SweepContext, place: Placement, cell: Cell) -> None:
    """The cell's `CellStarted`, with the session's remaining time as far as it is known."""
    place.emit(CellStarted(cell.index, ctx.n_cells, cell.as_dict(), ctx.eta(len(place.emitter.finished))))


def fail_cells(
    ctx: SweepContext,
    place: Placement,
    cells: Sequence[Cell],
    status: CellStatus,
    reason: str,
    *,
    cold: ColdStart | None = None,
    first_measures_cold_start: bool = False,
    see_first: str = "",
    first_announced: bool = False,
) -> None:
    """End `cells` without running them (their container could not start, their host is gone): each gets
    its `CellStarted` (unless `first_announced`: the first has it already) and a `CellFinished` with
    `status` and `reason`; with `see_first`, the cells after the first say "(<see_first>, see cell N)"
    instead of repeating the reason."""
    for cell in cells:
        first = cell is cells[0]
        if not (first and first_announced):
            announce(ctx, place, cell)
        finish_cell(
            ctx,
            place,
            cell_setting(ctx, place, cell, EnforcedCaps()),
            [],
            status=status,
            reason=reason if first or not see_first else f"{reason} ({see_first}, see cell {cells[0].index})",
            cold=cold,
            measures_cold_start=first and first_measures_cold_start,
        )


async def prepare_payloads(ctx: SweepContext, cell: Cell) -> PayloadSet:
    """Every input of the cell, prepared now, outside the timed load (ValueError / OSError: it cannot be):
    the user's own inputs, or generated ones (a prompt per request the cell may send, `load.inputs.pool_size`)."""
    from tui_profiler.load.inputs import InputSpec, pool_size
    from tui_profiler.load.template import build_payloads

    shared = cell.shared_prefix_tokens or 0
    if ctx.sources is not None:
        return await asyncio.to_thread(
            ctx.sources.prepare,
            ctx.preset,
            ctx.template,
            ctx.template_model(),
            scale=cell.input_scale,
            token_len=cell.token_len,
            output_len=cell.output_len,
            shared_prefix_tokens=shared,
        )
    inp, load = ctx.preset.input, ctx.preset.load
    spec_in = InputSpec.for_cell(inp, scale=cell.input_scale, token_len=cell.token_len)
    # [load.stop] max_requests bounds a cell that load.requests does not (the stop rule's config)
    max_requests = getattr(getattr(load, "stop", None), "max_requests", None)
    return await asyncio.to_thread(
        build_payloads,
        spec_in,
        ctx.template,
        ctx.template_model(),
        cell.output_len,
        count=pool_size(load.warmup, load.requests, max_requests),
        shared_prefix_tokens=shared,
        stream=cell.index,
        max_bytes=int(inp.max_prepared_mb * 1024 * 1024),
    )


class _RequestEvents:
    """Each answer of the cell as a `RequestDone` carrying its requests.csv row; the first answer of a
    container also ends its cold start (`first_request`, then `ColdStartDone`)."""

    def __init__(
        self,
        ctx: SweepContext,
        place: Placement,
        setting: CellSetting,
        payloads: PayloadSet,
        target: RunningTarget,
        cold: ColdStart,
        measures_cold_start: bool,
    ) -> None:
        self.ctx, self.place, self.target = ctx, place, target
        self.cell = setting.cell
        self.base = request_constants(setting)
        self.input_rows = [p.as_row() for p in payloads.payloads] if len(payloads.payloads) > 1 else None
        self.cold = cold  # its container's cold start
        self.measures_cold_start = measures_cold_start  # this cell's first answer ends that cold start
        self.first_seen = False

    def cold_start_done(self) -> None:
        self.cold.finish()
        phases = dict(self.cold.phases)
        self.place.emit(
            ColdStartDone(self.cell.index, phases, cold_total(phases) or 0.0, self.target.enforced.as_row())
        )

    def _first(self, res: RequestResult) -> None:
        self.first_seen = True
        first_request = ColdStartPhaseName.FIRST_REQUEST.value
        self.cold.phases[first_request] = res.latency_s
        detail = "" if res.ok else f"failed: {res.error}"
        self.place.emit(ColdStartPhase(self.cell.index, first_request, res.latency_s, detail))
        if not self.ctx.url:
            self.cold_start_done()

    def __call__(self, res: RequestResult) -> None:
        if self.measures_cold_start and not self.first_seen:
            self._first(res)
        varying = res.as_row()
        if self.input_rows is not None:  # several inputs: the one this request sent (none if never sent)
            idx = res.input_index
            varying = {**(self.input_rows[idx] if idx is not None else _NO_INPUT), **varying}
        varying["cold_start_s"] = self.cold.total_s() if not self.ctx.url else None
        self.place.emit(
            RequestDone(
                cell_index=self.cell.index,
                t_s=res.t_recv_s,
                latency_s=res.latency_s,
                ok=res.ok,
                warmup=res.warmup,
                status=res.status,
                error=res.error or "",
                server_total_ms=res.server_total_ms,
                overhead_ms=res.overhead_ms,
                row={**self.base, **varying},
            )
        )


async def run_cell(
    ctx: SweepContext,
    place: Placement,
    cell: Cell,
    target: RunningTarget,
    cold: ColdStart,
    measures_cold_start: bool,
) -> bool:
    """Run one cell's load on a ready target; returns whether its target died (the cell's status goes out
    in its `CellFinished`)."""
    try:
        payloads = await prepare_payloads(ctx, cell)
    except (ValueError, OSError) as exc:  # too large for the memory bound, a file gone since it was checked
        if measures_cold_start and not ctx.url:
            cold.finish()
        reason = f"inputs: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        setting = cell_setting(ctx, place, cell, target.enforced)
        finish_cell(ctx, place, setting, [], status=CellStatus.FAILED, reason=reason, cold=cold,
                    measures_cold_start=measures_cold_start, target_facts=target.facts)  # fmt: skip
        return False
    setting = cell_setting(ctx, place, cell, target.enforced, payloads)
    events = _RequestEvents(ctx, place, setting, payloads, target, cold, measures_cold_start)
    measured = await _measure(ctx, place, cell, target, payloads, events)
    results, sampled = measured.results, measured.sampled
    if measures_cold_start and not ctx.url and not events.first_seen:  # no request ever answered
        events.cold_start_done()
    status, reason, is_alive = await _verdict(ctx, place, cell, target, results, measured.load_error, sampled)
    finish_cell(ctx, place, setting, results, status=status, reason=reason, sampled=sampled, cold=cold,
                measures_cold_start=measures_cold_start, load_wall_s=measured.wall_s,
                target_facts=target.facts, load_shape=measured.shape,
                cpu_window=measured.cpu_window, server_metrics=measured.server_metrics)  # fmt: skip
    return not is_alive


async def _verdict(
    ctx: SweepContext,
    place: Placement,
    cell: Cell,
    target: RunningTarget,
    results: list[RequestResult],
    load_error: str,
    sampled: SamplerSummary | None,
) -> tuple[CellStatus, str, bool]:
    """The cell's status and reason, and whether its target is still alive (asked only when the results
    leave it in doubt; a dead one is stopped here, for its exit facts)."""
    timed = [r for r in results if not r.warmup]
    oom_kills = sampled.oom_kills if sampled is not None else None
    is_alive, exit_facts = True, None
    if needs_liveness_check(timed, load_error, oom_kills) and not ctx.url:
        is_alive = await alive(ctx.preset, target.base_url)
        if not is_alive:
            exit_facts = await stop_target(place, target)
    status, reason = classify_cell(
        timed,
        load_error=load_error,
        oom_kills=oom_kills,
        alive=is_alive,
        exit_facts=exit_facts,
        memory_gb=cell.memory_gb,
    )
    return status, reason, is_alive


@dataclass(slots=True)
class _Measured:
    """What `_measure` brings back: the results, why the load generator failed ("" when it did not), the
    load's wall time, the sampler's summary, how the load was sent and who had the CPUs meanwhile."""

    results: list[RequestResult]
    load_error: str
    wall_s: float
    sampled: SamplerSummary | None
    shape: LoadShape
    cpu_window: CpuWindow | None
    server_metrics: dict[str, dict[str, float | None]] | None = None  # scraped: each metric's mean and peak


async def _measure(
    ctx: SweepContext,
    place: Placement,
    cell: Cell,
    target: RunningTarget,
    payloads: PayloadSet,
    events: _RequestEvents,
) -> _Measured:
    """The timed load with the resource sampler and the CPU probe (`sample.contention`) around it."""
    from tui_profiler.cgroups import cpuset_cores
    from tui_profiler.load import patterns
    from tui_profiler.load.client import LoadResults, run_load
    from tui_profiler.sample.contention import CpuProbe

    def on_sample(sample: ResourceSample) -> None:
        place.emit(replace(sample, cell_index=cell.index))

    sampler = None
    if not ctx.url:
        from tui_profiler.sample import ResourceSampler

        sampler = ResourceSampler(target.sample_target(), interval_s=0.05, on_sample=on_sample)
        await sampler.start()
    pattern = patterns.pattern_for(ctx.preset.load, concurrency=cell.concurrency, rate=cell.rate)
    if cell.requests is not None:  # a search's further requests at a level (sweep.search)
        pattern = replace(pattern, requests=cell.requests, duration_s=None)
    shape = LoadShape(
        open_loop=pattern.mode == "open",
        rate=pattern.rate,
        connections=pattern.concurrency,
        loops=pattern.processes if pattern.mode == "closed" and pattern.concurrency > 1 else 1,
    )
    # built here, on the event loop's thread (the thread it watches); its reads run in a thread
    probe = CpuProbe(cpuset_cores(target.enforced.cpuset) if target.enforced.cpuset else None)
    before = await asyncio.to_thread(probe.snapshot)
    meter = _request_cpu_meter(ctx, target)
    scraper = _metrics_scraper(ctx, place, cell, target)
    if scraper is not None:
        scraper.start()
    results: list[RequestResult] = []
    load_error = ""
    t0 = time.perf_counter()
    try:
        results = await ctx.control.interruptible(
            run_load(target.base_url, ctx.template, payloads, pattern, events, cpu_meter=meter)
        )
    except Stopped:
        if sampler is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(sampler.stop())
        place.emit(CellFinished(cell.index, CellStatus.INTERRUPTED, "stopped by the user", {}))
        raise
    except Exception as exc:
        load_error = f"load generator: {type(exc).__name__}: {exc}"
        results = LoadResults()
        results.stop_reason = StopReason.ERRORS
    finally:
        if meter is not None:
            meter.close()
        server_metrics = await scraper.stop() if scraper is not None else None
    load_wall = time.perf_counter() - t0
    if scraper is not None and scraper.failures:
        place.log(
            "warning", f"metrics: {scraper.failures} scrape(s) failed, last: {scraper.last_error}", cell.index
        )
    after = await asyncio.to_thread(probe.snapshot)
    cpu_window: CpuWindow | None = None
    try:
        cpu_window = await asyncio.to_thread(probe.window, before, after)
    except Exception as exc:  # a host fact that cannot be read: the columns say 'not available'
        place.log("warning", f"CPU probe: {exc}", cell.index)
    sampled: SamplerSummary | None = None
    if sampler is not None:
        try:
            sampled = await sampler.stop()
        except Exception as exc:
            place.log("warning", f"sampler: {exc}", cell.index)
    return _Measured(results, load_error, load_wall, sampled, shape, cpu_window, server_metrics)


def _request_cpu_meter(ctx: SweepContext, target: RunningTarget) -> RequestCpuMeter | None:
    """The per-request reader of the target's CPU counters (`sample.request_cpu`), None when turned off
    (`[load] per_request_cgroup = false`), for --url (no cgroup of ours), or when the cgroup cannot be read
    from here (on a fleet the measuring container reads it through its read-only mount)."""
    if ctx.url or not getattr(ctx.preset.load, "per_request_cgroup", True):
        return None
    from tui_profiler.sample.request_cpu import RequestCpuMeter

    return RequestCpuMeter.open(target.sample_target().cgroup)


def _metrics_scraper(
    ctx: SweepContext, place: Placement, cell: Cell, target: RunningTarget
) -> MetricsScraper | None:
    """The scraper of the target's Prometheus endpoint (`[target] metrics`), None without one. Its port:
    the serving one (the target's own address), or another published beside it (the docker runtime's
    `published_ports`), or that port on the target's host (the process runtime)."""
    from urllib.parse import urlsplit

    from tui_profiler.sample.prometheus import MetricsScraper

    config = target_config(ctx.preset)
    metrics = config.metrics
    if metrics is None:
        return None
    url = urlsplit(target.base_url)
    host, port = url.hostname or "127.0.0.1", url.port
    if metrics.port is not None and metrics.port != config.port:
        published = target.facts.get("published_ports") or {}
        port = published.get(str(metrics.port), metrics.port)
    return MetricsScraper(
        f"{url.scheme}://{host}:{port}{metrics.path}",
        interval_s=metrics.interval_s,
        include=metrics.include,
        cell_index=cell.index,
        emit=place.emit,
    )
