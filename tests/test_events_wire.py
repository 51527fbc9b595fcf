"""The event contract on the wire: what a fleet host's measuring side writes, the local side reads back as
the same events, with only `host` filled in."""

from __future__ import annotations

import math

import pytest

from tui_profiler.events import (
    EVENT_TYPES,
    CellFinished,
    EventDecodeError,
    RequestDone,
    ResourceSample,
    event_from_json,
    event_to_json,
)
from tui_profiler.session.schema import CellStatus


def test_every_event_type_round_trips_with_its_host_filled_in() -> None:
    events = [
        RequestDone(3, 0.5, 0.012, True, False, 200, server_total_ms=10.5, row={"latency_s": 0.012}),
        ResourceSample(3, 0.25, cpu_cores=0.9, mem_bytes=123, source="cgroup-v1"),
        CellFinished(3, CellStatus.OOM, "OOM-killed", {"p50_s": 0.01, "status": "oom"}),
    ]
    for event in events:
        line = event_to_json(event)
        assert "\n" not in line
        back = event_from_json(line, host="box1")
        assert back.host == "box1"
        assert type(back) is type(event) and back == type(event)(**{**_fields(event), "host": "box1"})
    back = event_from_json(event_to_json(events[2]))
    assert isinstance(back, CellFinished) and back.status is CellStatus.OOM
    assert set(EVENT_TYPES) >= {"SessionStarted", "CellStarted", "ColdStartPhase", "SessionFinished"}


def test_a_value_that_is_not_a_number_travels_as_not_available() -> None:
    event = CellFinished(0, CellStatus.OK, "", {"std_s": math.nan, "max_s": math.inf, "n": 1})
    back = event_from_json(event_to_json(event))
    assert isinstance(back, CellFinished)
    assert back.summary == {"std_s": None, "max_s": None, "n": 1}


@pytest.mark.parametrize(
    "line",
    ["listening on 0.0.0.0:8080", '{"type": "Nope"}', '{"type": "RequestDone", "bogus": 1}', "[1, 2]", ""],
)
def test_a_line_that_is_not_an_event_is_refused(line: str) -> None:
    with pytest.raises(EventDecodeError):
        event_from_json(line)


def _fields(event: object) -> dict[str, object]:
    from dataclasses import fields

    return {f.name: getattr(event, f.name) for f in fields(event)}  # type: ignore[arg-type]
