"""The events the engine emits: the only contract between the engine and its consumers.

A sweep produces a stream of these (see `tui_profiler.sweep`) and writes no file: the session writer
(`tui_profiler.session.store.SessionWriter`), the headless progress display and the TUI each consume the
same stream; none of them reaches into the engine otherwise. Replaying a recorded stream into a fresh
writer reproduces the session's files.
Values that could not be measured are `None` ('not available'), never 0.

Every event has a `host`: the fleet host it comes from ("" on a one-host run). On a fleet the measuring
side runs next to its target and sends its events as JSON lines (`event_to_json` / `event_from_json`);
the local side only fills in `host`, so consumers cannot tell a remote cell from a local one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, Literal

Level = Literal["debug", "info", "warning", "error"]


class CellStatus(StrEnum):
    """How a cell ended (cells.csv `status`). Every one but OK is a failure that is recorded, not raised."""

    OK = "ok"
    FAILED = "failed"  # requests failed, or none finished
    OOM = "oom"  # the target was OOM-killed (memory cap)
    TIMEOUT = "timeout"  # the target stopped answering, or readiness timed out
    CRASHED = "crashed"  # the target died
    START_FAILED = "start_failed"  # the runtime could not start it (engine unreachable, ...)
    BUILD_FAILED = "build_failed"  # the target image could not be built
    PULL_FAILED = "pull_failed"  # the target image could not be pulled
    CREATE_FAILED = "create_failed"  # the engine refused to create the container
    PORT_CONFLICT = "port_conflict"  # no free loopback port after retries
    GPU_UNAVAILABLE = "gpu_unavailable"  # a GPU was asked for and the engine or driver refused it
    REFUSED = "refused"  # the spec asks for something never done (e.g. mounting the Docker socket)
    INTERRUPTED = "interrupted"  # stopped by the user (no cells.csv row)


class SessionStatus(StrEnum):
    """How a session ended (meta.json `status`, `SessionFinished.status`)."""

    RUNNING = "running"
    OK = "ok"  # every cell ok
    FAILED = "failed"  # some cell did not end ok
    INTERRUPTED = "interrupted"  # stopped; resumable


@dataclass(frozen=True, slots=True)
class SessionStarted:
    session_id: str
    session_dir: str
    preset_name: str
    runtime: str  # "docker" | "process" | "url"
    runtime_reason: str  # why this runtime was chosen, said plainly on screen and in meta.json
    n_cells: int
    resumed_cells: int = 0  # cells already finished in a resumed session
    host: str = ""
    resume: bool = False  # the session folder exists: the writer re-opens it (see `session.store`)
    meta: dict[str, Any] = field(default_factory=dict)  # meta.json's fields (a resume: the ones it changes)


@dataclass(frozen=True, slots=True)
class CellStarted:
    cell_index: int
    n_cells: int
    cell: dict[
        str, Any
    ]  # plan.Cell as a dict: cpus, memory_gb, gpus, input_scale, token_len, concurrency, ...
    eta_s: float | None = None  # estimate of the remaining session time, when one exists
    host: str = ""


@dataclass(frozen=True, slots=True)
class ColdStartPhase:
    """One phase of a container's cold start finished (image_pull, create, start, server_boot, model_load,
    ready, first_request)."""

    cell_index: int
    phase: str
    seconds: float | None
    detail: str = ""
    host: str = ""


@dataclass(frozen=True, slots=True)
class ColdStartDone:
    cell_index: int
    phases: dict[str, float | None]  # phase -> seconds, in order
    total_s: float
    enforced: dict[str, Any] = field(default_factory=dict)  # the caps actually enforced, per cap
    host: str = ""


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
    host: str = ""


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
    host: str = ""


@dataclass(frozen=True, slots=True)
class ServerMetrics:
    """One scrape of the target's Prometheus metrics (`[target] metrics`, `sample.prometheus`): rows of
    [metric, labels as JSON ("" when none), value]; counters already turned into rates (":rate")."""

    cell_index: int
    t_s: float  # seconds since the cell's load began
    rows: list[list[Any]] = field(default_factory=list)
    host: str = ""


@dataclass(frozen=True, slots=True)
class CellFinished:
    cell_index: int
    status: CellStatus
    reason: str
    summary: dict[str, Any]  # the cells.csv row
    host: str = ""


@dataclass(frozen=True, slots=True)
class CapacityFound:
    """A capacity search (`load.search = "slo"`) ended for one resource configuration and input size: the
    largest load that met the preset's [slo], as its capacity.csv row (`session.schema.CAPACITY_COLUMNS`)."""

    row: dict[str, Any]
    host: str = ""


@dataclass(frozen=True, slots=True)
class LogMessage:
    level: Level
    text: str
    cell_index: int | None = None
    host: str = ""


@dataclass(frozen=True, slots=True)
class MetaUpdated:
    """Facts about the session learnt while it runs (a fleet host dropped): meta.json's changed fields."""

    fields: dict[str, Any]
    host: str = ""


@dataclass(frozen=True, slots=True)
class SessionFinished:
    session_dir: str
    status: SessionStatus
    n_cells: int
    n_failed: int
    wall_s: float
    host: str = ""
    cells_finished: int = 0  # cells with a cells.csv row, resumed ones included
    cells_remaining: list[int] = field(default_factory=list)  # cells a resume would run


Event = (
    SessionStarted
    | CellStarted
    | ColdStartPhase
    | ColdStartDone
    | RequestDone
    | ResourceSample
    | ServerMetrics
    | CellFinished
    | CapacityFound
    | LogMessage
    | MetaUpdated
    | SessionFinished
)


Emit = Callable[[Event], None]  # a consumer of the stream


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        SessionStarted,
        CellStarted,
        ColdStartPhase,
        ColdStartDone,
        RequestDone,
        ResourceSample,
        ServerMetrics,
        CellFinished,
        CapacityFound,
        LogMessage,
        MetaUpdated,
        SessionFinished,
    )
}


def _plain(value: Any) -> Any:
    """JSON has no NaN or infinity: a value that is not a finite number travels as None (not available)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def event_to_json(event: Event) -> str:
    """One event as one JSON line (no newline inside): {"type": "RequestDone", ...its fields}."""
    return json.dumps({"type": type(event).__name__, **_plain(asdict(event))}, default=str)


class EventDecodeError(ValueError):
    """A line that is not an event of this contract (the measuring side's stray output, a newer peer)."""


def event_from_json(line: str | bytes, host: str | None = None) -> Event:
    """The event a line of `event_to_json` holds; `host` (when given) replaces the event's own."""
    try:
        data = json.loads(line)
        cls = EVENT_TYPES[data.pop("type")]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EventDecodeError(f"not an event line: {str(line)[:120]!r}") from exc
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise EventDecodeError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    if "status" in data and cls is CellFinished:
        data["status"] = CellStatus(data["status"])
    elif "status" in data and cls is SessionFinished:
        data["status"] = SessionStatus(data["status"])
    try:
        event = cls(**data)
    except TypeError as exc:
        raise EventDecodeError(f"{cls.__name__}: {exc}") from exc
    return replace(event, host=host) if host is not None else event
