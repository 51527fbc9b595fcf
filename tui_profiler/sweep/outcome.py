"""What a finished cell amounts to: its status and reason, its cells.csv row and the columns its requests.csv
rows share. Pure functions of typed inputs (no I/O, no event loop), so every path is testable by hand."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tui_profiler.session.schema import (
    ADAPTIVE_COLUMNS,
    COLD_START_PHASES,
    CellStatus,
    ColdStartPhaseName,
    RequestStatus,
    StopReason,
)
from tui_profiler.stats import BatchedHistogram, percentile, quantile_interval, summarise
from tui_profiler.sweep.saturation import LoadShape, TargetCpu, not_measured, saturation_columns

if TYPE_CHECKING:  # the load generator and sampler are imported when a cell runs, not with the sweep
    from tui_profiler.config.model import SloConfig
    from tui_profiler.load.client import RequestResult
    from tui_profiler.plan import Cell
    from tui_profiler.runtime.base import EnforcedCaps
    from tui_profiler.sample import SamplerSummary
    from tui_profiler.sample.contention import CpuWindow

# The load generator's outcome for a request that got no answer in time (load.client.TIMEOUT).


@dataclass(slots=True)
class ColdStart:
    """One container's cold start. `phases`: seconds per phase of COLD_START_PHASES (None where not
    available), `first_request` added when the group's first request answers; `details`: a phase's note
    (e.g. the image pull's); `start_wall_s`: the runtime's start call end to end; `wall_s`: start plus the
    first request, set once that request is in (None until then, and for a target that never started)."""

    phases: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    start_wall_s: float = 0.0
    wall_s: float | None = None

    def total_s(self) -> float | None:
        return cold_total(self.phases)

    def finish(self) -> None:
        """The cold start is complete: the start's wall time plus the first request's latency."""
        self.wall_s = self.start_wall_s + (self.phases.get(ColdStartPhaseName.FIRST_REQUEST) or 0.0)


@dataclass(frozen=True, slots=True)
class CellSetting:
    """What every row of one cell shares: the cell, the model, the caps it ran under, its container and its
    payload's columns (`Payload.as_row()`; empty for a cell whose target never started)."""

    cell: Cell
    model_name: str
    batch_size: int
    enforced: EnforcedCaps
    container_idx: int
    payload_row: Mapping[str, Any] = field(default_factory=dict)
    host: str = ""  # the test box that ran the cell
    host_class: str = ""  # its hardware label ("" when none)
    input_hashes: tuple[str | None, ...] = ()  # each input's `input_hash`, by input index (None: not hashed)


def cold_total(phases: Mapping[str, float | None]) -> float | None:
    """The cold start in seconds: the sum of the phases that were measured; None when none was."""
    present = [v for v in (phases.get(p) for p in COLD_START_PHASES) if v is not None]
    return sum(present) if present else None


def throughput(timed: Sequence[RequestResult]) -> float | None:
    """Answered requests per second, from the first send to the last answer; None below two answers."""
    ok = [r for r in timed if r.ok]
    if len(ok) < 2:
        return None
    t0 = min(r.t_send_s for r in timed)
    t1 = max((r.t_recv_s for r in ok if r.t_recv_s is not None), default=t0)
    return len(ok) / (t1 - t0) if t1 > t0 else None


def _window(timed: Sequence[RequestResult]) -> float | None:
    """Seconds from the first send to the last answer; None below two answers (no span to divide by)."""
    ok = [r for r in timed if r.ok and r.t_recv_s is not None]
    if len(ok) < 2:
        return None
    t0 = min(r.t_send_s for r in timed)
    t1 = max(r.t_recv_s for r in ok if r.t_recv_s is not None)
    return t1 - t0 if t1 > t0 else None


def meets_slo(r: RequestResult, slo: SloConfig) -> bool:
    """Whether one request met every objective given: answered, and each measured value within its bound.
    A value that was not measured fails its objective, except TPOT of a one-token answer (no decode step)."""
    if not r.ok:
        return False
    if slo.ttft_s is not None and (r.ttft_s is None or r.ttft_s > slo.ttft_s):
        return False
    if slo.tpot_s is not None:
        if r.tpot_s is None:
            if r.output_tokens != 1:
                return False
        elif r.tpot_s > slo.tpot_s:
            return False
    return not (slo.e2e_s is not None and (r.latency_s is None or r.latency_s > slo.e2e_s))


def goodput(timed: Sequence[RequestResult], slo: SloConfig | None) -> tuple[float | None, float | None]:
    """(goodput_rps, slo_met_fraction): the requests per second that met every objective, and their share
    of the timed requests. None without `[slo]`, without timed requests, or when an objective could not be
    measured on any answered request (e.g. a TTFT objective for answers without tokens)."""
    if slo is None or not timed:
        return None, None
    ok = [r for r in timed if r.ok]
    if slo.ttft_s is not None and all(r.ttft_s is None for r in ok):
        return None, None
    if slo.tpot_s is not None and all(r.tpot_s is None and r.output_tokens != 1 for r in ok):
        return None, None
    met = sum(1 for r in timed if meets_slo(r, slo))
    window = _window(timed)
    return (met / window if window else None), met / len(timed)


def pooled_gaps(timed: Sequence[RequestResult], itl: BatchedHistogram | None) -> BatchedHistogram:
    """The cell's pooled inter-token gaps: the load generator's pool (`LoadResults.itl`), or, for results
    built by hand (tests, synthetic sessions) that carry their gaps, a pool of those."""
    if itl is not None:
        return itl
    pool = BatchedHistogram()
    for r in timed:
        if r.ok:
            pool.add_group(r.itl_s)
    return pool


def generative_columns(
    timed: Sequence[RequestResult], slo: SloConfig | None, itl: BatchedHistogram | None = None
) -> dict[str, Any]:
    """A cell's token columns over its answered timed requests: TTFT and TPOT percentiles, the true ITL
    percentiles (every gap of every answer, from the pooled histogram `itl`: within 1%), output tokens,
    and goodput against `slo`."""
    ok = [r for r in timed if r.ok]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpot = [r.tpot_s for r in ok if r.tpot_s is not None]
    gaps = pooled_gaps(timed, itl).pooled()
    tokens = [r.output_tokens for r in ok if r.output_tokens is not None]
    window = _window(timed)
    rps, fraction = goodput(timed, slo)
    return {
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p99_s": percentile(ttft, 99),
        "tpot_p50_s": percentile(tpot, 50),
        "tpot_p99_s": percentile(tpot, 99),
        "itl_p50_s": gaps.quantile(0.5),
        "itl_p99_s": gaps.quantile(0.99),
        "output_tokens_mean": sum(tokens) / len(tokens) if tokens else None,
        "output_tokens_per_s": sum(tokens) / window if tokens and window else None,
        "goodput_rps": rps,
        "slo_met_fraction": fraction,
    }


def prompt_columns(setting: CellSetting, results: Sequence[RequestResult]) -> dict[str, Any]:
    """What a cell's inputs and answers say of its prompts (session.schema.PROMPT_CELL_COLUMNS):
    - `distinct_inputs`: how many different inputs its requests sent, warm-up included (by `input_hash`,
      else by index); `inputs_cycled`: whether any was sent more than once (empty when none was sent);
    - `cached_prompt_tokens_mean`: over the answered timed requests whose server said (empty: none did);
    - `output_len_honoured`: with an output length asked for, whether no answered timed request fell short
      of it (fewer tokens than `output_len` and a `finish_reason` other than "length": a server that
      reached the limit but packs several tokens into one event is not short); empty without output_len or
      without any token count; `output_short_requests`: how many fell short."""
    hashes = setting.input_hashes
    sent = [r.input_index for r in results if r.input_index is not None]
    keys = [hashes[i] if i < len(hashes) and hashes[i] is not None else i for i in sent]
    distinct = len(set(keys))
    timed_ok = [r for r in results if not r.warmup and r.ok]
    cached = [r.cached_prompt_tokens for r in timed_ok if r.cached_prompt_tokens is not None]
    asked = setting.cell.output_len
    counted = [r for r in timed_ok if r.output_tokens is not None]
    short = None
    if asked is not None and counted:
        short = sum(
            1
            for r in counted
            if r.output_tokens is not None and r.output_tokens < asked and r.finish_reason != "length"
        )
    return {
        "distinct_inputs": distinct if sent else None,
        "inputs_cycled": distinct < len(sent) if sent else None,
        "cached_prompt_tokens_mean": sum(cached) / len(cached) if cached else None,
        "output_len_honoured": short == 0 if short is not None else None,
        "output_short_requests": short,
    }


def interval_columns(
    timed: Sequence[RequestResult], *, stop_reason: str, itl: BatchedHistogram | None = None
) -> dict[str, Any]:
    """The cell's percentile intervals (95%, `stats.quantile_interval` over the answered timed requests in
    completion order; ITL's from the pooled gaps' batches, `stats.BatchedHistogram.interval`), the
    requests a bounded p99 needs (empty when bounded), the dependence between neighbouring requests, why
    the load ended and the timed requests it took. A bound the sample cannot give is None (empty)."""
    ok = [r for r in timed if r.ok and r.latency_s is not None]
    latency = [r.latency_s for r in ok if r.latency_s is not None]
    row: dict[str, Any] = {}
    p99 = None
    for q in (0.5, 0.9, 0.99):
        iv = quantile_interval(latency, q)
        name = f"p{round(q * 100)}"
        row[f"{name}_lo_s"], row[f"{name}_hi_s"] = iv.lo, iv.hi
        p99 = iv
    assert p99 is not None
    row["p99_n_needed"] = p99.n_needed if latency else None
    row["latency_dependence"] = p99.dependence if len(latency) >= 4 else None
    if timed and (not stop_reason or not ok) and stop_reason != StopReason.INTERRUPTED:
        stop_reason = StopReason.ERRORS  # the load failed, or nothing answered: it ended on its errors
    row["stop_reason"] = stop_reason or None
    row["timed_requests"] = len(timed)
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpot = [r.tpot_s for r in ok if r.tpot_s is not None]
    gaps = pooled_gaps(timed, itl)
    for q in (0.5, 0.99):
        name = f"p{round(q * 100)}"
        for metric, values in (("ttft", ttft), ("tpot", tpot)):
            tok = quantile_interval(values, q) if values else None
            row[f"{metric}_{name}_lo_s"] = tok.lo if tok else None
            row[f"{metric}_{name}_hi_s"] = tok.hi if tok else None
        gap_iv = gaps.interval(q) if gaps.n else None
        row[f"itl_{name}_lo_s"] = gap_iv.lo if gap_iv else None
        row[f"itl_{name}_hi_s"] = gap_iv.hi if gap_iv else None
    return row


def model_name(server_model: str | None, preset_model: str, target_image: str) -> str:
    """The model_name column: what the server says it runs, else the preset's model, else the image."""
    return server_model or preset_model or target_image


def gpu_mode(gpus: int) -> str:
    return "on" if gpus else "off"


def needs_liveness_check(timed: Sequence[RequestResult], load_error: str, oom_kills: int | None) -> bool:
    """Whether the cell went wrong enough that the target may be dead (and must be asked)."""
    return bool(load_error) or any(not r.ok for r in timed) or (oom_kills or 0) > 0


def classify_cell(
    timed: Sequence[RequestResult],
    *,
    load_error: str = "",
    oom_kills: int | None = None,
    alive: bool = True,
    exit_facts: Mapping[str, Any] | None = None,
    memory_gb: float | None = None,
) -> tuple[CellStatus, str]:
    """A finished cell's status and one-line reason. `timed`: its results after warm-up; `load_error`: why
    the load generator itself failed ("" when it did not); `oom_kills`: the sampler's count over the cell
    (None: not read); `alive`: whether the target still answered its readiness path afterwards (only asked
    when `needs_liveness_check`); `exit_facts`: what stopping a dead target reported (exit_code,
    oom_killed, last_logs); `memory_gb`: the cell's memory cap, for the OOM reason."""
    errors = [r for r in timed if not r.ok]
    status, reason = CellStatus.OK, ""
    if load_error:
        status, reason = CellStatus.FAILED, load_error
    oomed = (oom_kills or 0) > 0
    if not alive:
        facts = exit_facts or {}
        if facts.get("oom_killed") or oomed:
            status = CellStatus.OOM
            reason = f"the target was OOM-killed during the cell (memory cap {memory_gb} GiB)"
        elif errors and all(r.outcome == RequestStatus.TIMEOUT for r in errors):
            # hung, not dead (e.g. frozen): its requests timed out and /healthz did not answer
            status = CellStatus.TIMEOUT
            reason = (
                f"the target stopped answering: {len(errors)} of {len(timed)} requests "
                f"timed out and /healthz did not answer; replaced for the next cell"
            )
        else:
            status = CellStatus.CRASHED
            reason = f"the target died during the cell (exit code {facts.get('exit_code')})"
            logs = str(facts.get("last_logs") or "").strip().splitlines()
            if logs:
                reason += f": {logs[-1][:200]}"
    elif errors and not load_error:
        kinds = sorted({(r.error or str(r.status))[:60] for r in errors})
        if all(r.outcome == RequestStatus.TIMEOUT for r in errors):
            status = CellStatus.TIMEOUT
        else:
            status = CellStatus.FAILED if len(errors) == len(timed) else CellStatus.OK
        reason = f"{len(errors)} of {len(timed)} requests failed: {'; '.join(kinds[:3])}"
    if not timed and status == CellStatus.OK:
        status, reason = CellStatus.FAILED, "no timed request finished"
    return status, reason


def setting_columns(setting: CellSetting) -> dict[str, Any]:
    """The cell's settings, the leading columns of both its cells.csv row and its requests.csv rows."""
    cell, enforced, payload = setting.cell, setting.enforced, setting.payload_row
    return {
        "model_name": setting.model_name,
        "cpu_cores": cell.cpus,
        "gpu_mode": gpu_mode(cell.gpus),
        "mem_cap_gb": cell.memory_gb,
        "batch_size": setting.batch_size,
        "token_len": cell.token_len,
        "repeat_idx": cell.repeat_idx,
        "cell_index": cell.index,
        "container_idx": setting.container_idx,
        "host": setting.host,
        "host_class": setting.host_class,
        "input_scale": cell.input_scale,
        "pixels": payload.get("pixels"),
        "height": payload.get("height"),
        "width": payload.get("width"),
        "concurrency": cell.concurrency,
        "rate": cell.rate,
        "gpus": cell.gpus,
        "cpus_enforced": enforced.cpus_enforced if cell.cpus is not None else None,
        "mem_enforced": enforced.memory_enforced if cell.memory_gb is not None else None,
        "gpus_enforced": enforced.gpus_enforced if cell.gpus else None,
        "cpuset": enforced.cpuset,
        "output_len": cell.output_len,
        "shared_prefix_tokens": cell.shared_prefix_tokens,
    }


def request_constants(setting: CellSetting) -> dict[str, Any]:
    """The columns every requests.csv row of the cell shares: its settings and its payload's columns."""
    return {**setting_columns(setting), **setting.payload_row}


def cell_row(
    setting: CellSetting,
    results: Sequence[RequestResult],
    *,
    status: CellStatus,
    reason: str,
    sampled: SamplerSummary | None,
    cold: ColdStart | None,
    measures_cold_start: bool,
    profiling_url: bool,
    load_wall_s: float | None,
    target_facts: Mapping[str, Any] | None = None,
    weight_bytes: int | None = None,
    slo: SloConfig | None = None,
    load_shape: LoadShape | None = None,
    cpu_window: CpuWindow | None = None,
    stop_reason: str = "",
    itl: BatchedHistogram | None = None,
    server_metrics: Mapping[str, Mapping[str, float | None]] | None = None,
) -> dict[str, Any]:
    """The cell's cells.csv row. `results`: all of them, warm-up included; `sampled`: the resource sampler's
    summary (None: no sampler, or it failed); `cold`: its container's cold start (None: not measured);
    `measures_cold_start`: this cell started the container (its first answer ends the cold start); `profiling_url`: a running server, no container;
    `target_facts`: the runtime's facts about the target (image sizes); `slo`: the preset's objectives;
    `load_shape`, `cpu_window`: how the load was sent and who had the CPUs meanwhile, for the saturation
    columns (`load_shape` None: the load never ran).
    `stop_reason` / `itl`: the load generator's (`LoadResults`): why the load ended ("": it failed or never
    ran) and the pooled inter-token gaps (None: pooled here from results that carry theirs);
    `server_metrics`: the scraped metrics' mean and peak
    (`sample.prometheus`; None: not scraped)."""
    timed = [r for r in results if not r.warmup]
    ok_lat = [r.latency_s for r in timed if r.ok and r.latency_s is not None]
    s = summarise(ok_lat)
    overheads = [r.overhead_ms for r in timed if r.ok and r.overhead_ms is not None]
    server = [r.server_total_ms for r in timed if r.ok and r.server_total_ms is not None]
    phases = dict(cold.phases) if cold else {}
    details = cold.details if cold else {}
    facts = target_facts or {}
    return {
        **setting_columns(setting),
        "n": s.n,
        "errors": len(timed) - len(ok_lat),
        "warmup_n": len(results) - len(timed),
        "mean_s": s.mean,
        "std_s": s.std,
        "p50_s": s.p50,
        "p90_s": s.p90,
        "p95_s": s.p95,
        "p99_s": s.p99,
        "max_s": s.max,
        "ci95_low_s": s.ci95_low,
        "ci95_high_s": s.ci95_high,
        **interval_columns(timed, stop_reason=stop_reason, itl=itl),
        "load_wall_s": load_wall_s,
        "throughput_rps": throughput(timed),
        "server_total_ms_mean": sum(server) / len(server) if server else None,
        "overhead_ms_mean": sum(overheads) / len(overheads) if overheads else None,
        "overhead_ms_p50": percentile(overheads, 50),
        "overhead_ms_max": max(overheads) if overheads else None,
        "cold_start_cell": measures_cold_start if not profiling_url else None,
        "cold_start_s": cold_total(phases) if not profiling_url and phases else None,
        "cold_start_wall_s": cold.wall_s if cold else None,
        "image_pull_detail": details.get(ColdStartPhaseName.IMAGE_PULL, ""),
        "image_pull_bytes": facts.get("image_pull_bytes"),
        "image_size_bytes": facts.get("image_size_bytes"),
        "weight_bytes": weight_bytes,
        **{f"{p}_s": phases.get(p) for p in COLD_START_PHASES},
        **(sampled.as_row() if sampled is not None else {}),
        **generative_columns(timed, slo, itl),
        **prompt_columns(setting, results),
        **saturation_row(setting, results, sampled, profiling_url, load_shape, cpu_window),
        **tail_columns(setting, timed, server_metrics),
        **dict.fromkeys(
            ADAPTIVE_COLUMNS
        ),  # why the cell ran: the order's word, merged by the sweep's Emitter
        "status": status,
        "reason": reason,
    }


def saturation_row(
    setting: CellSetting,
    results: Sequence[RequestResult],
    sampled: SamplerSummary | None,
    profiling_url: bool,
    load_shape: LoadShape | None,
    cpu_window: CpuWindow | None,
) -> dict[str, Any]:
    """The cell's saturation columns (`sweep.saturation`): the target's CPU from the sampler, its cap when
    enforced; none judged for a cell whose load never ran."""
    if load_shape is None:
        return not_measured("the load did not run")
    cap = setting.cell.cpus if setting.cell.cpus is not None and setting.enforced.cpus_enforced else None
    used = sampled.mean_cpu_cores if sampled is not None else None
    why = ""
    if used is None:
        why = (
            "--url: the target's CPU is not measured" if profiling_url else "the target's CPU was not sampled"
        )
    return saturation_columns(results, load_shape, cpu_window, TargetCpu(used, cap, why))


# --------------------------------------------------------------------------- the tail, explained (issue 24)

TAIL_FRACTION = 0.10  # "the tail": the slowest 10% of a cell's timed requests (at least one)
BINDS_SHARE = 0.5  # the quota "binds" when at least half of the tail was throttled


def _throttled(r: RequestResult) -> bool | None:
    """Whether the cgroup was throttled while the request was in flight; None: not measured."""
    if r.throttled_periods is None:
        return None
    return r.throttled_periods > 0


def tail_columns(
    setting: CellSetting,
    timed: Sequence[RequestResult],
    server_metrics: Mapping[str, Mapping[str, float | None]] | None = None,
) -> dict[str, Any]:
    """What explains the cell's tail (session.schema.TAIL_CELL_COLUMNS), over its answered timed requests:
    CPU time per request (`cpu_ms_p50`, `cpu_ms_mean`), the share of the slowest TAIL_FRACTION that were
    throttled, the p99 of the throttled and of the unthrottled requests, the server's mean queue time,
    the verdict in words (`tail_verdict`) and the scraped server metrics (a JSON object). None where not
    measured: no per-request CPU (turned off, --url), no Server-Timing queue, no scrape."""
    import json
    import math

    ok = [r for r in timed if r.ok and r.latency_s is not None]
    cpu = [r.cpu_ms for r in ok if r.cpu_ms is not None]
    queue = [r.queue_ms for r in ok if r.queue_ms is not None]
    known = [r for r in ok if _throttled(r) is not None]
    share = p99_thr = p99_unthr = None
    if known:
        by_latency = sorted(known, key=lambda r: r.latency_s or 0.0, reverse=True)
        slow = by_latency[: max(1, math.ceil(TAIL_FRACTION * len(by_latency)))]
        share = sum(1 for r in slow if _throttled(r)) / len(slow)
        thr = [r.latency_s for r in known if _throttled(r) and r.latency_s is not None]
        unthr = [r.latency_s for r in known if not _throttled(r) and r.latency_s is not None]
        p99_thr, p99_unthr = percentile(thr, 99), percentile(unthr, 99)
    return {
        "queue_ms_mean": sum(queue) / len(queue) if queue else None,
        "cpu_ms_p50": percentile(cpu, 50),
        "cpu_ms_mean": sum(cpu) / len(cpu) if cpu else None,
        "tail_throttled_share": share,
        "p99_throttled_s": p99_thr,
        "p99_unthrottled_s": p99_unthr,
        "tail_verdict": tail_verdict(ok, setting.cell.cpus),
        "server_metrics": json.dumps(server_metrics, sort_keys=True) if server_metrics else None,
    }


def tail_verdict(ok: Sequence[RequestResult], cpu_cap: float | None) -> str | None:
    """One line saying what the cell's tail was: "p99 +48 ms over p50: 9 of the 10 slowest requests were
    throttled — the 0.5-CPU quota binds"; the slowest requests' queue time when the server reports one.
    None when neither throttling nor queue time was measured, or below two answers."""
    import math

    from tui_profiler.formatting import latency, number

    lat = [r.latency_s for r in ok if r.latency_s is not None]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    known = [r for r in ok if _throttled(r) is not None]
    queued = [r for r in ok if r.queue_ms is not None]
    if p50 is None or p99 is None or len(lat) < 2 or not (known or queued):
        return None
    head = f"p99 +{latency(max(0.0, p99 - p50))} over p50"
    by_latency = sorted(ok, key=lambda r: r.latency_s or 0.0, reverse=True)
    slow = by_latency[: max(1, math.ceil(TAIL_FRACTION * len(by_latency)))]
    parts: list[str] = []
    if known:
        slow_known = [r for r in slow if _throttled(r) is not None]
        k = sum(1 for r in slow_known if _throttled(r))
        n = len(slow_known)
        quota = f"the {number(cpu_cap)}-CPU quota" if cpu_cap is not None else "the CPU quota"
        slowest = "slowest request was" if n == 1 else f"{n} slowest requests were"
        if k == 0:
            anywhere = sum(1 for r in known if _throttled(r))
            also = f" ({anywhere} of all {len(known)} were)" if anywhere else ""
            none = "the slowest request was not" if n == 1 else f"none of the {n} slowest requests was"
            parts.append(f"{none} throttled{also} — not {quota}")
        elif n and k / n >= BINDS_SHARE:
            parts.append(f"{k} of the {slowest} throttled — {quota} binds")
        else:
            parts.append(f"{k} of the {slowest} throttled — throttling explains part of the tail")
    slow_queue = [r.queue_ms for r in slow if r.queue_ms is not None]
    if slow_queue:
        mean_q = sum(slow_queue) / len(slow_queue) / 1000.0
        parts.append(f"the slowest waited {latency(mean_q)} in the server's queue on average")
    return f"{head}: " + "; ".join(parts)
