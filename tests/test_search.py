"""The capacity search (`load.search = "slo"`, `run --find-max-load`, `tui_profiler.sweep.search`): its
bracket and bisection against a fake judge, its verdicts from the percentile's interval, the order it hands
the sweep (cells made as it goes, more requests when unsure, a `server` flag ending the climb), the
capacity.csv row and its event, and `fit --recommend --rps` over capacity rows.

These need no server: the closed- and open-loop runs against a stdlib server of known capacity are in
tests/test_search_server.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tui_profiler.config import load_preset
from tui_profiler.events import (
    CapacityFound,
    CellFinished,
    Event,
    RequestDone,
    event_from_json,
    event_to_json,
)
from tui_profiler.plan import build_plan
from tui_profiler.session.schema import CAPACITY_COLUMNS, CellStatus
from tui_profiler.sweep.search import (
    FAILED_REQUEST_S,
    MAX_CONCURRENCY,
    RATE_RESOLUTION,
    Bracket,
    SearchOrder,
    Verdict,
    judge,
)


def _climb(kind: str, start: float, meets: Any) -> tuple[Bracket, list[float]]:
    bracket = Bracket(kind, start)
    tried: list[float] = []
    while (level := bracket.next_level()) is not None:
        tried.append(level)
        bracket.tell(level, meets(level))
        assert len(tried) < 60
    return bracket, tried


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7, 8, 9, 31, 100, 1000])
@pytest.mark.parametrize("start", [1, 4])
def test_concurrency_bracket_and_bisect_find_the_largest_level_that_meets(k: int, start: int) -> None:
    bracket, tried = _climb("concurrency", start, lambda c: c <= k)
    if k >= start:
        assert (bracket.low, bracket.high, bracket.stop_reason) == (k, k + 1, "resolved")
    else:  # the first level fails: halve down
        assert bracket.low == k and bracket.high is not None and bracket.high > k
    assert len(tried) == len(set(tried))  # no level twice
    assert len(tried) <= 2 * math.ceil(math.log2(max(k, 2))) + 3


def test_concurrency_search_stops_at_the_ceiling_and_when_one_worker_fails() -> None:
    bracket, tried = _climb("concurrency", 1, lambda c: True)
    assert (bracket.low, bracket.high, bracket.stop_reason) == (MAX_CONCURRENCY, None, "ceiling")
    assert tried[-1] == MAX_CONCURRENCY and len(tried) == 13
    bracket, tried = _climb("concurrency", 4, lambda c: False)
    assert (bracket.low, bracket.high, bracket.stop_reason, tried) == (None, 1, "lowest_fails", [4, 2, 1])


@pytest.mark.parametrize("capacity", [0.7, 3.0, 19.9, 20.0, 55.5, 1234.0])
def test_rate_search_ends_within_its_resolution_of_the_capacity(capacity: float) -> None:
    bracket, _ = _climb("rate", 10.0, lambda r: r <= capacity)
    if capacity < 10.0 / 16:
        assert bracket.stop_reason == "lowest_fails"
        return
    assert bracket.low is not None and bracket.high is not None
    assert bracket.low <= capacity < bracket.high
    assert bracket.high - bracket.low <= RATE_RESOLUTION * bracket.low
    assert bracket.stop_reason == "resolved"


def test_judge_decides_from_the_interval_and_waits_when_unsure() -> None:
    q = 0.5
    assert judge({"e2e": [0.10] * 30}, {"e2e": 0.2}, q)[0] == Verdict.MEETS
    assert judge({"e2e": [0.30] * 30}, {"e2e": 0.2}, q)[0] == Verdict.FAILS
    straddling = [0.1, 0.3] * 15  # the median's interval holds the bound
    assert judge({"e2e": straddling}, {"e2e": 0.2}, q)[0] == Verdict.UNSURE
    # p99 of 20 requests: no upper bound exists (368 needed), so 'meets' cannot be said yet ...
    verdict, (j,) = judge({"e2e": [0.1] * 20}, {"e2e": 0.2}, 0.99)
    assert verdict == Verdict.UNSURE and j.interval.hi is None and j.interval.n_needed == 368
    # ... but 'fails' can: the lower bound is an order statistic of the 20
    assert judge({"e2e": [0.3] * 20}, {"e2e": 0.2}, 0.99)[0] == Verdict.FAILS
    # every objective must meet; one that fails decides
    assert judge({"ttft": [0.1] * 30, "tpot": [0.3] * 30}, {"ttft": 0.2, "tpot": 0.2}, q)[0] == Verdict.FAILS
    # failed requests count as slower than any bound
    assert judge({"e2e": [FAILED_REQUEST_S] * 30}, {"e2e": 0.2}, q)[0] == Verdict.FAILS


# ------------------------------------------------------------------------------------------ the order


def _preset(*overrides: str) -> Any:
    return load_preset(
        "smoke",
        [
            "load.search=slo",
            "load.warmup=0",
            "load.requests=20",
            "load.concurrency=1",
            "resources.cpus=1,2",
            "resources.memory_gb=2",
            "input.scales=1",
            "slo.e2e_s=0.36",
            "slo.percentile=50",
            *overrides,
        ],
    )


class FakeSweep:
    """Drives a SearchOrder as `run_local` and `run_group` do, with a fake server: a cell at concurrency c
    of a container with `cpus` CPUs answers each request in `latency(c, cpus, i)` seconds."""

    def __init__(self, preset: Any, latency: Any, extra_row: Any = None) -> None:
        self.events: list[Event] = []
        self.order = SearchOrder(preset, build_plan(preset), self.events.append)
        self.latency = latency
        self.extra_row = extra_row or (lambda cell: {})
        self.cells: list[Any] = []

    def run(self) -> list[dict[str, Any]]:
        while (first := self.order.next_cell()) is not None:
            cell = first
            while cell is not None:
                self.cells.append(cell)
                self._run_cell(cell)
                cell = self.order.next_cell(first.container_group)
        self.order.flush()
        return [e.row for e in self.events if isinstance(e, CapacityFound)]

    def _run_cell(self, cell: Any) -> None:
        n = cell.requests or 20
        level = cell.concurrency or cell.rate
        for i in range(n):
            lat = self.latency(level, cell.cpus, i)
            event = RequestDone(cell.index, i * 0.01, lat, True, False, 200, row={"latency_s": lat})
            self.events.append(event)
            self.order.observe(event)
        row = {"n": n, "errors": 0, "throughput_rps": 10.0 * level, "model_name": "m", "pixels": 100}
        row |= self.extra_row(cell)
        finished = CellFinished(cell.index, CellStatus.OK, "", row)
        self.events.append(finished)
        self.order.record(finished)


def test_each_configuration_gets_its_largest_concurrency_within_the_slo() -> None:
    """A server whose latency is c · S / cpus: with S = 0.1 s and the bound 0.36 s, the largest c is 3 at one
    CPU and 7 at two (known by arithmetic)."""
    sweep = FakeSweep(_preset(), lambda c, cpus, i: c * 0.1 / cpus)
    rows = sweep.run()
    assert [(r["cpu_cores"], r["max_load"], r["next_load"]) for r in rows] == [(1.0, 3, 4), (2.0, 7, 8)]
    one, two = rows
    assert one["decided"] is True and one["stop_reason"] == "resolved" and one["load_kind"] == "concurrency"
    assert one["slo_metric"] == "e2e" and one["slo_percentile"] == 50.0 and one["slo_bound_s"] == 0.36
    assert one["slo_value_s"] == pytest.approx(0.3) and one["slo_hi_s"] == pytest.approx(0.3)
    assert one["throughput_rps"] == pytest.approx(30.0) and one["throughput_per_core"] == pytest.approx(30.0)
    assert two["throughput_per_core"] == pytest.approx(35.0)
    assert one["steps"] == "1 meets (n=20); 2 meets (n=20); 4 fails (n=20); 3 meets (n=20)"
    assert set(one) <= set(CAPACITY_COLUMNS)
    # new cell indices, in order; each configuration's cells in its own container group
    assert [c.index for c in sweep.cells] == list(range(len(sweep.cells)))
    assert [c.container_group for c in sweep.cells] == [0] * 4 + [1] * len(sweep.cells[4:])
    assert one["cells"] == "0 1 2 3"
    # each worker sends at least four requests: 20 suffice up to c = 5, then 4 c
    two_cells = [(c.concurrency, c.requests) for c in sweep.cells if c.container_group == 1]
    assert two_cells == [(1, None), (2, None), (4, None), (8, 32), (6, 24), (7, 28)]
    # each capacity row goes out after its search's last CellFinished, before the next search's cells
    kinds = [type(e).__name__ for e in sweep.events if not isinstance(e, RequestDone)]
    assert kinds[4] == "CapacityFound" and kinds[:4] == ["CellFinished"] * 4
    assert sweep.order.upper_bound >= len(sweep.cells)


def test_an_unsure_level_gets_more_requests_then_a_conservative_verdict() -> None:
    """p99 over 20 requests has no upper bound: the level runs again with as many requests as a bounded
    interval needs, pooled; a level whose interval keeps straddling the bound fails at the request cap, and
    the row says it was not decided."""
    sweep = FakeSweep(_preset("slo.percentile=99"), lambda c, cpus, i: c * 0.1 / cpus)
    one, _ = sweep.run()
    assert one["max_load"] == 3 and one["decided"] is True
    first_cells = [c for c in sweep.cells if c.container_group == 0]
    assert [(c.concurrency, c.requests) for c in first_cells[:2]] == [(1, None), (1, 348)]  # 368 in all
    assert one["slo_n"] == 368 and one["slo_hi_s"] == pytest.approx(0.3)

    # half the requests at 0.3 s and half at 0.4 s at c=3: the median's interval holds 0.36 s however many
    def straddle(c: int, cpus: float, i: int) -> float:
        return (0.3 if i % 2 else 0.4) if c == 3 else c * 0.1

    sweep = FakeSweep(_preset("resources.cpus=1"), straddle)
    (row,) = sweep.run()
    assert row["max_load"] == 2 and row["decided"] is False
    assert "3 fails (n=160, undecided)" in row["steps"]  # 8 x the first cell's 20 requests
    assert [c.requests for c in sweep.cells if c.concurrency == 3] == [None, 20, 40, 80]


def test_a_server_flag_fails_its_level_whatever_the_interval() -> None:
    def flagged(cell: Any) -> dict[str, Any]:
        return {"saturation": "client+server"} if (cell.concurrency or 0) >= 2 else {}

    sweep = FakeSweep(_preset("resources.cpus=1"), lambda c, cpus, i: 0.01, flagged)
    (row,) = sweep.run()
    assert row["max_load"] == 1 and row["next_load"] == 2
    assert "2 fails (n=20, undecided, client saturated, server saturated)" in row["steps"]
    assert row["decided"] is False  # the client flag: its verdict stands, not decided


def test_a_target_that_sends_nothing_ends_every_search_of_its_container() -> None:
    """A cell with no timed request (the target did not start): the container group's searches end, one
    capacity row each, with no load; the next configuration is searched as usual."""
    preset = _preset("input.scales=0.5,1")
    events: list[Event] = []
    order = SearchOrder(preset, build_plan(preset), events.append)
    first = order.next_cell()
    assert first is not None and first.container_group == 0
    assert order.next_cell(0) is None  # the group drains while its cell is out (run_group's start failure)
    order.record(CellFinished(first.index, CellStatus.START_FAILED, "engine said no", {"n": 0, "errors": 0}))
    second = order.next_cell()
    assert second is not None and second.container_group == 1
    rows = [e.row for e in events if isinstance(e, CapacityFound)]
    assert [(r["input_scale"], r["max_load"], r["stop_reason"]) for r in rows] == [
        (0.5, None, "no_requests"),
        (1.0, None, "no_requests"),
    ]
    assert "start_failed (engine said no)" in rows[0]["reason"] and rows[0]["decided"] is False


def test_an_open_loop_search_bisects_rates() -> None:
    preset = _preset("load.mode=open", "load.rates=4", "resources.cpus=1")

    def latency(rate: float, cpus: float, i: int) -> float:
        return 0.1 if rate <= 20.0 else 0.1 + i * 0.05  # the queue grows past 20 requests/s

    def flags(cell: Any) -> dict[str, str]:
        # A growing queue has no steady latency (its interval stays unbounded: the dependence is the
        # trend); the saturation judge flags it `server`, which fails the level outright.
        return {"saturation": "server"} if cell.rate > 20.0 else {}

    (row,) = FakeSweep(preset, latency, flags).run()
    assert row["load_kind"] == "rate" and row["decided"] is True
    assert row["max_load"] <= 20.0 < row["next_load"] <= row["max_load"] * (1 + RATE_RESOLUTION)


def test_the_capacity_event_travels_as_a_json_line() -> None:
    event = CapacityFound({"max_load": 3, "slo_hi_s": None, "decided": True})
    back = event_from_json(event_to_json(event), host="box")
    assert back == CapacityFound({"max_load": 3, "slo_hi_s": None, "decided": True}, host="box")


def test_a_search_needs_an_slo_and_runs_in_one_go(tmp_path: Any) -> None:
    import asyncio

    from tui_profiler.config import PresetError
    from tui_profiler.session.store import recording
    from tui_profiler.sweep import SweepRunner

    with pytest.raises(PresetError, match=r"load.search: 'slo' — a capacity search needs an \[slo\]"):
        load_preset("smoke", ["load.search=slo"])
    runner = SweepRunner(_preset(), output_dir=tmp_path, resume=tmp_path)
    with pytest.raises(ValueError, match="cannot be resumed"):
        asyncio.run(runner.run(recording()))


# ------------------------------------------------------------------------------ capacity.csv and fit


def _capacity_session(tmp_path: Any, name: str = "s") -> Any:
    """A session folder with a capacity.csv written the way a run writes it: CapacityFound events through
    the session writer."""
    from tui_profiler.events import SessionFinished, SessionStarted
    from tui_profiler.session.schema import SessionStatus
    from tui_profiler.session.store import SessionWriter

    session = tmp_path / name
    writer = SessionWriter()
    writer(SessionStarted("s", str(session), "smoke", "docker", "test", 8, meta={"search": {"kind": "slo"}}))
    for cpus, mem, rps, decided in ((1.0, 2.0, 10.0, True), (2.0, 2.0, 25.0, True), (4.0, 4.0, 45.0, False)):
        row = {
            "model_name": "m",
            "cpu_cores": cpus,
            "mem_cap_gb": mem,
            "gpu_mode": "off",
            "gpus": 0,
            "input_scale": 1.0,
            "load_kind": "concurrency",
            "max_load": int(rps / 5),
            "slo_metric": "e2e",
            "slo_percentile": 99.0,
            "slo_bound_s": 0.5,
            "throughput_rps": rps,
            "throughput_per_core": rps / cpus,
            "decided": decided,
            "stop_reason": "resolved",
        }
        writer(CapacityFound(row))
    writer(SessionFinished(str(session), SessionStatus.OK, 8, 0, 1.0))
    return session


def test_the_writer_puts_capacity_rows_in_capacity_csv(tmp_path: Any) -> None:
    from tui_profiler.session.reader import read_capacity, read_rows

    session = _capacity_session(tmp_path)
    header, rows = read_rows(session / "capacity.csv")
    assert header == CAPACITY_COLUMNS
    assert [(r["cpu_cores"], r["max_load"], r["decided"]) for r in rows] == [
        ("1.0", "2", "1"),
        ("2.0", "5", "1"),
        ("4.0", "9", "0"),
    ]
    assert read_capacity(session) == rows and read_capacity(tmp_path) == []


def test_recommend_rps_picks_the_cheapest_configuration_times_its_replicas(tmp_path: Any) -> None:
    """Costs at the default weights (1 per CPU, 0.125 per GB): 1.25, 2.25 and 4.5. 20 req/s: two 1-CPU
    containers cost 2.5, one 2-CPU container 2.25. 40 req/s: two 2-CPU (4.5) tie one 4-CPU (4.5), whose
    search was not decided: the answer lies within noise."""
    from tui_profiler.analysis.capacity import read_capacity as read_frame
    from tui_profiler.analysis.capacity import recommend_capacity

    frame = read_frame([_capacity_session(tmp_path)])
    rec = recommend_capacity(frame, 20.0)
    assert rec.best is not None and (rec.best.cpu_cores, rec.best.replicas, rec.best.cost) == (2.0, 1, 2.25)
    assert rec.decided and rec.slo == "e2e p99 <= 0.5 s" and rec.size == "input_scale=1"
    rec = recommend_capacity(frame, 40.0)
    assert rec.best is not None and (rec.best.cpu_cores, rec.best.replicas) == (4.0, 1)
    assert not rec.decided and "within noise" in "\n".join(rec.summary_lines())
    one = recommend_capacity(frame, 10.0).best  # one 1-CPU container serves 10 req/s: the cheapest
    assert one is not None and (one.cpu_cores, one.replicas) == (1.0, 1)
    assert "within 5% of what the choice served" in recommend_capacity(frame, 10.0).summary_lines()[-1]
    with pytest.raises(ValueError, match="input_scale: 2 was not searched"):
        recommend_capacity(frame, 20.0, size_column="input_scale", size=2.0)


def test_fit_recommend_rps_reads_the_sessions_capacity(tmp_path: Any, capsys: Any) -> None:
    from tui_profiler.cli import main

    session = _capacity_session(tmp_path)
    out = tmp_path / "rec.json"
    assert main(["fit", str(session), "--recommend", "--rps", "20", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cheapest: gpu=off, 2 CPUs, 2 GB: 25 req/s each at concurrency 5, cost 2.25" in text
    assert "decided: the capacity searches it rests on were decided" in text
    assert '"replicas": 1' in out.read_text()
    assert main(["fit", str(session), "--rps", "20"]) == 2
    assert "--rps: only used with --recommend" in capsys.readouterr().err
    assert main(["fit", str(session), "--recommend", "--rps", "20", "--slo-p99", "1"]) == 2
    assert main(["fit", str(tmp_path), "--recommend", "--rps", "20"]) == 2
    assert "capacity.csv: none in the paths given" in capsys.readouterr().err


async def test_the_results_screen_shows_a_sessions_capacity(monkeypatch: Any, tmp_path: Any) -> None:
    """The Capacity tab shows capacity.csv for a session that has one, and hides for one that has not."""
    from textual.widgets import DataTable, OptionList, TabbedContent

    from tui_profiler.testing.harness import deterministic_env
    from tui_profiler.tui.app import make_app

    output, host = deterministic_env(monkeypatch, tmp_path)
    _capacity_session(Path(output), "20990101-000000-smoke")  # the newest: shown first
    app = make_app(output_dir=output, host_limits=host)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        tabs = screen.query_one("#result-tabs", TabbedContent)
        await pilot.press("a")
        await pilot.pause()
        assert tabs.active == "tab-capacity"
        table = screen.query_one("#capacity-table", DataTable)
        assert table.row_count == 3
        assert [str(c) for c in table.get_row_at(0)][:5] == ["1", "2", "0", "×1", "c=2"]
        assert str(table.get_row_at(2)[-1]) == "within noise"
        sessions = screen.query_one("#session-list", OptionList)
        sessions.highlighted = 1  # the synthetic grid session: no capacity.csv
        await pilot.pause()
        assert tabs.active == "tab-cells" and not tabs.get_tab("tab-capacity").display


def test_the_live_state_of_a_search_has_no_eta() -> None:
    """A search knows only an upper bound of its cells: the Live screen shows no remaining time."""
    from tui_profiler.events import CellStarted, SessionStarted
    from tui_profiler.tui.live_state import LiveState

    clock = iter(range(100))
    state = LiveState(clock=lambda: float(next(clock)))
    state.ingest(SessionStarted("s", "/tmp/s", "smoke", "url", "", 100, meta={"search": {"max_cells": 100}}))
    state.ingest(CellStarted(0, 100, {"concurrency": 1}, eta_s=None))
    state.ingest(CellFinished(0, CellStatus.OK, "", {"n": 20}))
    assert state.searching and state.eta() is None and state.n_cells == 100
    grid = LiveState(clock=lambda: float(next(clock)))
    grid.ingest(SessionStarted("g", "/tmp/g", "smoke", "url", "", 4))
    grid.ingest(CellStarted(0, 4, {"concurrency": 1}))
    grid.ingest(CellFinished(0, CellStatus.OK, "", {"n": 20}))
    assert not grid.searching and grid.eta() is not None
