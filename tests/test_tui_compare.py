"""The Results screen compares: space marks sessions, the Compare tab overlays them (one colour per session,
one line per session and configuration) with `compare`'s verdicts; `/` filters the session list."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, OptionList, Static, TabbedContent

from tui_profiler.testing import synthetic
from tui_profiler.testing.harness import deterministic_env
from tui_profiler.tui.app import make_app
from tui_profiler.tui.screens.results import PLOT_COLOURS, ResultsScreen
from tui_profiler.tui.widgets.plots import LinePlot


@pytest.fixture
def env(monkeypatch, tmp_path):
    output, host = deterministic_env(monkeypatch, tmp_path)
    synthetic.write_session(tmp_path / "output", "20250103-000000-synthetic-slow", n_requests=60, seed=9,
                            slowdown={0: 1.5, 4: 1.5, 8: 1.5})  # fmt: skip
    synthetic.write_generative_session(tmp_path / "output")
    return output, host


async def _wait_for(pilot, predicate, tries: int = 60) -> bool:
    for _ in range(tries):
        if predicate():
            return True
        await pilot.pause(0.1)
    return predicate()


async def test_mark_two_sessions_overlay_and_verdicts_then_filter(env):
    output, host = env
    app = make_app(output_dir=output, host_limits=host)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ResultsScreen)
        olist = screen.query_one("#session-list", OptionList)
        names = [o.id for o in olist.options]
        assert names == [
            "20250103-000000-synthetic-slow",
            "20250102-000000-synthetic-llm",
            "20250101-000000-synthetic",
        ]
        tabs = screen.query_one("#result-tabs", TabbedContent)
        olist.focus()
        olist.highlighted = 2  # the baseline first
        await pilot.pause()
        await pilot.press("space")
        olist.highlighted = 0
        await pilot.pause()
        await pilot.press("space")
        await pilot.pause()
        assert screen.marked == ["20250101-000000-synthetic", "20250103-000000-synthetic-slow"]
        await pilot.press("v")
        await pilot.pause()
        assert tabs.active == "tab-compare"
        plot = screen.query_one("#compare-plot", LinePlot)
        assert len(plot._lines) == 6  # 2 sessions × 3 configurations
        assert {ln.color for ln in plot._lines[:3]} == {PLOT_COLOURS[0]}
        assert {ln.color for ln in plot._lines[3:]} == {PLOT_COLOURS[1]}
        table = screen.query_one("#compare-table", DataTable)
        assert await _wait_for(pilot, lambda: table.row_count > 0)
        verdicts = [str(table.get_row_at(i)[4]) for i in range(table.row_count)]
        assert verdicts[0] == "slower"  # worst first
        assert "slower" in str(screen.query_one("#compare-text", Static).render())
        # unmark one: the Compare tab goes away
        await pilot.press("space")
        await pilot.pause()
        assert tabs.active != "tab-compare"
        # filter the list
        await pilot.press("slash")
        box = screen.query_one("#session-filter", Input)
        assert box.display and box.has_focus
        await pilot.press(*"llm")
        await pilot.pause()
        assert [o.id for o in olist.options] == ["20250102-000000-synthetic-llm"]
        await pilot.press("enter")
        await pilot.pause()
        assert box.display  # a filter in force stays shown
