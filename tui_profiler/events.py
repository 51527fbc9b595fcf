"""The events the engine emits: the only contract between the engine and its consumers.

A sweep produces a stream of these (see `tui_profiler.sweep`). The session store, the headless progress
display and the TUI each consume the same stream; none of them reaches into the engine otherwise.
Values that could not be measured are `None` ('not available'), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tui_profiler.session.schema import CellStatus, SessionStatus

Level = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class SessionStarted:
    session_id: str
    session_dir: str
    preset_name: str
    runtime: str  # "docker" | "process" | "url"
    runtime_reason: str  # why this runtime was chosen, said plainly on screen and in meta.json
    n_cells: int
    resumed_cells: int = 0  # cells already finished in a resumed session


@dataclass(frozen=True, slots=True)
class CellStarted:
    cell_index: int
    n_cells: int
    cell: dict[
        str, Any
    ]  # plan.Cell as a dict: cpus, memory_gb, gpus, input_scale, token_len, concurrency, ...
    eta_s: float | None = None  # estimate of the remaining session time, when one exists


@dataclass(frozen=True, slots=True)
class ColdStartPhase:
    """One phase of a container's cold start finished (image_pull, create, start, server_boot, model_load,
    ready, first_request)."""

    cell_index: int
    phase: str
    seconds: float | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ColdStartDone:
    cell_index: int
    phases: dict[str, float | None]  # phase -> seconds, in order
    total_s: float
    enforced: dict[str, Any] = field(default_factory=dict)  # the caps actually enforced, per cap


@dataclass(frozen=True, slots=True)
class RequestDone:
    """One timed request finished (warm-up requests too, marked). High rate: consumers must not block."""

    cell_index: int
    t_s: float | None  # when the answer arrived, seconds since the cell's load phase began (None: no answer)
    latency_s: float | None
    ok: bool
    warmup: bool
    status: int | None
    error: str = ""
    server_total_ms: float | None = None
    overhead_ms: float | None = None
    row: dict[str, Any] = field(default_factory=dict)  # the full requests.csv row


@dataclass(frozen=True, slots=True)
class ResourceSample:
    """One resource sample of the running target. High rate: consumers may drop stale ones."""

    cell_index: int
    t_s: float
    cpu_cores: float | None = None
    cpu_cap: float | None = None
    mem_bytes: int | None = None
    mem_cap_bytes: int | None = None
    mem_peak_bytes: int | None = None
    throttled_periods: int | None = None
    throttled_s: float | None = None
    gpu_util_pct: float | None = None
    vram_bytes: int | None = None
    source: str = ""  # "cgroup-v1", "cgroup-v2", "docker-stats", "nvml", ...


@dataclass(frozen=True, slots=True)
class CellFinished:
    cell_index: int
    status: CellStatus
    reason: str
    summary: dict[str, Any]  # the cells.csv row


@dataclass(frozen=True, slots=True)
class LogMessage:
    level: Level
    text: str
    cell_index: int | None = None


@dataclass(frozen=True, slots=True)
class SessionFinished:
    session_dir: str
    status: SessionStatus
    n_cells: int
    n_failed: int
    wall_s: float


Event = (
    SessionStarted
    | CellStarted
    | ColdStartPhase
    | ColdStartDone
    | RequestDone
    | ResourceSample
    | CellFinished
    | LogMessage
    | SessionFinished
)
