"""Deterministic synthetic event streams and session folders.

For the TUI's tests, snapshots, screenshots and benchmarks only: they exercise the screens with known data,
independent of the host. Nothing here is ever shown as a measurement.

A synthetic session is made as a real one is: each request is a `RequestResult` whose requests.csv row is
built from the cell's settings (`sweep.outcome.request_constants`), each cell's cells.csv row by the
session's own summary (`sweep.outcome.cell_row`), and a session folder is the event stream written by the
session writer (`session.store.replay`). Only the latencies and resource readings are invented, by plausible laws.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tui_profiler import events as ev
from tui_profiler.load.client import RequestResult
from tui_profiler.plan import Cell
from tui_profiler.runtime.base import EnforcedCaps
from tui_profiler.sample import SamplerSummary
from tui_profiler.session.schema import CellStatus, ColdStartPhaseName, RequestStatus, SessionStatus
from tui_profiler.session.store import replay
from tui_profiler.stats import percentile
from tui_profiler.sweep.outcome import CellSetting, ColdStart, cell_row, cold_total, request_constants

CONFIGS = ((0.5, 1.0), (1.0, 2.0), (2.0, 4.0))
SCALES = (0.5, 1.0, 2.0)
PHASES: dict[str, float | None] = {  # seconds per cold-start phase; image_pull None: 'cached'
    ColdStartPhaseName.IMAGE_PULL.value: None,
    ColdStartPhaseName.CREATE.value: 0.08,
    ColdStartPhaseName.START.value: 0.35,
    ColdStartPhaseName.SERVER_BOOT.value: 1.9,
    ColdStartPhaseName.MODEL_LOAD.value: 0.6,
    ColdStartPhaseName.READY.value: 0.02,
    ColdStartPhaseName.FIRST_REQUEST.value: 0.15,
}
IMAGE_MODEL = "mobilenet_v3_small"
IMAGE_SESSION = "20250101-000000-synthetic"
IMAGE_EPOCH_MS = 1735689600000  # the timestamp_ms of the session's first request
GIB = 1024**3
WARMUP = 2  # each cell's first requests are its warm-up


def model_latency(cpus: float, scale: float) -> float:
    """A plausible latency law: fixed cost + work growing with pixels, divided by the CPU share."""
    latency: float = 0.004 + 0.05 * scale**2 / min(cpus, 1.6) ** 0.9
    return latency


def _cell(index: int, config: tuple[float, float], group: int, **size: Any) -> Cell:
    """A closed-loop cell of one request at a time, CPU-only, with `size`: input_scale or token_len (and
    output_len)."""
    cpus, memory_gb = config
    size = {"input_scale": None, "token_len": None, **size}
    return Cell(
        index, cpus, memory_gb, 0, concurrency=1, rate=None, repeat_idx=0, container_group=group, **size
    )


def image_cells() -> list[Cell]:
    """3 resource configs × 3 input scales, one container per cell."""
    configs_scales = [(c, s) for c in CONFIGS for s in SCALES]
    return [_cell(i, config, i, input_scale=scale) for i, (config, scale) in enumerate(configs_scales)]


@dataclass(slots=True)
class _Cell:
    """One synthetic cell as it runs: its setting, results, samples and container's cold start."""

    cell: Cell
    setting: CellSetting
    cold: ColdStart  # its container's cold start
    measures_cold_start: bool  # this cell started the container (False: it shares an earlier cell's)
    results: list[RequestResult]
    samples: list[ev.ResourceSample]
    epoch_ms: int

    def request_row(self, r: RequestResult) -> dict[str, Any]:
        """The requests.csv row, as the sweep builds it: the cell's settings, then the request's own."""
        return {
            **request_constants(self.setting),
            **r.as_row(),
            "cold_start_s": self.cold.total_s(),
        }

    def summary(self, status: CellStatus, reason: str = "") -> dict[str, Any]:
        """The cells.csv row, by the session's own summary."""
        cpu = [s.cpu_cores for s in self.samples if s.cpu_cores is not None]
        mem = [s.mem_peak_bytes for s in self.samples if s.mem_peak_bytes is not None]
        last = self.samples[-1] if self.samples else None
        sampled = SamplerSummary(
            peak_cpu_cores=max(cpu) if cpu else None,
            mean_cpu_cores=sum(cpu) / len(cpu) if cpu else None,
            peak_mem_bytes=max(mem) if mem else None,
            peak_mem_source="max-sample",
            throttled_periods=last.throttled_periods if last else None,
            throttled_s=last.throttled_s if last else None,
            oom_kills=1 if status == CellStatus.OOM else 0,
            sample_source=last.source if last else "",
            n_samples=len(self.samples),
        )
        answered = [r.t_recv_s for r in self.results if r.t_recv_s is not None]
        return cell_row(
            self.setting,
            self.results,
            status=status,
            reason=reason,
            sampled=sampled,
            cold=self.cold,
            measures_cold_start=self.measures_cold_start,
            profiling_url=False,
            load_wall_s=max(answered) if answered else None,
        )


