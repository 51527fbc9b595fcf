"""Which cell runs next: the one question a sweep's drivers ask, of one object.

Today's order is the plan's (`GridOrder`): every cell of a container group in turn, group after group. An
order hands out a group's cells while its container runs (`next_cell(group)`), so a strategy that chooses
from what it has measured (a stop rule, an adaptive plan) decides by answering here, and can learn each
result from `record`. A fleet takes whole groups (`next_group`), one per host: all up front from the grid, or one each time a host is
free from an order that chooses as it measures (an adaptive plan).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Protocol

from tui_profiler.events import CellFinished
from tui_profiler.plan import Cell


class CellOrder(Protocol):
    # True: the order chooses from what it has measured, so a fleet asks for each group when a host is free
    chooses_as_it_measures: bool

    def next_cell(self, group: int | None = None) -> Cell | None:
        """The next cell: of container group `group` while it has one left (its container is running;
        None: that group is done), or of any group when `group` is None (None: the sweep is done)."""

    def next_group(self) -> list[Cell]:
        """The cells of the next container group, all at once ([]: the sweep is done)."""

    def record(self, finished: CellFinished) -> None:
        """A cell finished (its status and cells.csv row): what a strategy may learn from."""


class GridOrder:
    """The plan's own order: the cells still to run, as the plan lists them."""

    chooses_as_it_measures = False

    def __init__(self, todo: Iterable[Cell]) -> None:
        self._todo: deque[Cell] = deque(todo)

    def next_cell(self, group: int | None = None) -> Cell | None:
        if not self._todo or (group is not None and self._todo[0].container_group != group):
            return None
        return self._todo.popleft()

    def next_group(self) -> list[Cell]:
        first = self.next_cell()
        if first is None:
            return []
        cells = [first]
        while (more := self.next_cell(first.container_group)) is not None:
            cells.append(more)
        return cells

    def record(self, finished: CellFinished) -> None:
        """The grid measures every cell whatever the results."""
