"""The fleet's group queue (no engine needed): hosts take container groups one at a time, a group whose
host dropped goes back to the front for another host, and nothing waits forever once no group can come back."""

from __future__ import annotations

import asyncio

from tui_profiler.plan import Cell
from tui_profiler.sweep.schedule import GroupQueue


def _cell(index: int, group: int) -> Cell:
    return Cell(index, 1.0, 1.0, 0, 1.0, None, 1, None, 0, group)


def test_a_dropped_unit_goes_back_to_the_front_for_another_host() -> None:
    async def scenario() -> list[tuple[str, list[int]]]:
        groups = [[_cell(0, 0), _cell(1, 0)], [_cell(2, 1)], [_cell(3, 2)]]
        queue = GroupQueue(groups, max_tries=2, hosts=2)
        taken: list[tuple[str, list[int]]] = []
        a = await queue.take("a")
        b = await queue.take("b")
        assert a is not None and b is not None
        taken += [("a", [c.index for c in a.cells]), ("b", [c.index for c in b.cells])]
        # host a drops with cell 1 unfinished: it goes back first, and a never takes it again
        queue.put_back(a.retry([a.cells[1]], "a"))
        queue.host_gone("a")
        queue.done()
        retried = await queue.take("b")
        assert retried is not None and retried.tries == 1 and retried.tried == ["a"]
        taken.append(("b", [c.index for c in retried.cells]))
        queue.done()
        last = await queue.take("b")
        assert last is not None
        taken.append(("b", [c.index for c in last.cells]))
        queue.done()
        queue.done()  # b's first group
        assert await queue.take("b") is None
        return taken

    assert asyncio.run(scenario()) == [("a", [0, 1]), ("b", [2]), ("b", [1]), ("b", [3])]


def test_an_idle_host_waits_while_a_unit_may_still_come_back() -> None:
    async def scenario() -> bool:
        queue = GroupQueue([[_cell(0, 0)]], max_tries=2, hosts=2)
        group = await queue.take("a")
        assert group is not None
        waiting = asyncio.ensure_future(queue.take("b"))  # the queue is empty, but a's group runs
        await asyncio.sleep(0.05)
        assert not waiting.done()
        queue.put_back(group.retry(group.cells, "a"))  # a dropped it
        queue.host_gone("a")
        queue.done()
        got = await asyncio.wait_for(waiting, 5)
        return got is not None and got.cells[0].index == 0

    assert asyncio.run(scenario())


def test_units_no_host_is_left_to_run_are_stranded() -> None:
    async def scenario() -> list[int]:
        queue = GroupQueue([[_cell(0, 0)], [_cell(1, 1)]], max_tries=2, hosts=1)
        group = await queue.take("a")
        assert group is not None
        queue.put_back(group.retry(group.cells, "a"))
        queue.host_gone("a")
        queue.done()  # a's worker ends here: a dropped host takes no more container groups
        assert queue.hosts_left == 0
        return [u.cells[0].index for u in queue.stranded()]

    assert asyncio.run(scenario()) == [0, 1]


def test_a_host_asks_again_when_a_group_ended_while_it_was_asking() -> None:
    """`more` answered [] from what it knew when asked, but a group ended meanwhile (its results may open a
    new choice): the host asks again instead of leaving, and gets the group the new answer has."""

    async def scenario() -> list[int] | None:
        answers = [[_cell(0, 0)], [], [_cell(1, 1)]]
        queue: GroupQueue

        async def more() -> list[Cell]:
            answer = answers.pop(0)
            if not answer:  # while b asks, a's group ends
                await asyncio.sleep(0)
                queue.done()
                await asyncio.sleep(0)
            return answer

        queue = GroupQueue([], max_tries=2, hosts=2, more=more)
        first = await queue.take("a")
        assert first is not None
        second = await asyncio.wait_for(queue.take("b"), 5)
        return [c.index for c in second.cells] if second is not None else None

    assert asyncio.run(scenario()) == [1]