def _setting(cell: Cell, model: str, payload_row: dict[str, Any]) -> CellSetting:
    enforced = EnforcedCaps(
        cpus_requested=cell.cpus,
        cpus_enforced=True,
        memory_bytes_requested=int(cell.memory_gb * GIB) if cell.memory_gb else None,
        memory_enforced=True,
    )
    return CellSetting(cell, model, 1, enforced, cell.container_group, payload_row)


def _container_cold_start() -> ColdStart:
    total = cold_total(PHASES) or 0.0
    first = PHASES[ColdStartPhaseName.FIRST_REQUEST.value] or 0.0
    return ColdStart(phases=dict(PHASES), start_wall_s=total - first, wall_s=total)


def _cold_start(cell: Cell) -> Iterator[ev.Event]:
    for phase, seconds in PHASES.items():
        yield ev.ColdStartPhase(cell.index, phase, seconds, "cached" if seconds is None else "")
    total = cold_total(PHASES) or 0.0
    yield ev.ColdStartDone(cell.index, dict(PHASES), total, {"cpus_enforced": True, "mem_enforced": True})


def _result(run: _Cell, seq: int, t_send: float, latency: float, **fields: Any) -> RequestResult:
    return RequestResult(
        timestamp_ms=run.epoch_ms + int(t_send * 1000),
        t_send_s=t_send,
        t_recv_s=t_send + latency,
        latency_s=latency,
        status=200,
        ok=True,
        outcome=RequestStatus.OK,
        error="",
        warmup=seq < WARMUP,
        worker=0,
        seq=seq,
        **fields,
    )


def _cell_events(
    run: _Cell, requests: Iterator[RequestResult], sample_every: int, rng: random.Random, reading: Any
) -> Iterator[ev.Event]:
    """A cell's request and sample events, recorded in `run` as they are made."""
    for k, res in enumerate(requests):
        run.results.append(res)
        yield ev.RequestDone(
            run.cell.index,
            res.t_recv_s,
            res.latency_s,
            res.ok,
            res.warmup,
            res.status,
            server_total_ms=res.server_total_ms,
            overhead_ms=res.overhead_ms,
            row=run.request_row(res),
        )
        if k % sample_every == 0:
            sample = reading(run.cell, k, res.t_recv_s, rng)
            run.samples.append(sample)
            yield sample


def _image_sample(cell: Cell, k: int, t: float, rng: random.Random) -> ev.ResourceSample:
    scale = cell.input_scale or 1.0
    return ev.ResourceSample(
        cell.index,
        t,
        cpu_cores=min(cell.cpus or 1.0, 1.6) * (0.85 + 0.1 * rng.random()),
        cpu_cap=cell.cpus,
        mem_bytes=int((0.3 + 0.1 * scale) * GIB),
        mem_cap_bytes=int((cell.memory_gb or 0) * GIB),
        mem_peak_bytes=int((0.35 + 0.1 * scale) * GIB),
        throttled_periods=k if (cell.cpus or 1.0) < 1 else 0,  # only the half-core cells are throttled
        throttled_s=0.015 * k if (cell.cpus or 1.0) < 1 else 0.0,
        source="cgroup-v1",
    )


def _image_requests(
    cell: Cell, run: _Cell, n: int, rng: random.Random, slowdown: float = 1.0
) -> Iterator[RequestResult]:
    base = model_latency(cell.cpus or 1.0, cell.input_scale or 1.0) * slowdown
    t = 0.0
    for k in range(n):
        latency = base * math.exp(rng.gauss(0, 0.08))
        yield _result(run, k, t, latency, server_total_ms=latency * 900, overhead_ms=latency * 100)
        t += latency


