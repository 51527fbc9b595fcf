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
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tui_profiler.analysis.stats import percentile, summarise
from tui_profiler.events import (
    CellFinished,
    CellStarted,
    ColdStartDone,
    ColdStartPhase,
    Event,
    LogMessage,
    RequestDone,
    ResourceSample,
    SessionFinished,
    SessionStarted,
)
from tui_profiler.host import host_facts
from tui_profiler.plan import Cell, build_plan
from tui_profiler.presets import Preset, input_spec, preset_summary
from tui_profiler.runtime.base import (
    EnforcedCaps,
    ReadinessProbe,
    RunningTarget,
    Runtime,
    TargetFailed,
    TargetSpec,
)
from tui_profiler.runtime.common import owner_id
from tui_profiler.runtime.docker import docker_engine_version
from tui_profiler.session.reader import load_meta, session_summary
from tui_profiler.session.schema import COLD_START_PHASES, CellStatus, SessionStatus
from tui_profiler.session.store import SessionStore

Emit = Callable[[Event], None]


class _Stopped(Exception):
    """The user asked to stop (request_stop)."""


async def _in_daemon_thread(fn: Callable[[], Any]) -> Any:
    """Run a long blocking call (an image build) in a daemon thread. Unlike asyncio.to_thread, a stop
    request does not have to wait for it: the interpreter's exit does not join a daemon thread."""
    import threading

    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def work() -> None:
        try:
            outcome = (True, fn())
        except BaseException as exc:
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name="tui-profiler-image", daemon=True).start()
    return await future


