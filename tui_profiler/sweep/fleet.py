"""The fleet driver: container groups spread over several test boxes, one group per host at a time.

A host with `measure = "in-process"` runs its groups here, through the same group and cell code as a
one-host run. A remote host runs each group in a measuring container next to its target
(`tui_profiler.fleet.remote`); that container's events arrive here and go on to the consumers with the
host filled in, so the session writer and the views treat remote and local cells alike. A group whose host
drops goes back in the queue for another host (`fleet.max_tries` in all); the rows of its cut-short cell
are moved aside by the writer when that cell starts again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tui_profiler.events import CellStarted, Event, MetaUpdated
from tui_profiler.fleet.remote import HostLost
from tui_profiler.plan import Cell
from tui_profiler.runtime.base import TargetFailed
from tui_profiler.session.schema import CellStatus
from tui_profiler.sweep import targets
from tui_profiler.sweep.cell import CONTAINER_DID_NOT_START, fail_cells
from tui_profiler.sweep.context import Emitter, Placement, SweepContext
from tui_profiler.sweep.control import Stopped
from tui_profiler.sweep.group import run_cells
from tui_profiler.sweep.order import CellOrder
from tui_profiler.sweep.outcome import ColdStart

if TYPE_CHECKING:
    from tui_profiler.fleet.remote import HostSession
    from tui_profiler.sweep.schedule import GroupQueue, QueuedGroup


class FleetDriver:
    """Runs a sweep's container groups over `hosts` (each cell's status goes out in its event)."""

    def __init__(self, ctx: SweepContext, emitter: Emitter, hosts: list[HostSession], max_tries: int) -> None:
        self.ctx = ctx
        self.emitter = emitter
        self.hosts = hosts
        self.max_tries = max_tries
        self.host_drops: list[dict[str, Any]] = []  # meta.json `host_drops`
        self.nobody = Placement(emitter, None, host="")  # cells that no host ran name none

    def place(self, hs: HostSession) -> Placement:
        return Placement(self.emitter, hs.runtime, hs.name, hs.host_class, event_host=hs.name)

    async def run(self, order: CellOrder) -> None:
        from tui_profiler.sweep.schedule import GroupQueue

        groups: list[list[Cell]] = []
        if order.chooses_as_it_measures:  # each free host's group chosen from the results in by then
            publish = getattr(order, "publish", None)  # its state's events: from this loop's thread only

            async def more() -> list[Cell]:
                # a choice refits models: off the loop, which other hosts' in-process cells are timing on
                cells = await asyncio.to_thread(order.next_group)
                if publish is not None:
                    publish()  # no refit here: results recorded meanwhile wait for the next choice
                return cells

            queue = GroupQueue(groups, self.max_tries, hosts=len(self.hosts), more=more)
        else:
            while cells := order.next_group():
                groups.append(cells)
            queue = GroupQueue(groups, self.max_tries, hosts=len(self.hosts))
        try:
            async with asyncio.TaskGroup() as tasks:
                for hs in self.hosts:
                    tasks.create_task(self._host_worker(hs, queue))
        except* OSError as eg:  # the output disk: the session's end, as on one host
            raise eg.exceptions[0] from None
        if not self.ctx.control.requested:  # every host dropped (a stop leaves them for a resume instead)
            for group in queue.stranded():
                tried = ", ".join(group.tried) or "none"
                reason = f"no fleet host left to run it (dropped by: {tried})"
                fail_cells(self.ctx, self.nobody, group.cells, CellStatus.FAILED, reason)

    async def _host_worker(self, hs: HostSession, queue: GroupQueue) -> None:
        """One host's loop: take a group, run it, until none is left or the host is lost."""
        while not self.ctx.control.requested:
            group = await queue.take(hs.name)
            if group is None:
                break
            try:
                if hs.config.in_process:
                    await run_cells(self.ctx, self.place(hs), group.cells)
                else:
                    await self._run_remote(hs, group.cells)
            except Stopped:
                break
            except HostLost as exc:
                self._host_lost(hs, group, exc, queue)
                break  # this host takes no more groups
            finally:
                queue.done()

    def _host_lost(self, hs: HostSession, group: QueuedGroup, exc: HostLost, queue: GroupQueue) -> None:
        left = [c for c in group.cells if c.index not in self.emitter.finished]
        tries = group.tries + 1
        requeued = bool(left) and tries < queue.max_tries and queue.hosts_left > 1
        record = {"host": hs.name, "reason": exc.reason, "cells": [c.index for c in left], "try": tries}
        self.host_drops.append({**record, "requeued": requeued})
        self.emitter(MetaUpdated({"host_drops": list(self.host_drops)}))
        queue.host_gone(hs.name)
        if not left:
            return
        if requeued:
            self.place(hs).log(
                "warning",
                f"host {hs.name} dropped mid-group ({exc.reason}); its {len(left)} unfinished cell(s) go "
                f"to another host (try {tries + 1} of {queue.max_tries})",
            )
            queue.put_back(group.retry(left, hs.name))
            return
        tried = ", ".join([*group.tried, hs.name])
        reason = f"host {hs.name} dropped mid-group ({exc.reason}); tried on {tried}"
        fail_cells(self.ctx, self.place(hs), left, CellStatus.FAILED, reason)

    async def _run_remote(self, hs: HostSession, cells: list[Cell]) -> None:
        """One group on a remote host: its cells run by the measuring container there. A target that dies
        gets a fresh one for the remaining cells (their own cold start)."""
        from tui_profiler.fleet.group_doc import EXIT_OK, EXIT_STOPPED, EXIT_TARGET_GONE

        place = self.place(hs)
        image = await self.ctx.images.resolve(place)  # built here once, then sent to each host that lacks it
        left = list(cells)
        while left and not self.ctx.control.requested:
            t_group = time.perf_counter()
            try:
                ran = await self.ctx.control.interruptible(self._launch(hs, left, image))
            except TargetFailed as exc:  # the target could not be created or started there
                fail_cells(
                    self.ctx,
                    place,
                    left,
                    exc.status,
                    exc.reason,
                    cold=ColdStart(phases=dict(exc.phases)),
                    first_measures_cold_start=True,
                    see_first=CONTAINER_DID_NOT_START,
                )
                break
            done_now = [c for c in left if c.index in self.emitter.finished]
            if done_now:
                self.ctx.cell_walls.extend([(time.perf_counter() - t_group) / len(done_now)] * len(done_now))
            left = [c for c in left if c.index not in self.emitter.finished]
            if ran.exit_code == EXIT_TARGET_GONE:
                continue
            if ran.exit_code == EXIT_STOPPED or self.ctx.control.requested:
                raise Stopped()
            if left:
                why = f"the measuring container on {hs.name} exited with code {ran.exit_code}"
                if ran.exit_code == EXIT_OK:
                    why = f"the measuring container on {hs.name} ended without these cells"
                fail_cells(
                    self.ctx, place, left, CellStatus.FAILED, f"{why}: {ran.stderr_tail or 'no error output'}"
                )
                break

    async def _launch(self, hs: HostSession, cells: list[Cell], image: str) -> Any:
        """Start the target and the measuring container on `hs`; their events go on to the consumers."""
        from tui_profiler.fleet.group_doc import GroupDoc
        from tui_profiler.fleet.remote import run_on_host

        place = self.place(hs)
        spec = await asyncio.to_thread(
            targets.target_spec, self.ctx.preset, cells[0], image=image, session_id=self.ctx.session_id
        )
        doc = GroupDoc(
            preset=self.ctx.preset.to_dict(),
            cells=[c.as_dict() for c in cells],
            target={},
            session_id=self.ctx.session_id,
            host=hs.name,
            host_class=hs.host_class,
        )

        def on_event(event: Event) -> None:
            if isinstance(event, CellStarted):
                event = replace(event, eta_s=self.ctx.eta(len(self.emitter.finished)))
            place.emit(event)

        return await run_on_host(hs, spec, doc, on_event)
