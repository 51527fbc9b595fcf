"""One container group: its target started once (the cold start, measured in its first cell), its cells run
one after another in that container, and the target stopped in a `finally`, always. A target that cannot
start fails the group's remaining cells with its status; one that dies mid-cell is replaced for the next
cell, which measures its own cold start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tui_profiler.plan import Cell
from tui_profiler.runtime.base import RunningTarget, TargetFailed
from tui_profiler.sweep.cell import CONTAINER_DID_NOT_START, announce, fail_cells, run_cell
from tui_profiler.sweep.container import start_target, stop_target
from tui_profiler.sweep.context import Placement, SweepContext
from tui_profiler.sweep.outcome import ColdStart

NextCell = Callable[[], Cell | None]  # the group's next cell to run, None when the group is done


async def run_group(ctx: SweepContext, place: Placement, first: Cell, next_cell: NextCell) -> None:
    """Run the container group that starts with `first` (each cell's status goes out in its event)."""
    target: RunningTarget | None = None
    cold: ColdStart | None = None  # the cold start of the current container
    cell: Cell | None = first
    try:
        while cell is not None:
            ctx.control.check()
            t_cell = time.perf_counter()
            announce(ctx, place, cell)
            measures_cold_start = target is None
            if target is None:
                try:
                    target, cold = await start_target(ctx, place, cell)
                except TargetFailed as exc:
                    _start_failed(ctx, place, cell, exc, next_cell)
                    return
            assert cold is not None
            target_dead = await run_cell(ctx, place, cell, target, cold, measures_cold_start)
            if target_dead:  # the next cell gets a fresh container (and its own cold start)
                await stop_target(place, target)
                target = None
            ctx.cell_walls.append(time.perf_counter() - t_cell)
            cell = next_cell()
    finally:
        if target is not None:
            await asyncio.shield(stop_target(place, target))


async def run_cells(ctx: SweepContext, place: Placement, cells: list[Cell]) -> None:
    """Run a container group whose cells are known in advance (a fleet group)."""
    rest = iter(cells[1:])
    await run_group(ctx, place, cells[0], lambda: next(rest, None))


def _start_failed(
    ctx: SweepContext, place: Placement, cell: Cell, exc: TargetFailed, next_cell: NextCell
) -> None:
    """The container did not start: `cell` (already announced) and the rest of the group fail with its
    status; the first of them carries the phases that did run."""
    rest: list[Cell] = []
    while (more := next_cell()) is not None:
        rest.append(more)
    fail_cells(
        ctx,
        place,
        [cell, *rest],
        exc.status,
        exc.reason,
        cold=ColdStart(phases=dict(exc.phases)),
        first_measures_cold_start=True,
        see_first=CONTAINER_DID_NOT_START,
        first_announced=True,
    )