def _gpu_mode(gpus: int) -> str:
    return "on" if gpus else "off"


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
    ) -> None:
        self.preset = preset
        self._runtime_arg = runtime
        self.runtime: Runtime | None = None
        self.runtime_reason = ""
        self.output_dir = Path(output_dir)
        self.resume = Path(resume) if resume else None
        self.url = url.rstrip("/") if url else None
        self.store: SessionStore | None = None
        self.plan: list[Cell] = build_plan(self._url_preset(preset) if url else preset)
        self._stop_requested = False
        self._current: asyncio.Task[Any] | None = None
        self._emit: Emit = lambda e: None
        self._image: str | None = None
        self._image_error: TargetFailed | None = None
        self._model_facts: dict[str, Any] = {}
        self._template: Any = None
        self._cell_walls: list[float] = []

    @staticmethod
    def _url_preset(preset: Preset) -> Preset:
        res = replace(preset.resources, cpus=[None], memory_gb=[None], gpus=[0], pairing="grid")
        return replace(preset, resources=res, repetitions=preset.repetitions)

    @property
    def session_dir(self) -> Path | None:
        return self.store.dir if self.store else None

    # ------------------------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Graceful stop: cancel what is running, remove the target, flush files; the session stays
        resumable. Safe to call from a signal handler on the loop's thread."""
        self._stop_requested = True
        if self._current is not None and not self._current.done():
            self._current.cancel()

    async def _interruptible(self, coro: Any) -> Any:
        if self._stop_requested:
            coro.close()
            raise _Stopped()
        task = asyncio.ensure_future(coro)
        self._current = task
        try:
            return await task
        except asyncio.CancelledError:
            if self._stop_requested:
                raise _Stopped() from None
            raise
        finally:
            self._current = None

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
                "preset_toml": self.preset.to_dict(),
                "runtime": self.runtime.name if self.runtime else "url",
                "runtime_reason": self.runtime_reason,
                "url": self.url,
                "plan": [c.as_dict() for c in self.plan],
                **facts,
                "engine_version": engine_version,
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
            if self.preset.request is not None and not isinstance(self.preset.request, dict):
                self._template = self.preset.request
            else:  # our own server: the default template (one request path for every target)
                from tui_profiler.load.template import default_template

                self._template = replace(default_template(), model_name=self.preset.model)
            for _, group in itertools.groupby(todo, key=lambda c: c.group):
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
        if self.runtime is None:
            return
        for attempt in range(5):  # an engine restart takes seconds: give it ~10 s to come back
            try:
                n = await self.runtime.cleanup_session(session_id)
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
        if self.runtime is None:
            return
        try:
            removed = await self.runtime.remove_orphans()
        except Exception as exc:
            self._log("warning", f"could not look for targets left by a killed run: {exc}")
            return
        if removed:
            self._log(
                "warning", f"removed {len(removed)} target(s) left by a killed run: {', '.join(removed)}"
            )

    def _emit_safe(self, event: Event) -> None:
        try:
            self._emit(event)
        except Exception as exc:  # a consumer's bug must not lose measurements
            with contextlib.suppress(Exception):
                self._emit(LogMessage("error", f"event consumer failed on {type(event).__name__}: {exc}"))

    def _log(self, level: str, text: str, cell_index: int | None = None) -> None:
        self._emit_safe(LogMessage(level, text, cell_index))  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------ groups

    async def _resolve_image(self) -> str:
        if self._image is not None:
            return self._image
        if self._image_error is not None:
            raise self._image_error
        target = self.preset.target or {}
        try:
            if target.get("image"):
                self._image = target["image"]
            elif target.get("dockerfile"):
                from tui_profiler import images

                # Relative paths are relative to the preset file, like everything else it names.
                here = self.preset.path.parent if self.preset.path else Path.cwd()
                dockerfile = here / target["dockerfile"]
                context = here / target["context"] if target.get("context") else None
                self._log("info", f"building the target image from {dockerfile}")
                self._image = await self._interruptible(
                    _in_daemon_thread(
                        lambda: images.build_image_from_dockerfile(
                            dockerfile, context, target.get("build_args")
                        )
                    )
                )
            elif self.preset.image:
                self._image = self.preset.image
            else:
                from tui_profiler.images import ensure_server_image

                self._log(
                    "info", "checking the model-server image (built once; the layer cache makes it quick)"
                )
                self._image = await self._interruptible(_in_daemon_thread(ensure_server_image))
        except _Stopped:
            raise
        except TargetFailed as exc:
            self._image_error = exc
            raise
        except Exception as exc:
            self._image_error = TargetFailed(
                CellStatus.BUILD_FAILED,
                f"image: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            )
            raise self._image_error from exc
        return self._image

    def _spec(self, cell: Cell, image: str) -> TargetSpec:
        assert self.store is not None
        t = self.preset.target or {}
        readiness = ReadinessProbe(**(t.get("readiness") or {}))
        command = t.get("command")
        if command is None and not t and self.preset.model:
            command = [
                "--model",
                self.preset.model,
                "--weights",
                self.preset.weights,
                *self.preset.server_args,
            ]
        env = dict(t.get("env") or {})
        if cell.gpus and t.get("gpu_env"):
            env.update(t["gpu_env"])
        mounts = [tuple(m.split(":", 1)) for m in (t.get("mounts") or [])]
        return TargetSpec(
            session_id=self.store.session_id,
            image=image,
            model=self.preset.model,
            weights=self.preset.weights,
            port=int(t.get("port", 8000)),
            command=command,
            env=env,
            mounts=mounts,
            cpus=cell.cpus,
            memory_gb=cell.memory_gb,
            gpus=cell.gpus,
            cpuset=self.preset.resources.cpuset,
            threads=self.preset.resources.threads,
            readiness=readiness,
        )

    async def _run_group(self, cells: list[Cell]) -> int:
        """Run one container group; returns the number of failed cells."""
        assert self.store is not None
        failed = 0
        target: RunningTarget | None = None
        cold: dict[str, Any] | None = None  # the cold start of the current container
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
                        cold = {"phases": dict(getattr(exc, "phases", {}) or {})}
                if start_failure is not None:
                    first_cell = cells[0].index if cell is not cells[0] else None
                    reason = (
                        start_failure.reason
                        if first_cell is None
                        else f"{start_failure.reason} (container did not start, see cell {first_cell})"
                    )
                    self._finish_cell(
                        cell,
                        [],
                        None,
                        cold,
                        EnforcedCaps(),
                        start_failure.status,
                        reason,
                        fresh=cell is cells[0],
                        container_idx=container_idx,
                        load_wall=None,
                    )
                    failed += 1
                    continue
                assert target is not None and cold is not None
                status, reason, target_dead = await self._run_cell(cell, target, cold, fresh, container_idx)
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

    def _eta(self) -> float | None:
        if not self._cell_walls or not self.store:
            return None
        remaining = sum(1 for c in self.plan if c.index not in self.store.finished_cells)
        return remaining * (sum(self._cell_walls) / len(self._cell_walls))

    async def _stop_target(self, target: RunningTarget) -> dict[str, Any]:
        if self.runtime is None:
            return {}
        try:
            return await self.runtime.stop(target)
        except Exception as exc:
            self._log("error", f"could not stop the target {target.ident[:12]}: {exc}")
            return {}

    async def _start_target(self, cell: Cell) -> tuple[RunningTarget, dict[str, Any]]:
        """Start the container for a group; returns it and its cold-start record (phases so far)."""
        if self.url:
            if not self.preset.target:
                self._model_facts = await self._server_info(self.url)
            return RunningTarget(base_url=self.url, ident="url", enforced=EnforcedCaps()), {"phases": {}}
        assert self.runtime is not None
        phases: dict[str, float | None] = {}
        details: dict[str, str] = {}

        async def on_phase(name: str, seconds: float | None, detail: str = "") -> None:
            phases[name] = seconds
            details[name] = detail
            self._emit_safe(ColdStartPhase(cell.index, name, seconds, detail))

        # the process runtime runs the server from this installation: no image to build
        image = await self._resolve_image() if self.runtime.name == "docker" else self.preset.image
        spec = self._spec(cell, image)
        t0 = time.perf_counter()
        try:
            target = await self._interruptible(self.runtime.start(spec, on_phase))
        except TargetFailed as exc:
            exc.phases = phases
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
            failed.phases = phases
            raise failed from exc
        start_wall = time.perf_counter() - t0
        for k, v in (target.phases or {}).items():
            phases.setdefault(k, v)
        if not self.preset.target:
            self._model_facts = await self._server_info(target.base_url)
        return target, {"phases": phases, "details": details, "start_wall_s": start_wall}

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
                path = ((self.preset.target or {}).get("readiness") or {}).get("path", "/healthz")
                async with s.get(f"{base_url}{path}") as r:
                    return r.status < 500
        except Exception:
            return False

    # ------------------------------------------------------------------------------------ one cell

    def _base_row(
        self, cell: Cell, payload_row: dict[str, Any], enforced: EnforcedCaps, container_idx: int
    ) -> dict[str, Any]:
        inp = self.preset.input
        model_name = (
            self._model_facts.get("model") or self.preset.model or (self.preset.target or {}).get("image", "")
        )
        return {
            "model_name": model_name,
            "cpu_cores": cell.cpus,
            "gpu_mode": _gpu_mode(cell.gpus),
            "mem_cap_gb": cell.memory_gb,
            "batch_size": inp.batch_size,
            "token_len": cell.token_len,
            "repeat_idx": cell.repeat_idx,
            "cell_index": cell.index,
            "container_idx": container_idx,
            "input_scale": cell.input_scale,
            "pixels": payload_row.get("pixels"),
            "height": payload_row.get("height"),
            "width": payload_row.get("width"),
            "concurrency": cell.concurrency,
            "rate": cell.rate,
            "gpus": cell.gpus,
            "cpus_enforced": enforced.cpus_enforced if cell.cpus is not None else None,
            "mem_enforced": enforced.memory_enforced if cell.memory_gb is not None else None,
            "gpus_enforced": enforced.gpus_enforced if cell.gpus else None,
            "cpuset": enforced.cpuset,
        }

    def _pattern(self, cell: Cell) -> Any:
        from tui_profiler.load import patterns

        load = self.preset.load
        stable = asdict(load.stable_ci) if load.stable_ci else None
        conc = cell.concurrency if load.mode == "closed" else load.connections
        return patterns.pattern_for(
            mode=load.mode,
            concurrency=conc,
            rate=cell.rate,
            arrival=load.arrival,
            requests=load.requests,
            duration_s=load.duration_s,
            warmup=load.warmup,
            timeout_s=load.timeout_s,
            stable_ci=stable,
        )

    async def _run_cell(
        self, cell: Cell, target: RunningTarget, cold: dict[str, Any], fresh: bool, container_idx: int
    ) -> tuple[CellStatus, str, bool]:
        """Run one cell's load on a ready target; returns (status, reason, target_dead)."""
        assert self.store is not None
        store = self.store
        from tui_profiler.load.client import run_load
        from tui_profiler.load.inputs import build_payload

        spec_in = input_spec(self.preset.input, scale=cell.input_scale, token_len=cell.token_len)
        payload = await asyncio.to_thread(build_payload, spec_in, self._template, self._template_model())
        payload_row = payload.as_row() if hasattr(payload, "as_row") else {}
        base = {**self._base_row(cell, payload_row, target.enforced, container_idx), **payload_row}
        first_seen = [False]
        rows: list[Any] = []  # requests.csv rows with this cell's constant columns (made on the first result)

        def cold_start_done() -> None:  # the container's cold start is complete with its first answer
            phases = dict(cold["phases"])
            first = phases.get("first_request")
            cold["wall_s"] = cold.get("start_wall_s", 0.0) + (first or 0.0)
            self._emit_safe(
                ColdStartDone(cell.index, phases, _cold_total(phases) or 0.0, target.enforced.as_row())
            )

        def on_result(res: Any) -> None:
            if fresh and not first_seen[0]:
                first_seen[0] = True
                cold["phases"]["first_request"] = res.latency_s
                self._emit_safe(
                    ColdStartPhase(
                        cell.index, "first_request", res.latency_s, "" if res.ok else f"failed: {res.error}"
                    )
                )
                if not self.url:
                    cold_start_done()
            varying = res.as_row()
            varying["cold_start_s"] = _cold_total(cold["phases"]) if not self.url else None
            if not rows:  # the cell's settings are formatted once; each request writes only its own fields
                rows.append(store.request_rows({k: v for k, v in base.items() if k not in varying}))
            rows[0].write(varying)
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
        results: list[Any] = []
        load_error = ""
        t0 = time.perf_counter()
        try:
            results = await self._interruptible(
                run_load(target.base_url, self._template, payload, self._pattern(cell), on_result)
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
        sampled: dict[str, Any] = {}
        if sampler is not None:
            try:
                summary = await sampler.stop()
                sampled = summary.as_row()
            except Exception as exc:
                self._log("warning", f"sampler: {exc}", cell.index)
        if fresh and not self.url and not first_seen[0]:  # no request ever answered
            cold_start_done()

        timed = [r for r in results if not r.warmup]
        errors = [r for r in timed if not r.ok]
        status, reason, dead = CellStatus.OK, "", False
        oom = sampled.get("oom_kills")
        if load_error:
            status, reason = CellStatus.FAILED, load_error
        if errors or load_error or (oom or 0) > 0:
            alive = await self._alive(target.base_url) if not self.url else True
            if not alive:
                dead = True
                facts = await self._stop_target(target)
                if facts.get("oom_killed") or (oom or 0) > 0:
                    status, reason = (
                        CellStatus.OOM,
                        f"the target was OOM-killed during the cell (memory cap {cell.memory_gb} GiB)",
                    )
                elif errors and all(getattr(r, "outcome", "") == "timeout" for r in errors):
                    # hung, not dead (e.g. frozen): its requests timed out and /healthz did not answer
                    status, reason = (
                        CellStatus.TIMEOUT,
                        (
                            f"the target stopped answering: {len(errors)} of {len(timed)} requests "
                            f"timed out and /healthz did not answer; replaced for the next cell"
                        ),
                    )
                else:
                    status, reason = (
                        CellStatus.CRASHED,
                        f"the target died during the cell (exit code {facts.get('exit_code')})",
                    )
                    logs = (facts.get("last_logs") or "").strip().splitlines()
                    if logs:
                        reason += f": {logs[-1][:200]}"
            elif errors and not load_error:
                kinds = sorted({(r.error or str(r.status))[:60] for r in errors})
                if all(getattr(r, "outcome", "") == "timeout" for r in errors):
                    status = CellStatus.TIMEOUT
                else:
                    status = CellStatus.FAILED if len(errors) == len(timed) else CellStatus.OK
                reason = f"{len(errors)} of {len(timed)} requests failed: {'; '.join(kinds[:3])}"
        if not timed and status == CellStatus.OK:
            status, reason = CellStatus.FAILED, "no timed request finished"
        self._finish_cell(
            cell,
            results,
            sampled,
            cold,
            target.enforced,
            status,
            reason,
            fresh=fresh,
            container_idx=container_idx,
            load_wall=load_wall,
            payload_row=payload_row,
            model_facts=target.facts,
        )
        return status, reason, dead

    def _template_model(self) -> str:
        name = getattr(self._template, "model_name", "") or self.preset.model
        return name

    def _finish_cell(
        self,
        cell: Cell,
        results: list[Any],
        sampled: dict[str, Any] | None,
        cold: dict[str, Any] | None,
        enforced: EnforcedCaps,
        status: CellStatus,
        reason: str,
        *,
        fresh: bool,
        container_idx: int,
        load_wall: float | None,
        payload_row: dict[str, Any] | None = None,
        model_facts: dict[str, Any] | None = None,
    ) -> None:
        assert self.store is not None
        timed = [r for r in results if not r.warmup]
        ok_lat = [r.latency_s for r in timed if r.ok and r.latency_s is not None]
        s = summarise(ok_lat)
        overheads = [r.overhead_ms for r in timed if r.ok and r.overhead_ms is not None]
        server = [r.server_total_ms for r in timed if r.ok and r.server_total_ms is not None]
        phases = dict((cold or {}).get("phases") or {})
        details = (cold or {}).get("details") or {}
        facts = model_facts or {}
        row: dict[str, Any] = {
            **self._base_row(cell, payload_row or {}, enforced, container_idx),
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
            "load_wall_s": load_wall,
            "throughput_rps": _throughput(timed),
            "server_total_ms_mean": sum(server) / len(server) if server else None,
            "overhead_ms_mean": sum(overheads) / len(overheads) if overheads else None,
            "overhead_ms_p50": percentile(overheads, 50),
            "overhead_ms_max": max(overheads) if overheads else None,
            "cold_start_cell": fresh if not self.url else None,
            "cold_start_s": _cold_total(phases) if not self.url and phases else None,
            "cold_start_wall_s": (cold or {}).get("wall_s"),
            "image_pull_detail": details.get("image_pull", ""),
            "image_pull_bytes": facts.get("image_pull_bytes"),
            "image_size_bytes": facts.get("image_size_bytes"),
            "weight_bytes": self._model_facts.get("weight_bytes"),
            **{f"{p}_s": phases.get(p) for p in COLD_START_PHASES},
            **(sampled or {}),
            "status": status,
            "reason": reason,
        }
        if not self.url and not fresh:  # later cells of a container: same container, its cold start
            row["cold_start_cell"] = False
        self.store.write_cell(row)
        self._emit_safe(CellFinished(cell.index, status, reason, row))


def _cold_total(phases: dict[str, float | None]) -> float | None:
    vals = [phases.get(p) for p in COLD_START_PHASES]
    present = [v for v in vals if v is not None]
    return sum(present) if present else None


def _throughput(timed: list[Any]) -> float | None:
    ok = [r for r in timed if r.ok]
    if len(ok) < 2:
        return None
    t0 = min(r.t_send_s for r in timed)
    t1 = max(r.t_recv_s for r in ok)
    return len(ok) / (t1 - t0) if t1 > t0 else None
