"""What the pieces of one sweep share: the preset, the stop control, the event stream, and where cells run.

`Emitter` is the sweep's one way out: every event goes through it to the caller's consumers (the session
writer, the views), and it keeps the finished cells' statuses, so the drivers, the ETA and the session's
end all read one record. `Placement` is where a container group runs (this machine, or a fleet host):
its runtime, and the host its events and rows name. `ImageResolver` resolves (or builds) the target
image once per session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tui_profiler.events import CellFinished, Emit, Event, Level, LogMessage, RequestDone
from tui_profiler.runtime.base import TargetFailed
from tui_profiler.session.schema import CellStatus
from tui_profiler.sweep import targets
from tui_profiler.sweep.control import StopControl, Stopped, in_daemon_thread

if TYPE_CHECKING:
    from tui_profiler.config.model import Preset
    from tui_profiler.load.sources import InputSources
    from tui_profiler.load.template import RequestTemplate
    from tui_profiler.runtime.base import Runtime


class Emitter:
    """The caller's consumers behind one call. A consumer's bug must not lose measurements: its error
    becomes a LogMessage; an OSError (the session writer's disk is full) stops the sweep."""

    def __init__(self, emit: Emit, finished: dict[int, CellStatus] | None = None) -> None:
        self._emit = emit
        self.finished: dict[int, CellStatus] = dict(finished or {})  # cell -> status, resumed ones too
        self.on_finished: list[Callable[[CellFinished], None]] = []
        self.on_request: list[Callable[[RequestDone], None]] = []  # a search's judge (sweep.search)
        # the order's word on why each cell ran (cells.csv `chosen_because` and the adaptive prediction)
        self.explain: Callable[[int], dict[str, Any]] | None = None

    def __call__(self, event: Event) -> None:
        if self.on_request and type(event) is RequestDone:
            for observe in self.on_request:
                observe(event)
        if isinstance(event, CellFinished) and self.explain is not None:
            event = replace(event, summary={**event.summary, **self.explain(event.cell_index)})
        if isinstance(event, CellFinished) and event.status != CellStatus.INTERRUPTED:
            self.finished[event.cell_index] = event.status
            for listener in self.on_finished:
                listener(event)
        try:
            self._emit(event)
        except OSError:
            raise
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._emit(LogMessage("error", f"event consumer failed on {type(event).__name__}: {exc}"))


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a container group runs: `runtime` (None: a running server at --url), `host` and `host_class`
    for its cells' rows, `event_host` for its events ("" on a one-host run, the host's name on a fleet)."""

    emitter: Emitter
    runtime: Runtime | None
    host: str
    host_class: str = ""
    event_host: str = ""

    def emit(self, event: Event) -> None:
        if self.event_host and not event.host:
            event = replace(event, host=self.event_host)
        self.emitter(event)

    def log(self, level: Level, text: str, cell_index: int | None = None) -> None:
        self.emit(LogMessage(level, text, cell_index))


@dataclass(slots=True)
class SweepContext:
    """One sweep's shared state. `url`: profiling a running server (no container, no cold start)."""

    preset: Preset
    n_cells: int
    template: RequestTemplate
    images: ImageResolver
    control: StopControl = field(default_factory=StopControl)
    url: str | None = None
    sources: InputSources | None = None
    session_id: str = ""
    parallel: int = 1  # container groups run at once (a fleet's hosts)
    model_facts: dict[str, Any] = field(default_factory=dict)  # the server's /info (our model server)
    cell_walls: list[float] = field(default_factory=list)
    open_ended: bool = False  # a search: n_cells is only an upper bound, so no remaining time is known

    def eta(self, finished: int) -> float | None:
        """The remaining session time, from the cells' mean wall time so far."""
        if not self.cell_walls or self.open_ended:
            return None
        remaining = self.n_cells - finished
        return remaining * (sum(self.cell_walls) / len(self.cell_walls)) / max(1, self.parallel)

    def template_model(self) -> str:
        return self.template.model_name or self.preset.model


class ImageResolver:
    """The docker runtime's image, resolved (or built) once per session; a failure is kept and fails
    every later container group the same way."""

    def __init__(self, preset: Preset, control: StopControl) -> None:
        self.preset = preset
        self.control = control
        self._image: str | None = None
        self._error: TargetFailed | None = None
        self._lock = asyncio.Lock()  # fleet workers ask at once: one build

    async def resolve(self, place: Placement) -> str:
        async with self._lock:
            return await self._resolve_once(place)

    async def _resolve_once(self, place: Placement) -> str:
        if self._image is not None:
            return self._image
        if self._error is not None:
            raise self._error
        try:
            source = targets.image_source(self.preset)
            if isinstance(source, targets.GivenImage):
                self._image = source.name
            else:
                place.log("info", source.note)
                self._image = await self.control.interruptible(in_daemon_thread(source.build))
        except Stopped:
            raise
        except TargetFailed as exc:
            self._error = exc
            raise
        except Exception as exc:
            self._error = targets.image_failure(exc)
            raise self._error from exc
        return self._image