def _session_started(name: str, preset: str, n_cells: int) -> ev.SessionStarted:
    reason = "Docker engine reachable (synthetic data)"
    return ev.SessionStarted(name, f"output/{name}", preset, "docker", reason, n_cells)


def event_stream(
    n_requests: int = 40,
    seed: int = 7,
    failed_cell: int | None = None,
    slowdown: Mapping[int, float] | None = None,
) -> Iterator[ev.Event]:
    """A whole small session: 9 cells (3 configs × 3 scales), cold starts, requests, samples, finishes.
    `failed_cell`: that cell ends OOM-killed; `slowdown`: cell index -> factor on its latencies (a server
    made slower there)."""
    rng = random.Random(seed)
    cells = image_cells()
    yield _session_started(IMAGE_SESSION, "synthetic", len(cells))
    for cell in cells:
        i = cell.index
        side = int(224 * (cell.input_scale or 1.0))
        setting = _setting(cell, IMAGE_MODEL, {"pixels": side**2, "height": side, "width": side})
        run = _Cell(cell, setting, _container_cold_start(), True, [], [], IMAGE_EPOCH_MS)
        yield ev.CellStarted(i, len(cells), cell.as_dict(), eta_s=30.0 * (len(cells) - i))
        yield from _cold_start(cell)
        factor = (slowdown or {}).get(i, 1.0)
        requests = _image_requests(cell, run, n_requests, rng, factor)
        yield from _cell_events(run, requests, 4, rng, _image_sample)
        if failed_cell == i:
            reason = f"OOM kill at {cell.memory_gb} GiB"
            yield ev.LogMessage("error", f"cell {i + 1}: server exited (OOM kill)", i)
            yield ev.CellFinished(i, CellStatus.OOM, reason, run.summary(CellStatus.OOM, reason))
        else:
            yield ev.CellFinished(i, CellStatus.OK, "", run.summary(CellStatus.OK))
    yield ev.SessionFinished(f"output/{IMAGE_SESSION}", SessionStatus.OK, len(cells), 0, 120.0)


