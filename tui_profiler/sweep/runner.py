"""The sweep: run every cell of a plan against real targets and emit events; the session store writes them.

For each container group (one resource config and repetition, see `tui_profiler.plan`) the runner starts
the target through the runtime — each cold-start phase becomes a `ColdStartPhase` event — and reuses that
container for the group's input sizes and load levels: the cold start is measured once per container, in
the group's first cell, whose first request is timed as the phase `first_request`. For each cell it builds
the payload once, starts the resource sampler, runs the load (every request a `RequestDone` and a row of
requests.csv), stops the sampler and writes the cell's summary row. The target is stopped in a `finally`,
always.

Failure is data: a target that cannot start (OOM kill while loading, crash, readiness timeout, image build
failure) or dies during a cell ends that cell with a status and a reason, and the sweep goes on.

Stopping: `request_stop()` (SIGINT / SIGTERM / SIGHUP in the CLI) cancels whatever is in progress; the
target is removed, files are flushed, the half-done cell gets no cells.csv row, and the session can be
resumed (`SweepRunner(..., resume=SESSION_DIR)`), which redoes that cell from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tui_profiler.config.files import preset_summary
from tui_profiler.config.model import FleetConfig, Preset
from tui_profiler.events import (
    CellFinished,
    CellStarted,
    ColdStartDone,
    ColdStartPhase,
    Event,
    Level,
    LogMessage,
    RequestDone,
    ResourceSample,
    SessionFinished,
    SessionStarted,
)
from tui_profiler.fleet.remote import HostLost
from tui_profiler.host import host_facts
from tui_profiler.plan import Cell, build_plan
from tui_profiler.runtime.base import (
    EnforcedCaps,
    ReadinessProbe,
    RunningTarget,
    Runtime,
    TargetFailed,
)
from tui_profiler.runtime.common import owner_id
from tui_profiler.runtime.docker import docker_engine_version
from tui_profiler.session.reader import load_meta, session_summary
from tui_profiler.session.schema import CellStatus, ColdStartPhaseName, SessionStatus
from tui_profiler.session.store import BoundRows, SessionStore
from tui_profiler.sweep import targets
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

if TYPE_CHECKING:
    from tui_profiler.fleet.remote import HostSession
    from tui_profiler.load.client import RequestResult
    from tui_profiler.load.patterns import LoadPattern
    from tui_profiler.load.template import RequestTemplate
    from tui_profiler.sample import SamplerSummary
    from tui_profiler.sweep.schedule import Unit, UnitQueue

Emit = Callable[[Event], None]
T = TypeVar("T")


# The input columns of a request that never picked an input (an open-loop arrival dropped unsent).
_NO_INPUT: dict[str, Any] = {"input_index": None, "input_hash": None, "body_bytes": None}


class _Stopped(Exception):
    """The user asked to stop (request_stop)."""


@dataclass(frozen=True, slots=True)
class OnHost:
    """The fleet host the current task runs cells on: its events and cells.csv rows carry its name."""

    name: str
    host_class: str
    runtime: Runtime


# Set by each fleet host's worker task (tasks copy their context), so code shared with one-host runs
# never passes a host around.
_ON_HOST: contextvars.ContextVar[OnHost | None] = contextvars.ContextVar("tui_profiler_on_host", default=None)


async def _in_daemon_thread(fn: Callable[[], T]) -> T:
    """Run a long blocking call (an image build) in a daemon thread. Unlike asyncio.to_thread, a stop
    request does not have to wait for it: the interpreter's exit does not join a daemon thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def succeed(value: T) -> None:
        if not future.done():
            future.set_result(value)

    def fail(exc: BaseException) -> None:
        if not future.done():
            future.set_exception(exc)

    def work() -> None:
        try:
            value = fn()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(fail, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(succeed, value)

    threading.Thread(target=work, name="tui-profiler-image", daemon=True).start()
    return await future


class SweepRunner:
    """Runs a preset's plan. `runtime`: a Runtime, a runtime name ('docker' | 'process'), or None (docker
    when an engine is reachable, else process). `url`: profile an already running server (no container,
    no cold start, no resource caps; the same CSVs)."""

    def __init__(
        self,
        preset: Preset,
        *,
        runtime: Runtime | str | None = None,
        output_dir: str | os.PathLike[str] = "output",
        resume: str | os.PathLike[str] | None = None,
        url: str | None = None,
        fleet: FleetConfig | None = None,
    ) -> None:
        self.preset = preset
        # several test boxes (`run --hosts`, or the preset's [fleet]); None: this machine only
        self.fleet = fleet if fleet is not None else preset.fleet
        self._hosts: list[HostSession] = []
        self._runtime_arg = runtime
        self.runtime: Runtime | None = None
        self.runtime_reason = ""
        self.output_dir = Path(output_dir)
        self.resume = Path(resume) if resume else None
        self.url = url.rstrip("/") if url else None
        self.store: SessionStore | None = None
        self.plan: list[Cell] = build_plan(targets.url_preset(preset) if url else preset)
        from tui_profiler.load.sources import open_sources

        # the user's own input files, checked now: a bad one is a PresetError before any container starts
        self._sources = open_sources(preset)
        self._stop_requested = False
        self._current: set[asyncio.Future[Any]] = set()  # what a stop cancels (one per busy host)
        # the test box each cell ran on, for cells.csv (a fleet worker sets its own: see `_on_host`)
        self.host_name = os.uname().nodename
        self.host_class = ""
        self._emit: Emit = lambda e: None
        self._image: str | None = None
        self._image_error: TargetFailed | None = None
        self._image_lock = asyncio.Lock()
        self._model_facts: dict[str, Any] = {}  # the server's /info (our own model server only)
        self._template: RequestTemplate | None = None
        self._cell_walls: list[float] = []

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    @property
    def session_dir(self) -> Path | None:
        return self.store.dir if self.store else None

    # ------------------------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Graceful stop: cancel what is running, remove the target, flush files; the session stays
        resumable. Safe to call from a signal handler on the loop's thread."""
        self._stop_requested = True
        for task in list(self._current):
            if not task.done():
                task.cancel()

    async def _interruptible(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._stop_requested:
            coro.close()
            raise _Stopped()
        task = asyncio.ensure_future(coro)
        self._current.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if self._stop_requested:
                raise _Stopped() from None
            raise
        finally:
            self._current.discard(task)

    # ------------------------------------------------------------------------------------ run

    async def run(self, emit: Emit) -> SessionFinished:
        wall0 = time.perf_counter()
        self._emit = emit
        status = SessionStatus.OK
        n_failed = 0
        await self._choose_runtime()
        uses_docker = self.runtime is not None and self.runtime.name == "docker"
        facts, engine_version = await asyncio.gather(  # both wait on other processes: at once
            asyncio.to_thread(host_facts),
            asyncio.to_thread(docker_engine_version)
            if uses_docker and not self.resume
            else asyncio.sleep(0, "not used"),
        )
        if self.resume:
            self._check_resume_plan()
            self.store = await asyncio.to_thread(SessionStore.resume, self.resume)
        else:
            meta = {
                "preset": preset_summary(self.preset),
                "preset_toml": self._preset_toml(),
                "runtime": self.runtime.name if self.runtime else "url",
                "runtime_reason": self.runtime_reason,
                "url": self.url,
                "plan": [c.as_dict() for c in self.plan],
                **facts,
                "engine_version": engine_version,
                **self._fleet_meta(),
                "readiness_poll_interval_s": ReadinessProbe().interval_s,
                "cold_start": "measured once per container (resource config and repetition); the container "
                "is reused across that config's input sizes and load levels",
                "status": SessionStatus.RUNNING,
            }
            self.store = await asyncio.to_thread(SessionStore.create, self.output_dir, self.preset.name, meta)
        store = self.store
        store.update_meta(owner=owner_id(), status=SessionStatus.RUNNING)
        done = set(store.finished_cells)
        todo = [c for c in self.plan if c.index not in done]
        self._emit_safe(
            SessionStarted(
                session_id=store.session_id,
                session_dir=str(store.dir),
                preset_name=self.preset.name,
                runtime=self.runtime.name if self.runtime else "url",
                runtime_reason=self.runtime_reason,
                n_cells=len(self.plan),
                resumed_cells=len(done),
            )
        )
        if done:
            self._log(
                "info",
                f"resuming: {len(done)} of {len(self.plan)} cells already finished; "
                f"{len(todo)} to run (rows of a cell cut short were moved to *.partial.csv)",
            )
        await self._clean_orphans()
        try:
            from tui_profiler.load.template import template_for

            self._template = template_for(self.preset)  # the preset's [request], or our own server's
            if self._hosts:
                n_failed += await self._run_fleet(todo)
            for _, group in itertools.groupby([] if self._hosts else todo, key=lambda c: c.group):
                if self._stop_requested:
                    break
                n_failed += await self._run_group(list(group))
            if self._stop_requested:
                status = SessionStatus.INTERRUPTED
        except _Stopped:
            status = SessionStatus.INTERRUPTED
        except asyncio.CancelledError:
            status = SessionStatus.INTERRUPTED
            raise
        except OSError as exc:  # e.g. the output disk is full: stop with a clear error
            status = SessionStatus.FAILED
            self._log(
                "error",
                f"session stopped: {exc.strerror or exc} ({getattr(exc, 'filename', '') or store.dir})",
            )
        finally:
            remaining = [c.index for c in self.plan if c.index not in store.finished_cells]
            if status == SessionStatus.OK and n_failed:
                status = SessionStatus.FAILED
            wall = time.perf_counter() - wall0
            await asyncio.shield(self._remove_leftovers(store.session_id))
            with contextlib.suppress(OSError):
                store.update_meta(
                    status=status,
                    cells_finished=len(store.finished_cells),
                    cells_remaining=remaining,
                    last_wall_s=wall,
                )
            store.close()
        rows = session_summary(store.dir)  # the whole session, resumed parts included
        n_failed_total = sum(1 for r in rows if r.get("status") != CellStatus.OK)
        if status == SessionStatus.OK and n_failed_total:
            status = SessionStatus.FAILED
        finished = SessionFinished(
            session_dir=str(store.dir),
            status=status,
            n_cells=len(self.plan),
            n_failed=n_failed_total,
            wall_s=time.perf_counter() - wall0,
        )
        self._emit_safe(finished)
        return finished

    def _check_resume_plan(self) -> None:
        """Resuming with a preset whose plan differs would mix two sweeps in one session: refuse."""
        assert self.resume is not None
        try:
            saved = load_meta(self.resume).get("plan")
        except (OSError, ValueError) as exc:
            raise ValueError(f"--resume {self.resume}: not a readable session ({exc})") from None
        if saved is not None and saved != [c.as_dict() for c in self.plan]:
            raise ValueError(
                f"--resume {self.resume}: the preset's plan differs from the session's "
                f"({len(self.plan)} cells vs {len(saved)}); resume without a preset or --set"
            )

    async def _choose_runtime(self) -> None:
        if self.fleet is not None and not self.url and self._runtime_arg is None:
            from tui_profiler.sweep.schedule import open_hosts

            self._hosts = await open_hosts(self.fleet, self.preset, self._log)
            self.runtime = self._hosts[0].runtime
            self.host_name = ""  # a cell that no host ran (every host dropped) names none
            names = ", ".join(f"{h.name} ({h.config.url})" for h in self._hosts)
            self.runtime_reason = (
                f"docker: a fleet of {len(self._hosts)} engine(s): {names}; each runs one resource "
                "configuration at a time, measured next to its target"
            )
            return
        if self.url:
            self.runtime, self.runtime_reason = None, f"--url {self.url}: a running server, no container"
            return
        arg = self._runtime_arg
        if arg is not None and not isinstance(arg, str):
            self.runtime, self.runtime_reason = arg, f"{arg.name} runtime given by the caller"
            return
        from tui_profiler.runtime import choose_runtime

        self.runtime, self.runtime_reason = await asyncio.to_thread(choose_runtime, arg)

    async def _remove_leftovers(self, session_id: str) -> None:
        """Remove whatever this session's label is still on: a target that could not be stopped while the
        engine was unreachable (it may be back by now)."""
        runtimes: list[Runtime] = [h.runtime for h in self._hosts] or ([self.runtime] if self.runtime else [])
        await asyncio.gather(*(self._remove_leftovers_on(r, session_id) for r in runtimes))

    async def _remove_leftovers_on(self, runtime: Runtime, session_id: str) -> None:
        n = 0
        for attempt in range(5):  # an engine restart takes seconds: give it ~10 s to come back
            try:
                n = await runtime.cleanup_session(session_id)
                break
            except Exception as exc:
                if attempt == 4 or self._stop_requested:
                    self._log(
                        "warning",
                        f"could not check for this session's leftover targets ({exc}); the next "
                        "run or `tui-profiler clean` removes them",
                    )
                    return
                await asyncio.sleep(2)
        if n:
            self._log("warning", f"removed {n} target(s) of this session that could not be stopped earlier")

    async def _clean_orphans(self) -> None:
        runtimes: list[Runtime] = [h.runtime for h in self._hosts] or ([self.runtime] if self.runtime else [])
        for runtime in runtimes:
            await self._clean_orphans_on(runtime)

    async def _clean_orphans_on(self, runtime: Runtime) -> None:
        try:
            removed = await runtime.remove_orphans()
        except Exception as exc:
            self._log("warning", f"could not look for targets left by a killed run: {exc}")
            return
        if removed:
            self._log(
                "warning", f"removed {len(removed)} target(s) left by a killed run: {', '.join(removed)}"
            )

    def _emit_safe(self, event: Event) -> None:
        on_host = _ON_HOST.get()
        if on_host is not None and not event.host:
            event = replace(event, host=on_host.name)
        try:
            self._emit(event)
        except Exception as exc:  # a consumer's bug must not lose measurements
            with contextlib.suppress(Exception):
                self._emit(LogMessage("error", f"event consumer failed on {type(event).__name__}: {exc}"))

    def _log(self, level: Level, text: str, cell_index: int | None = None) -> None:
        self._emit_safe(LogMessage(level, text, cell_index))

    # ------------------------------------------------------------------------------------ groups

    async def _resolve_image(self) -> str:
        """The docker runtime's image, resolved (or built) once per session; a failure is kept and fails
        every later group the same way."""
        async with self._image_lock:  # fleet workers ask at once: one build
            return await self._resolve_image_once()

    async def _resolve_image_once(self) -> str:
        if self._image is not None:
            return self._image
        if self._image_error is not None:
            raise self._image_error
        try:
            source = targets.image_source(self.preset)
            if isinstance(source, targets.GivenImage):
                self._image = source.name
            else:
                self._log("info", source.note)
                self._image = await self._interruptible(_in_daemon_thread(source.build))
        except _Stopped:
            raise
        except TargetFailed as exc:
            self._image_error = exc
            raise
        except Exception as exc:
            self._image_error = targets.image_failure(exc)
            raise self._image_error from exc
        return self._image

    async def _run_group(self, cells: list[Cell]) -> int:
        """Run one container group; returns the number of failed cells."""
        assert self.store is not None
        failed = 0
        target: RunningTarget | None = None
        cold: ColdStart | None = None  # the cold start of the current container
        start_failure: TargetFailed | None = None
        container_idx = cells[0].group
        try:
            for cell in cells:
                if self._stop_requested:
                    raise _Stopped()
                t_cell = time.perf_counter()
                self._emit_safe(CellStarted(cell.index, len(self.plan), cell.as_dict(), self._eta()))
                fresh = False
                if target is None and start_failure is None:
                    try:
                        target, cold = await self._start_target(cell)
                        fresh = True
                    except TargetFailed as exc:
                        start_failure = exc
                        cold = ColdStart(phases=dict(exc.phases))
                if start_failure is not None:
                    first_cell = cells[0].index if cell is not cells[0] else None
                    reason = (
                        start_failure.reason
                        if first_cell is None
                        else f"{start_failure.reason} (container did not start, see cell {first_cell})"
                    )
                    self._finish_cell(
                        self._setting(cell, EnforcedCaps(), container_idx),
                        [],
                        status=start_failure.status,
                        reason=reason,
                        sampled=None,
                        cold=cold,
                        fresh=cell is cells[0],
                        load_wall_s=None,
                    )
                    failed += 1
                    continue
                assert target is not None and cold is not None
                status, target_dead = await self._run_cell(cell, target, cold, fresh, container_idx)
                if status != CellStatus.OK:
                    failed += 1
                if target_dead:  # the next cell gets a fresh container (and its own cold start)
                    await self._stop_target(target)
                    target = None
                self._cell_walls.append(time.perf_counter() - t_cell)
        finally:
            if target is not None:
                await asyncio.shield(self._stop_target(target))
        return failed

    async def run_unit(self, cells: list[Cell], emit: Emit, store: SessionStore) -> int:
        """Run one container group's cells against this runner's runtime, writing to `store`: the measuring
        side of a fleet unit (`tui_profiler.sweep.measure`). Returns the number of failed cells."""
        self._emit = emit
        self.store = store
        await self._choose_runtime()
        from tui_profiler.load.template import template_for

        self._template = template_for(self.preset)
        try:
            return await self._run_group(cells)
        except _Stopped:
            return 0

    # ------------------------------------------------------------------------------------ fleet

    def _fleet_meta(self) -> dict[str, Any]:
        if not self._hosts or self.fleet is None:
            return {}
        return {
            "fleet": self.fleet.model_dump(),
            "hosts": {h.name: h.facts for h in self._hosts},
        }

    async def _run_fleet(self, todo: list[Cell]) -> int:
        """Spread the units (resource configurations) over the hosts, one unit per host at a time; a unit
        whose host drops goes back in the queue for another host (`fleet.max_tries` in all)."""
        assert self.fleet is not None
        from tui_profiler.sweep.schedule import UnitQueue

        queue = UnitQueue(
            [list(g) for _, g in itertools.groupby(todo, key=lambda c: c.group)],
            self.fleet.max_tries,
            hosts=len(self._hosts),
        )
        failed = 0

        async def worker(hs: HostSession) -> None:
            nonlocal failed
            _ON_HOST.set(OnHost(hs.name, hs.host_class, hs.runtime))
            while not self._stop_requested:
                unit = await queue.take(hs.name)
                if unit is None:
                    return
                try:
                    if hs.config.in_process:
                        failed += await self._run_group(unit.cells)
                    else:
                        failed += await self._run_remote_group(hs, unit.cells)
                except _Stopped:
                    return
                except HostLost as exc:
                    failed += self._host_lost(hs, unit, exc, queue)
                    return  # this host takes no more units
                finally:
                    queue.done()

        try:
            async with asyncio.TaskGroup() as group:
                for hs in self._hosts:
                    group.create_task(worker(hs))
        except* OSError as eg:  # the output disk: the session's end, as on one host
            raise eg.exceptions[0] from None
        if not self._stop_requested:  # every host dropped (a stop leaves them for a resume instead)
            for unit in queue.stranded():
                tried = ", ".join(unit.tried) or "none"
                failed += self._fail_unit(unit.cells, f"no fleet host left to run it (dropped by: {tried})")
        return failed

    def _host_lost(self, hs: HostSession, unit: Unit, exc: HostLost, queue: UnitQueue) -> int:
        assert self.store is not None
        left = [c for c in unit.cells if c.index not in self.store.finished_cells]
        tries = unit.tries + 1
        record = {
            "host": hs.name,
            "reason": exc.reason,
            "cells": [c.index for c in left],
            "try": tries,
            "requeued": bool(left) and tries < queue.max_tries and queue.hosts_left > 1,
        }
        self.store.update_meta(host_drops=[*self.store.meta.get("host_drops", []), record])
        queue.host_gone(hs.name)
        if not left:
            return 0
        if record["requeued"]:
            self._log(
                "warning",
                f"host {hs.name} dropped mid-unit ({exc.reason}); its {len(left)} unfinished cell(s) go "
                f"to another host (try {tries + 1} of {queue.max_tries})",
            )
            queue.put_back(unit.retry(left, hs.name))
            return 0
        tried = ", ".join([*unit.tried, hs.name])
        return self._fail_unit(left, f"host {hs.name} dropped mid-unit ({exc.reason}); tried on {tried}")

    def _fail_unit(self, cells: list[Cell], reason: str) -> int:
        for cell in cells:
            self._emit_safe(CellStarted(cell.index, len(self.plan), cell.as_dict(), self._eta()))
            self._finish_cell(
                self._setting(cell, EnforcedCaps(), cell.group),
                [],
                status=CellStatus.FAILED,
                reason=reason,
                sampled=None,
                cold=None,
                fresh=False,
                load_wall_s=None,
            )
        return len(cells)

    async def _run_remote_group(self, hs: HostSession, cells: list[Cell]) -> int:
        """One unit on a remote host: its cells run by the measuring container there; each cell's rows are
        kept until the cell finishes, so a unit cut short (a dropped host, a stop) leaves only whole cells
        in the session's CSVs and the rest in *.partial.csv."""
        assert self.store is not None
        store = self.store
        from tui_profiler.fleet.remote import run_on_host
        from tui_profiler.fleet.unit import EXIT_OK, EXIT_STOPPED, EXIT_TARGET_GONE, UnitDoc

        failed = 0
        pending: dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        container_idx = cells[0].group

        def on_event(event: Event) -> None:
            nonlocal failed
            if isinstance(event, RequestDone):
                pending.setdefault(event.cell_index, ([], []))[0].append(event.row)
            elif isinstance(event, ResourceSample):
                row = {**asdict(event), "container_idx": container_idx}
                pending.setdefault(event.cell_index, ([], []))[1].append(row)
            elif isinstance(event, CellFinished) and event.status != CellStatus.INTERRUPTED:
                requests, samples = pending.pop(event.cell_index, ([], []))
                for r in requests:
                    store.write_request(r)
                for r in samples:
                    store.write_sample(r)
                store.write_cell(event.summary)
                failed += event.status != CellStatus.OK
            elif isinstance(event, CellStarted):
                event = replace(event, eta_s=self._eta())
            self._emit_safe(event)

        image = await self._resolve_image()  # built here once, then sent to each host that lacks it
        left = list(cells)
        try:
            while left and not self._stop_requested:
                t_unit = time.perf_counter()
                spec = await asyncio.to_thread(
                    targets.target_spec, self.preset, left[0], image=image, session_id=store.session_id
                )
                doc = UnitDoc(
                    preset=self.preset.to_dict(),
                    cells=[c.as_dict() for c in left],
                    target={},
                    session_id=store.session_id,
                    host=hs.name,
                    host_class=hs.host_class,
                )
                try:
                    ran = await self._interruptible(run_on_host(hs, spec, doc, on_event))
                except TargetFailed as exc:  # the target could not be created or started there
                    for cell in left:
                        self._emit_safe(CellStarted(cell.index, len(self.plan), cell.as_dict(), self._eta()))
                        self._finish_cell(
                            self._setting(cell, EnforcedCaps(), container_idx),
                            [],
                            status=exc.status,
                            reason=exc.reason
                            if cell is left[0]
                            else f"{exc.reason} (see cell {left[0].index})",
                            sampled=None,
                            cold=ColdStart(phases=dict(exc.phases)),
                            fresh=cell is left[0],
                            load_wall_s=None,
                        )
                    return failed + len(left)
                done_now = [c for c in left if c.index in store.finished_cells]
                if done_now:
                    per_cell = (time.perf_counter() - t_unit) / len(done_now)
                    self._cell_walls.extend([per_cell] * len(done_now))
                left = [c for c in left if c.index not in store.finished_cells]
                if ran.exit_code == EXIT_TARGET_GONE:
                    continue  # the target died: the rest of the unit gets a fresh one (its own cold start)
                if ran.exit_code == EXIT_STOPPED or self._stop_requested:
                    raise _Stopped()
                if left:
                    why = f"the measuring container on {hs.name} exited with code {ran.exit_code}"
                    if ran.exit_code == EXIT_OK:
                        why = f"the measuring container on {hs.name} ended without these cells"
                    failed += self._fail_unit(left, f"{why}: {ran.stderr_tail or 'no error output'}")
                break
        finally:
            self._keep_partial(pending)
        return failed

    def _keep_partial(self, pending: dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]]) -> None:
        """Rows of cells a remote unit did not finish: kept in *.partial.csv, as a resume keeps them."""
        if self.store is not None and pending:
            requests = [r for rows, _ in pending.values() for r in rows]
            samples = [r for _, rows in pending.values() for r in rows]
            self.store.write_partial(requests, samples)
        pending.clear()

    def _eta(self) -> float | None:
        if not self._cell_walls or not self.store:
            return None
        remaining = sum(1 for c in self.plan if c.index not in self.store.finished_cells)
        parallel = max(1, len(self._hosts))  # a fleet runs that many units at once
        return remaining * (sum(self._cell_walls) / len(self._cell_walls)) / parallel

    def _runtime_here(self) -> Runtime | None:
        """The runtime of the host this task runs cells on (a fleet worker's), else the session's."""
        on_host = _ON_HOST.get()
        return on_host.runtime if on_host is not None else self.runtime

    async def _stop_target(self, target: RunningTarget) -> dict[str, Any]:
        runtime = self._runtime_here()
        if runtime is None:
            return {}
        try:
            return await runtime.stop(target)
        except Exception as exc:
            self._log("error", f"could not stop the target {target.ident[:12]}: {exc}")
            return {}

    async def _start_target(self, cell: Cell) -> tuple[RunningTarget, ColdStart]:
        """Start the container for a group; returns it and its cold start (the phases so far)."""
        if self.url:
            if not self.preset.target:
                self._model_facts = await self._server_info(self.url)
            return RunningTarget(base_url=self.url, ident="url", enforced=EnforcedCaps()), ColdStart()
        runtime = self._runtime_here()
        assert runtime is not None and self.store is not None
        cold = ColdStart()

        async def on_phase(name: str, seconds: float | None, detail: str = "") -> None:
            cold.phases[name] = seconds
            cold.details[name] = detail
            self._emit_safe(ColdStartPhase(cell.index, name, seconds, detail))

        # the process runtime runs the server from this installation: no image to build
        image = await self._resolve_image() if runtime.name == "docker" else self.preset.image
        spec = await asyncio.to_thread(  # a `request` readiness probe renders the preset's request
            targets.target_spec, self.preset, cell, image=image, session_id=self.store.session_id
        )
        t0 = time.perf_counter()
        try:
            target = await self._interruptible(runtime.start(spec, on_phase))
        except TargetFailed as exc:
            exc.phases = cold.phases
            raise
        except (_Stopped, asyncio.CancelledError):
            raise
        except (
            Exception
        ) as exc:  # e.g. the engine unreachable (restarting): this group's status, not the session's end
            text = str(exc).strip().splitlines()
            failed = TargetFailed(
                CellStatus.START_FAILED, f"{type(exc).__name__}: {text[0][:200] if text else ''}"
            )
            failed.phases = cold.phases
            raise failed from exc
        cold.start_wall_s = time.perf_counter() - t0
        for k, v in (target.phases or {}).items():
            cold.phases.setdefault(k, v)
        if not self.preset.target:
            self._model_facts = await self._server_info(target.base_url)
        return target, cold

    async def _server_info(self, base_url: str) -> dict[str, Any]:
        import aiohttp

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
                async with s.get(f"{base_url}/info") as r:
                    if r.status == 200:
                        return dict(await r.json(content_type=None))
        except Exception:
            pass
        return {}

    async def _alive(self, base_url: str) -> bool:
        import aiohttp

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
                async with s.get(f"{base_url}{targets.readiness(self.preset).path}") as r:
                    return r.status < 500
        except Exception:
            return False

    # ------------------------------------------------------------------------------------ one cell

    def _setting(
        self,
        cell: Cell,
        enforced: EnforcedCaps,
        container_idx: int,
        payload_row: dict[str, Any] | None = None,
    ) -> CellSetting:
        return CellSetting(
            cell=cell,
            model_name=model_name(
                self._model_facts.get("model"), self.preset.model, targets.target_config(self.preset).image
            ),
            batch_size=self.preset.input.batch_size,
            enforced=enforced,
            container_idx=container_idx,
            payload_row=payload_row or {},
            host=on_host.name if (on_host := _ON_HOST.get()) else self.host_name,
            host_class=on_host.host_class if on_host else self.host_class,
        )

    def _pattern(self, cell: Cell) -> LoadPattern:
        from tui_profiler.load import patterns

        return patterns.pattern_for(self.preset.load, concurrency=cell.concurrency, rate=cell.rate)

    async def _run_cell(
        self, cell: Cell, target: RunningTarget, cold: ColdStart, fresh: bool, container_idx: int
    ) -> tuple[CellStatus, bool]:
        """Run one cell's load on a ready target; returns (status, target_dead)."""
        assert self.store is not None and self._template is not None
        store = self.store
        template = self._template
        from tui_profiler.load.client import run_load
        from tui_profiler.load.inputs import InputSpec, PayloadSet
        from tui_profiler.load.template import build_payload

        payloads: PayloadSet
        if self._sources is not None:  # every input of the cell prepared now, outside the timed load
            try:
                payloads = await asyncio.to_thread(
                    self._sources.prepare,
                    self.preset,
                    template,
                    self._template_model(),
                    scale=cell.input_scale,
                    token_len=cell.token_len,
                    output_len=cell.output_len,
                )
            except (ValueError, OSError) as exc:
                return self._inputs_failed(cell, target, cold, fresh, container_idx, exc), False
        else:
            spec_in = InputSpec.for_cell(self.preset.input, scale=cell.input_scale, token_len=cell.token_len)
            payload = await asyncio.to_thread(
                build_payload, spec_in, template, self._template_model(), cell.output_len
            )
            payloads = PayloadSet((payload,))
        input_rows = [p.as_row() for p in payloads.payloads] if len(payloads.payloads) > 1 else None
        setting = self._setting(cell, target.enforced, container_idx, payloads.common_row())
        base = request_constants(setting)
        first_seen = False
        rows: BoundRows | None = (
            None  # requests.csv rows with this cell's constant columns (made on the first result)
        )

        def cold_start_done() -> None:  # the container's cold start is complete with its first answer
            cold.finish()
            phases = dict(cold.phases)
            self._emit_safe(
                ColdStartDone(cell.index, phases, cold_total(phases) or 0.0, target.enforced.as_row())
            )

        def on_result(res: RequestResult) -> None:
            nonlocal first_seen, rows
            if fresh and not first_seen:
                first_seen = True
                first_request = ColdStartPhaseName.FIRST_REQUEST.value
                cold.phases[first_request] = res.latency_s
                self._emit_safe(
                    ColdStartPhase(
                        cell.index, first_request, res.latency_s, "" if res.ok else f"failed: {res.error}"
                    )
                )
                if not self.url:
                    cold_start_done()
            varying = res.as_row()
            if input_rows is not None:  # several inputs: the one this request sent (none if never sent)
                idx = res.input_index
                varying = {**(input_rows[idx] if idx is not None else _NO_INPUT), **varying}
            varying["cold_start_s"] = cold.total_s() if not self.url else None
            if (
                rows is None
            ):  # the cell's settings are formatted once; each request writes only its own fields
                rows = store.request_rows({k: v for k, v in base.items() if k not in varying})
            rows.write(varying)
            row = {**base, **varying}
            self._emit_safe(
                RequestDone(
                    cell_index=cell.index,
                    t_s=res.t_recv_s,
                    latency_s=res.latency_s,
                    ok=res.ok,
                    warmup=res.warmup,
                    status=res.status,
                    error=res.error or "",
                    server_total_ms=res.server_total_ms,
                    overhead_ms=res.overhead_ms,
                    row=row,
                )
            )

        def on_sample(sample: ResourceSample) -> None:
            sample = replace(sample, cell_index=cell.index)
            store.write_sample({**asdict(sample), "container_idx": container_idx})
            self._emit_safe(sample)

        sampler = None
        if not self.url:
            from tui_profiler.sample import ResourceSampler

            sampler = ResourceSampler(target.sample_target(), interval_s=0.05, on_sample=on_sample)
            await sampler.start()
        results: list[RequestResult] = []
        load_error = ""
        t0 = time.perf_counter()
        try:
            results = await self._interruptible(
                run_load(target.base_url, template, payloads, self._pattern(cell), on_result)
            )
        except _Stopped:
            if sampler is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(sampler.stop())
            self._emit_safe(CellFinished(cell.index, CellStatus.INTERRUPTED, "stopped by the user", {}))
            raise
        except Exception as exc:
            load_error = f"load generator: {type(exc).__name__}: {exc}"
        load_wall = time.perf_counter() - t0
        sampled: SamplerSummary | None = None
        if sampler is not None:
            try:
                sampled = await sampler.stop()
            except Exception as exc:
                self._log("warning", f"sampler: {exc}", cell.index)
        if fresh and not self.url and not first_seen:  # no request ever answered
            cold_start_done()

        timed = [r for r in results if not r.warmup]
        oom_kills = sampled.oom_kills if sampled is not None else None
        alive, exit_facts = True, None
        if needs_liveness_check(timed, load_error, oom_kills) and not self.url:
            alive = await self._alive(target.base_url)
            if not alive:
                exit_facts = await self._stop_target(target)
        status, reason = classify_cell(
            timed,
            load_error=load_error,
            oom_kills=oom_kills,
            alive=alive,
            exit_facts=exit_facts,
            memory_gb=cell.memory_gb,
        )
        self._finish_cell(
            setting,
            results,
            status=status,
            reason=reason,
            sampled=sampled,
            cold=cold,
            fresh=fresh,
            load_wall_s=load_wall,
            target_facts=target.facts,
        )
        return status, not alive

    def _preset_toml(self) -> dict[str, Any]:
        """The preset as written, its input files made absolute (a resume reads it from meta.json)."""
        data = self.preset.to_dict()
        if self._sources is not None:
            from tui_profiler.load.sources import absolute_paths

            data["input"] = {**data.get("input", {}), **absolute_paths(self.preset)}
        return data

    def _inputs_failed(
        self,
        cell: Cell,
        target: RunningTarget,
        cold: ColdStart,
        fresh: bool,
        container_idx: int,
        exc: BaseException,
    ) -> CellStatus:
        """The cell's inputs could not be prepared (too large for the memory bound, a file gone or
        damaged since it was checked): the cell fails with that reason, and the sweep goes on."""
        if fresh and not self.url:
            cold.finish()
        reason = f"inputs: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        self._finish_cell(
            self._setting(cell, target.enforced, container_idx),
            [],
            status=CellStatus.FAILED,
            reason=reason,
            sampled=None,
            cold=cold,
            fresh=fresh,
            load_wall_s=None,
            target_facts=target.facts,
        )
        return CellStatus.FAILED

    def _template_model(self) -> str:
        return (self._template.model_name if self._template else "") or self.preset.model

    def _finish_cell(
        self,
        setting: CellSetting,
        results: list[RequestResult],
        *,
        status: CellStatus,
        reason: str,
        sampled: SamplerSummary | None,
        cold: ColdStart | None,
        fresh: bool,
        load_wall_s: float | None,
        target_facts: dict[str, Any] | None = None,
    ) -> None:
        assert self.store is not None
        row = cell_row(
            setting,
            results,
            status=status,
            reason=reason,
            sampled=sampled,
            cold=cold,
            fresh=fresh,
            profiling_url=self.url is not None,
            load_wall_s=load_wall_s,
            target_facts=target_facts,
            weight_bytes=self._model_facts.get("weight_bytes"),
            slo=self.preset.slo,
        )
        self.store.write_cell(row)
        self._emit_safe(CellFinished(setting.cell.index, status, reason, row))
