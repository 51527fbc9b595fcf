"""The one-host driver: container groups one after another on this machine (or against --url), each
group's cells taken from the order while its container runs."""

from __future__ import annotations

from functools import partial

from tui_profiler.sweep.context import Placement, SweepContext
from tui_profiler.sweep.group import run_group
from tui_profiler.sweep.order import CellOrder


async def run_local(ctx: SweepContext, place: Placement, order: CellOrder) -> None:
    """Run every cell the order hands out."""
    while not ctx.control.requested and (first := order.next_cell()) is not None:
        await run_group(ctx, place, first, partial(order.next_cell, first.container_group))
