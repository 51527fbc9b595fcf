"""The sweep: a session's life, from its runtime and its first event to its last. It writes no file.

`SweepRunner.run(emit)` chooses where the cells run (this machine's docker or process runtime, a running
server at --url, or a fleet of hosts), announces the session (`SessionStarted`, carrying meta.json's
fields), cleans up what a killed run left, hands the plan's order to a driver — `run_local` or
`FleetDriver`, two small drivers of the same group and cell code — and ends with `SessionFinished`. Every
measurement leaves as an event; the session writer (`tui_profiler.session.store.recording`) is one of the
consumers that `emit` feeds.

Failure is data: a target that cannot start (OOM kill while loading, crash, readiness timeout, image build
failure) or dies during a cell ends that cell with a status and a reason, and the sweep goes on.

Stopping: `request_stop()` (SIGINT / SIGTERM / SIGHUP in the CLI) cancels whatever is in progress; the
target is removed, the half-done cell gets no cells.csv row, and the session can be resumed
(`SweepRunner(..., resume=SESSION_DIR)`), which redoes that cell from its start.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui_profiler.config.files import preset_summary
from tui_profiler.config.model import FleetConfig, Preset
from tui_profiler.events import Emit, Level, LogMessage, SessionFinished, SessionStarted
from tui_profiler.host import host_facts
from tui_profiler.plan import Cell, build_plan
from tui_profiler.runtime.base import ReadinessProbe, Runtime
from tui_profiler.runtime.common import owner_id
from tui_profiler.runtime.docker import docker_engine_version
from tui_profiler.session.reader import load_meta, new_session_id, session_dir_for, session_summary
from tui_profiler.session.schema import CellStatus, SessionStatus
from tui_profiler.sweep import targets
from tui_profiler.sweep.context import Emitter, ImageResolver, Placement, SweepContext
from tui_profiler.sweep.control import StopControl, Stopped
from tui_profiler.sweep.group import run_cells
from tui_profiler.sweep.local import run_local
from tui_profiler.sweep.order import CellOrder, GridOrder
from tui_profiler.sweep.search import SearchOrder

if TYPE_CHECKING:
    from tui_profiler.fleet.remote import HostSession


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


class SweepRunner:
    """Runs a preset's plan. `runtime`: a Runtime, a runtime name ('docker' | 'process'), or None (docker
    when an engine is reachable, else process). `url`: profile an already running server (no container,
    no cold start, no resource caps; the same CSVs). `fleet`: several test boxes (`run --hosts`, or the
    preset's [fleet])."""

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
        from tui_profiler.load.sources import open_sources

        self.preset = preset
        self.fleet = fleet if fleet is not None else preset.fleet
        self._runtime_arg = runtime
        self.runtime: Runtime | None = None
        self.runtime_reason = ""
        self.output_dir = Path(output_dir)
        self.resume = Path(resume) if resume else None
        self.url = url.rstrip("/") if url else None
        self.plan: list[Cell] = build_plan(targets.url_preset(preset) if url else preset)
        # the user's own input files, checked now: a bad one is a PresetError before any container starts
        self._sources = open_sources(preset)
        self.control = StopControl()
        self.session_dir: Path | None = None
        self.session_id = ""  # the session's container label value (set when it runs)
        self._hosts: list[HostSession] = []
        self.host_name = os.uname().nodename  # the test box a one-host run's rows name
        self.host_class = ""
        self._resumed_rows: list[dict[str, Any]] = []  # a resume's finished cells.csv rows
        self._resumed_meta: dict[str, Any] = {}

    @property
    def stop_requested(self) -> bool:
        return self.control.requested

    def request_stop(self) -> None:
        """Graceful stop: cancel what is running, remove the target; the session stays resumable. Safe to
        call from a signal handler on the loop's thread."""
        self.control.request()

    async def run(self, emit: Emit) -> SessionFinished:
        wall0 = time.perf_counter()
        self._check_search()
        self._check_adaptive()
        await self._choose_runtime(Emitter(emit))
        session_dir, session_id, finished = await self._open_session()
        self.session_id = session_id
        emitter = Emitter(emit, finished)
        ctx = self._context(session_id)
        ctx.parallel = max(1, len(self._hosts))
        order: CellOrder = GridOrder(c for c in self.plan if c.index not in finished)
        meta = await self._meta() if not self.resume else {}
        if self.preset.load.search is not None:  # a capacity search: its cells are made as it goes
            order = search = SearchOrder(self.preset, self.plan, emitter)
            emitter.on_request.append(search.observe)
            ctx.n_cells, ctx.open_ended = search.upper_bound, True
            meta |= {"search": search.describe(), "plan": []}
        if self.preset.plan.strategy == "adaptive":  # chosen cells of the plan, as the model learns
            from tui_profiler.sweep.adaptive import AdaptiveOrder  # the model's numpy/scipy: only here

            elapsed = _number((self._resumed_meta.get("adaptive") or {}).get("elapsed_s"))
            order = adaptive = AdaptiveOrder(
                self.preset, self.plan, emitter, resumed=self._resumed_rows, elapsed_s=elapsed
            )
            emitter.explain = adaptive.explain
            ctx.n_cells, ctx.open_ended = len(self.plan), True
            meta |= {"adaptive": adaptive.describe()}
        else:
            why = "search" if self.preset.load.search is not None else "grid"
            emitter.explain = lambda _index: {"chosen_because": why}
        emitter(self._started(session_dir, session_id, len(finished), meta, ctx.n_cells))
        if finished:
            emitter(LogMessage("info", self._resuming(len(finished))))
        status = SessionStatus.INTERRUPTED  # unless the drive returns (a forced stop cancels it)
        try:
            status = await self._drive(ctx, emitter, order)
        finally:
            flush = getattr(order, "flush", None)  # a search's capacity rows, an adaptive plan's state
            if flush is not None:
                flush()  # before the session's end
            await asyncio.shield(self._remove_leftovers(emitter, session_id))
            done = self._finished(
                session_dir, status, emitter.finished, time.perf_counter() - wall0, ctx.open_ended
            )
            emitter(done)
        return done

    def _check_search(self) -> None:
        """A capacity search runs on one host, in one go (one-line ValueErrors)."""
        if self.preset.load.search is None:
            return
        if self.resume is not None:
            raise ValueError(
                f"--resume {self.resume}: a capacity search (load.search) cannot be resumed; run it again"
            )
        if self.fleet is not None and not self.url and self._runtime_arg is None:
            raise ValueError(
                "a capacity search (--find-max-load, load.search) runs on one host: a fleet takes whole "
                "container groups, a search makes its cells as it goes"
            )

    def _check_adaptive(self) -> None:
        """An adaptive plan chooses among one cell per configuration × size (on a fleet: one configuration
        per free host)."""
        if self.preset.plan.strategy != "adaptive":
            return
        from tui_profiler.sweep.adaptive import check_adaptive

        check_adaptive(self.preset, self.plan)

    def _finished(
        self,
        session_dir: Path,
        status: SessionStatus,
        finished: dict[int, CellStatus],
        wall_s: float,
        searched: bool = False,
    ) -> SessionFinished:
        """The session's end. `searched`: a capacity search or an adaptive plan, whose cells are those it ran
        (none remain: the plan chooses the rest on a resume)."""
        n_failed = sum(1 for s in finished.values() if s != CellStatus.OK)
        return SessionFinished(
            session_dir=str(session_dir),
            status=SessionStatus.FAILED if status == SessionStatus.OK and n_failed else status,
            n_cells=len(finished) if searched else len(self.plan),
            n_failed=n_failed,
            wall_s=wall_s,
            cells_finished=len(finished),
            cells_remaining=[] if searched else [c.index for c in self.plan if c.index not in finished],
        )

    async def _drive(self, ctx: SweepContext, emitter: Emitter, order: CellOrder) -> SessionStatus:
        """Run the cells the order hands out; the session's status (a failed cell makes it FAILED later)."""
        await self._clean_orphans(emitter)
        emitter.on_finished.append(order.record)
        try:
            if self._hosts:
                from tui_profiler.sweep.fleet import FleetDriver

                assert self.fleet is not None
                await FleetDriver(ctx, emitter, self._hosts, self.fleet.max_tries).run(order)
            else:
                await run_local(ctx, Placement(emitter, self.runtime, self.host_name, self.host_class), order)
        except Stopped:
            return SessionStatus.INTERRUPTED
        except OSError as exc:  # e.g. the output disk is full: stop with a clear error
            where = getattr(exc, "filename", "") or self.session_dir
            emitter(LogMessage("error", f"session stopped: {exc.strerror or exc} ({where})"))
            return SessionStatus.FAILED
        return SessionStatus.INTERRUPTED if self.control.requested else SessionStatus.OK

    def _context(self, session_id: str) -> SweepContext:
        from tui_profiler.load.template import template_for

        return SweepContext(
            preset=self.preset,
            n_cells=len(self.plan),
            template=template_for(self.preset),  # the preset's [request], or our own server's
            images=ImageResolver(self.preset, self.control),
            control=self.control,
            url=self.url,
            sources=self._sources,
            session_id=session_id,
        )

    def _resuming(self, n_finished: int) -> str:
        return (
            f"resuming: {n_finished} of {len(self.plan)} cells already finished; "
            f"{len(self.plan) - n_finished} to run (rows of a cell cut short were moved to *.partial.csv)"
        )

    def _started(
        self, session_dir: Path, session_id: str, resumed: int, meta: dict[str, Any], n_cells: int
    ) -> SessionStarted:
        return SessionStarted(
            session_id=session_id,
            session_dir=str(session_dir),
            preset_name=self.preset.name,
            runtime=self.runtime.name if self.runtime else "url",
            runtime_reason=self.runtime_reason,
            n_cells=n_cells,  # a search's: an upper bound (meta's `search.max_cells`)
            resumed_cells=resumed,
            resume=self.resume is not None,
            meta={**meta, "owner": owner_id(), "status": SessionStatus.RUNNING},
        )

    # ------------------------------------------------------------------------------------ the session

    async def _open_session(self) -> tuple[Path, str, dict[int, CellStatus]]:
        """The session's folder, its id and the cells already finished (a resume's)."""
        if self.resume is None:
            self.session_dir = session_dir_for(self.output_dir, self.preset.name)
            return self.session_dir, new_session_id(self.session_dir), {}
        saved = self._check_resume_plan()
        rows = await asyncio.to_thread(session_summary, self.resume)
        finished = {
            int(r["cell_index"]): CellStatus(r["status"])
            if r.get("status") in set(CellStatus)
            else CellStatus.FAILED
            for r in rows
            if r.get("cell_index", "").isdigit()
        }
        self.session_dir = self.resume
        self._resumed_rows, self._resumed_meta = rows, saved
        return self.resume, str(saved.get("session_id") or self.resume.name), finished

    def _check_resume_plan(self) -> dict[str, Any]:
        """Resuming with a preset whose plan differs would mix two sweeps in one session: refuse. Returns
        the session's meta.json."""
        assert self.resume is not None
        try:
            meta = load_meta(self.resume)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--resume {self.resume}: not a readable session ({exc})") from None
        saved = meta.get("plan")
        if saved is not None:  # sessions written before the field's rename say "group"
            saved = [{("container_group" if k == "group" else k): v for k, v in c.items()} for c in saved]
        if saved is not None and saved != [c.as_dict() for c in self.plan]:
            raise ValueError(
                f"--resume {self.resume}: the preset's plan differs from the session's "
                f"({len(self.plan)} cells vs {len(saved)}); resume without a preset or --set"
            )
        return meta

    async def _meta(self) -> dict[str, Any]:
        """A new session's meta.json: what was run, where, and how."""
        uses_docker = self.runtime is not None and self.runtime.name == "docker"
        facts, engine_version = await asyncio.gather(  # both wait on other processes: at once
            asyncio.to_thread(host_facts),
            asyncio.to_thread(docker_engine_version) if uses_docker else asyncio.sleep(0, "not used"),
        )
        fleet: dict[str, Any] = {}
        if self._hosts and self.fleet is not None:
            fleet = {"fleet": self.fleet.model_dump(), "hosts": {h.name: h.facts for h in self._hosts}}
        return {
            "preset": preset_summary(self.preset),
            "preset_toml": self._preset_toml(),
            "runtime": self.runtime.name if self.runtime else "url",
            "runtime_reason": self.runtime_reason,
            "url": self.url,
            "plan": [c.as_dict() for c in self.plan],
            **facts,
            "engine_version": engine_version,
            **fleet,
            "readiness_poll_interval_s": ReadinessProbe().interval_s,
            "cold_start": "measured once per container (resource config and repetition); the container "
            "is reused across that config's input sizes and load levels",
            "status": SessionStatus.RUNNING,
        }

    def _preset_toml(self) -> dict[str, Any]:
        """The preset as written, its input files made absolute (a resume reads it from meta.json)."""
        data = self.preset.to_dict()
        if self._sources is not None:
            from tui_profiler.load.sources import absolute_paths

            data["input"] = {**data.get("input", {}), **absolute_paths(self.preset)}
        return data

    # ------------------------------------------------------------------------------------ runtimes

    async def _choose_runtime(self, emitter: Emitter) -> None:
        if self.fleet is not None and not self.url and self._runtime_arg is None:
            from tui_profiler.sweep.schedule import open_hosts

            def log(level: Level, text: str) -> None:
                emitter(LogMessage(level, text))

            self._hosts = await open_hosts(self.fleet, self.preset, log)
            self.runtime = self._hosts[0].runtime
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

    def _runtimes(self) -> list[Runtime]:
        return [h.runtime for h in self._hosts] or ([self.runtime] if self.runtime else [])

    async def _clean_orphans(self, emitter: Emitter) -> None:
        for runtime in self._runtimes():
            try:
                removed = await runtime.remove_orphans()
            except Exception as exc:
                emitter(LogMessage("warning", f"could not look for targets left by a killed run: {exc}"))
                continue
            if removed:
                text = f"removed {len(removed)} target(s) left by a killed run: {', '.join(removed)}"
                emitter(LogMessage("warning", text))

    async def _remove_leftovers(self, emitter: Emitter, session_id: str) -> None:
        """Remove whatever this session's label is still on: a target that could not be stopped while the
        engine was unreachable (it may be back by now)."""
        await asyncio.gather(*(self._remove_leftovers_on(emitter, r, session_id) for r in self._runtimes()))

    async def _remove_leftovers_on(self, emitter: Emitter, runtime: Runtime, session_id: str) -> None:
        n = 0
        for attempt in range(5):  # an engine restart takes seconds: give it ~10 s to come back
            try:
                n = await runtime.cleanup_session(session_id)
                break
            except Exception as exc:
                if attempt == 4 or self.control.requested:
                    text = (
                        f"could not check for this session's leftover targets ({exc}); the next "
                        "run or `tui-profiler clean` removes them"
                    )
                    emitter(LogMessage("warning", text))
                    return
                await asyncio.sleep(2)
        if n:
            emitter(
                LogMessage(
                    "warning", f"removed {n} target(s) of this session that could not be stopped earlier"
                )
            )

    # ------------------------------------------------------------------------------------ a fleet group

    async def run_container_group(self, cells: list[Cell], emit: Emit, session_id: str) -> None:
        """Run one container group's cells against this runner's runtime: the measuring side of a fleet
        group (`tui_profiler.sweep.measure`), whose events the local side writes."""
        emitter = Emitter(emit)
        await self._choose_runtime(emitter)
        ctx = self._context(session_id)
        place = Placement(emitter, self.runtime, self.host_name, self.host_class)
        try:
            await run_cells(ctx, place, cells)
        except Stopped:
            pass