def write_events(root: Path, name: str, events: Iterator[ev.Event], note: str) -> Path:
    """`root/name`: a session folder written by the session writer from `events` (meta.json from the
    session's start and finish, with a fixed creation time and `note`). An existing folder of that name is
    replaced."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root))

    def with_meta(stream: Iterator[ev.Event]) -> Iterator[ev.Event]:
        for event in stream:
            if isinstance(event, ev.SessionStarted):
                fixed = {"created_utc": "2025-01-01T00:00:00+00:00", "preset_name": event.preset_name}
                meta = {**fixed, "runtime": event.runtime, "n_cells": event.n_cells, "note": note}
                event = replace(event, session_id=name, meta={**meta, **event.meta})
            yield event

    try:
        written = replay(with_meta(events), staging / name)
        session = root / name
        if session.exists():
            shutil.rmtree(session)
        os.replace(written, session)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return session


def write_session(
    root: Path,
    name: str = IMAGE_SESSION,
    n_requests: int = 30,
    seed: int = 7,
    slowdown: Mapping[int, float] | None = None,
) -> Path:
    """A complete session folder (requests/cells/samples CSV, meta.json) of `event_stream`'s session.
    `slowdown`: cell index -> factor on its latencies."""
    events = event_stream(n_requests, seed, slowdown=slowdown)
    return write_events(root, name, events, "synthetic data for TUI tests")


# ------------------------------------------------------------------------------------------ generative

GEN_CONFIGS = ((1.0, 2.0), (2.0, 4.0))
PROMPT_LENS = (32, 256, 1024)
OUTPUT_LEN = 32
GEN_MODEL = "decoder_small"
GEN_SESSION = "20250102-000000-synthetic-llm"
GEN_EPOCH_MS = 1735776000000


def model_ttft(cpus: float, prompt_tokens: float) -> float:
    """A plausible prefill law: fixed cost + work linear in the prompt, mostly parallel."""
    return 0.01 + 2.5e-4 * prompt_tokens * (0.2 + 0.8 / cpus)


def model_tpot(cpus: float, context_tokens: float) -> float:
    """A plausible decode law: per token a fixed cost + attention over the context."""
    return 0.012 + 2e-5 * context_tokens * (0.3 + 0.7 / cpus)


def generative_cells() -> list[Cell]:
    """2 resource configs × 3 prompt lengths, one container per resource config."""
    configs_prompts = [(c, p) for c in GEN_CONFIGS for p in PROMPT_LENS]
    return [
        _cell(i, config, i // len(PROMPT_LENS), token_len=prompt, output_len=OUTPUT_LEN)
        for i, (config, prompt) in enumerate(configs_prompts)
    ]


def _generative_requests(cell: Cell, run: _Cell, n: int, rng: random.Random) -> Iterator[RequestResult]:
    """Streamed answers of OUTPUT_LEN tokens: a prefill, then one gap per further token."""
    prompt = cell.token_len or 0
    cpus = cell.cpus or 1.0
    t = 0.0
    for k in range(n):
        ttft = model_ttft(cpus, prompt) * math.exp(rng.gauss(0, 0.06))
        tpot = model_tpot(cpus, prompt + OUTPUT_LEN) * math.exp(rng.gauss(0, 0.04))
        gaps = tuple(tpot * (0.9 + 0.2 * rng.random()) for _ in range(OUTPUT_LEN - 1))
        latency = ttft + sum(gaps)
        yield _result(
            run,
            k,
            t,
            latency,
            ttft_s=ttft,
            tpot_s=sum(gaps) / len(gaps),
            itl_p50_s=percentile(gaps, 50),
            itl_p99_s=percentile(gaps, 99),
            itl_s=gaps,
            prompt_tokens=prompt,
            output_tokens=OUTPUT_LEN,
            output_tokens_source="usage",
        )
        t += latency


def _generative_sample(cell: Cell, k: int, t: float, rng: random.Random) -> ev.ResourceSample:
    prompt = cell.token_len or 0
    return ev.ResourceSample(
        cell.index,
        t,
        cpu_cores=(cell.cpus or 1.0) * (0.85 + 0.1 * rng.random()),
        cpu_cap=cell.cpus,
        mem_bytes=int((0.55 + 0.0002 * prompt) * GIB),
        mem_cap_bytes=int((cell.memory_gb or 0) * GIB),
        mem_peak_bytes=int((0.6 + 0.0002 * prompt) * GIB),
        source="cgroup-v2",
    )


def generative_event_stream(n_requests: int = 24, seed: int = 11) -> Iterator[ev.Event]:
    """A small generative session: 2 CPU configs × 3 prompt lengths, streamed answers of 32 tokens."""
    rng = random.Random(seed)
    cells = generative_cells()
    yield _session_started(GEN_SESSION, "synthetic_llm", len(cells))
    for cell in cells:
        i = cell.index
        measures_cold_start = i % len(PROMPT_LENS) == 0  # one container per resource config
        setting = _setting(cell, GEN_MODEL, {})
        run = _Cell(cell, setting, _container_cold_start(), measures_cold_start, [], [], GEN_EPOCH_MS)
        yield ev.CellStarted(i, len(cells), cell.as_dict(), eta_s=20.0 * (len(cells) - i))
        if measures_cold_start:
            yield from _cold_start(cell)
        yield from _cell_events(
            run, _generative_requests(cell, run, n_requests, rng), 2, rng, _generative_sample
        )
        yield ev.CellFinished(i, CellStatus.OK, "", run.summary(CellStatus.OK))
    yield ev.SessionFinished(f"output/{GEN_SESSION}", SessionStatus.OK, len(cells), 0, 90.0)


def write_generative_session(
    root: Path, name: str = GEN_SESSION, n_requests: int = 24, seed: int = 11
) -> Path:
    """A complete generative session folder: requests.csv and cells.csv with the generative columns."""
    note = "synthetic generative data for TUI tests"
    return write_events(root, name, generative_event_stream(n_requests, seed), note)


def up_to_cell(events: Iterator[ev.Event], cell: int, extra: int) -> list[ev.Event]:
    """The events of a session cut `extra` events into cell `cell` (0-based): a run caught mid-cell, so
    progress, cold start and plots all have something to show."""
    listed = list(events)
    starts = [i for i, e in enumerate(listed) if isinstance(e, ev.CellStarted)]
    return listed[: starts[cell] + extra]
