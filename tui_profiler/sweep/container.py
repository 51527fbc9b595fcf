"""The target of a container group: its image (resolved or built once per session), its start with the
cold-start phases as events, its liveness, and its stop (always, also on a stop request)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tui_profiler.config.model import Preset
from tui_profiler.events import ColdStartPhase
from tui_profiler.plan import Cell
from tui_profiler.runtime.base import EnforcedCaps, RunningTarget, TargetFailed
from tui_profiler.session.schema import CellStatus
from tui_profiler.sweep import targets
from tui_profiler.sweep.context import Placement, SweepContext
from tui_profiler.sweep.control import Stopped
from tui_profiler.sweep.outcome import ColdStart


async def start_target(ctx: SweepContext, place: Placement, cell: Cell) -> tuple[RunningTarget, ColdStart]:
    """Start the container for `cell`'s group; returns it and its cold start (the phases so far)."""
    if ctx.url:
        if not ctx.preset.target:
            ctx.model_facts = await server_info(ctx.url)
        return RunningTarget(base_url=ctx.url, ident="url", enforced=EnforcedCaps()), ColdStart()
    runtime = place.runtime
    assert runtime is not None
    cold = ColdStart()

    async def on_phase(name: str, seconds: float | None, detail: str = "") -> None:
        cold.phases[name] = seconds
        cold.details[name] = detail
        place.emit(ColdStartPhase(cell.index, name, seconds, detail))

    # the process runtime runs the server from this installation: no image to build
    image = await ctx.images.resolve(place) if runtime.name == "docker" else ctx.preset.image
    spec = await asyncio.to_thread(  # a `request` readiness probe renders the preset's request
        targets.target_spec, ctx.preset, cell, image=image, session_id=ctx.session_id
    )
    t0 = time.perf_counter()
    try:
        target = await ctx.control.interruptible(runtime.start(spec, on_phase))
    except TargetFailed as exc:
        exc.phases = cold.phases
        raise
    except (Stopped, asyncio.CancelledError):
        raise
    except Exception as exc:  # e.g. the engine unreachable (restarting): this group's status, not the end
        text = str(exc).strip().splitlines()
        failed = TargetFailed(
            CellStatus.START_FAILED, f"{type(exc).__name__}: {text[0][:200] if text else ''}"
        )
        failed.phases = cold.phases
        raise failed from exc
    cold.start_wall_s = time.perf_counter() - t0
    for k, v in (target.phases or {}).items():
        cold.phases.setdefault(k, v)
    if not ctx.preset.target:
        ctx.model_facts = await server_info(target.base_url)
    return target, cold


async def stop_target(place: Placement, target: RunningTarget) -> dict[str, Any]:
    """Stop and remove the target; returns the runtime's exit facts ({} when there is nothing to stop)."""
    if place.runtime is None:
        return {}
    try:
        return await place.runtime.stop(target)
    except Exception as exc:
        place.log("error", f"could not stop the target {target.ident[:12]}: {exc}")
        return {}


async def server_info(base_url: str) -> dict[str, Any]:
    """Our model server's /info ({} from any other server)."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            async with s.get(f"{base_url}/info") as r:
                if r.status == 200:
                    return dict(await r.json(content_type=None))
    except Exception:
        pass
    return {}


async def alive(preset: Preset, base_url: str) -> bool:
    """Whether the target still answers its readiness path (any status below 500)."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            async with s.get(f"{base_url}{targets.readiness(preset).path}") as r:
                return r.status < 500
    except Exception:
        return False
