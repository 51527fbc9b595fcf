"""Pilot tests of the TUI's main flows: Setup (presets, steppers, inline validation, save), Live (an event
stream), Results (cells, figure, histogram, export), quitting. The engine-backed run is at the end
(`@pytest.mark.docker`): it runs the real `smoke` preset through the app."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, OptionList, RichLog, Static

from tui_profiler.testing import synthetic
from tui_profiler.testing.harness import deterministic_env
from tui_profiler.tui.app import make_app
from tui_profiler.tui.screens.confirm import ConfirmScreen
from tui_profiler.tui.screens.live import LiveScreen
from tui_profiler.tui.screens.results import ResultsScreen
from tui_profiler.tui.screens.setup import SetupScreen
from tui_profiler.tui.widgets.plots import HistogramPlot, LinePlot
from tui_profiler.tui.widgets.stepper import ValueSetStepper


@pytest.fixture
def env(monkeypatch, tmp_path):
    return deterministic_env(monkeypatch, tmp_path)


def _matrix(app) -> str:
    return str(app.screen.query_one("#matrix", Static).render())


async def test_setup_lists_presets_and_validates_inline_with_engine_messages(env):
    output, host = env
    app = make_app(output_dir=output, host_limits=host)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SetupScreen)
        names = [o.id for o in screen.query_one("#preset-list", OptionList).options]
        assert names == ["demo_image", "demo_text"]
        assert "9 cells in 3 containers" in _matrix(app)
        assert "ETA ≈ 2 m 00 s" in _matrix(app)  # 120 s / 9 cells from the past session × 9 cells

        # CPUs stepper: move to 1.5 and add it -> zip pairing no longer matches memory (engine message)
        cpus = screen.query_one("#f-cpus", ValueSetStepper)
        cpus.focus()
        await pilot.press("right", "right", "space")
        await pilot.pause()
        assert cpus.values == [0.5, 1.0, 1.5, 2.0]
        assert screen.data["resources"]["cpus"] == [0.5, 1.0, 1.5, 2.0]
        assert "resources.memory_gb" in _matrix(app) and "zip" in _matrix(app)
        assert screen.query_one("#matrix").has_class("-error")
        await pilot.press("space")  # remove 1.5 again
        await pilot.pause()
        assert "9 cells" in _matrix(app)

        # a bad scale list: the engine's own one-line message names the field
        scales = screen.query_one("#f-scales", Input)
        scales.value = "abc"
        await pilot.pause()
        assert "input.scales" in _matrix(app)
        scales.value = "0.5,1"
        await pilot.pause()
        assert "6 cells in 3 containers" in _matrix(app)
        assert screen.build_preset().input.scales == [0.5, 1.0]

        # the text preset shows token lengths and open-loop rates instead
        olist = screen.query_one("#preset-list", OptionList)
        olist.focus()
        await pilot.press("down")
        await pilot.pause()
        assert screen.current.name == "demo_text"
        assert screen.query_one("#row-tokens").display and not screen.query_one("#row-scales").display
        assert screen.query_one("#row-rates").display and not screen.query_one("#row-concurrency").display
        assert "12 cells in 2 containers" in _matrix(app)
        assert screen.query_one("#f-gpus", ValueSetStepper).disabled  # no GPU: disabled, reason shown


async def test_setup_saves_a_user_preset(env, tmp_path):
    output, host = env
    app = make_app(output_dir=output, host_limits=host)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.screen.query_one("#f-requests", Input).value = "7"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        name_input = app.screen.query_one("#name-input", Input)
        assert name_input.value == "my_demo_image"
        await pilot.press("enter")
        await pilot.pause()
        saved = tmp_path / "user-presets" / "my_demo_image.toml"
        assert saved.exists() and "requests = 7" in saved.read_text()
        screen = app.screen
        assert isinstance(screen, SetupScreen)
        assert [o.id for o in screen.query_one("#preset-list", OptionList).options][-1] == "my_demo_image"
        assert screen.current.name == "my_demo_image" and not screen.current.builtin


async def test_live_screen_absorbs_a_session_stream(env):
    output, host = env
    app = make_app(output_dir=output, host_limits=host)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, LiveScreen)
        for event in synthetic.event_stream(n_requests=20, failed_cell=4):
            app.live_state.ingest(event)
        await pilot.pause(0.5)  # at least one redraw tick
        assert screen.query_one("#cells-table", DataTable).row_count == 9
        assert "9/9 cells, 1 failed" in str(screen.query_one("#progress-label", Static).render())
        log_text = "\n".join(str(line.text) for line in screen.query_one("#live-log", RichLog).lines)
        assert "OOM kill" in log_text
        latency = screen.query_one("#plot-latency", LinePlot)
        assert latency._lines and "p99" in latency.title
        gpu = screen.query_one("#plot-gpu", LinePlot)
        assert gpu._unavailable and "not available" in gpu._unavailable  # no VRAM samples: said so, not 0
        # no sweep running: stop only says so
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, LiveScreen)
        # the server's own /metrics take the GPU plot's place; `m` steps to the next metric
        from tui_profiler.events import CellStarted, ServerMetrics

        app.live_state.ingest(CellStarted(99, 10, {"cpus": 1.0}))
        for t in (0.5, 1.0):
            rows = [["queued", "", 2.0 * t], ["in_flight", "", 1.0]]
            app.live_state.ingest(ServerMetrics(cell_index=99, t_s=t, rows=rows))
        await pilot.pause(0.5)
        assert gpu._lines and gpu.title.startswith("server: queued") and "1/2, m: next" in gpu.title
        await pilot.press("m")
        await pilot.pause()
        assert gpu.title.startswith("server: in_flight") and "2/2" in gpu.title


async def test_live_screen_compact_view_switches_plots_and_tables(env):
    output, host = env
    app = make_app(output_dir=output, host_limits=host)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        screen = app.screen
        assert screen.has_class("-compact")
        assert (
            not screen.query_one("#live-bottom").display
            or screen.query_one("#live-bottom").region.height == 0
        )
        await pilot.press("v")
        await pilot.pause()
        assert screen.query_one("#live-bottom").region.height > 0
        assert screen.query_one("#plots").region.height == 0


async def test_results_browse_figure_histogram_and_export(env):
    output, host = env
    app = make_app(output_dir=output, host_limits=host)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ResultsScreen)
        assert [o.id for o in screen.query_one("#session-list", OptionList).options] == [
            "20250101-000000-synthetic"
        ]
        table = screen.query_one("#result-cells", DataTable)
        assert table.row_count == 9
        await pilot.press("f")
        await pilot.pause()
        figure = screen.query_one("#scaling-plot", LinePlot)
        assert [ln.label for ln in figure._lines] == ["CPU0.5+Mem1", "CPU1+Mem2", "CPU2+Mem4"]
        await pilot.press("p")  # p99 instead of p50
        assert "p99" in figure.title
        await pilot.press("c")
        table.focus()
        await pilot.press("down", "down")
        await pilot.pause()
        hist = screen.query_one("#cell-histogram", HistogramPlot)
        assert len(hist._values) == 28 and "cell 3" in hist.title
        await pilot.press("e")
        await pilot.pause()
        merged = (
            Path(output) / "20250101-000000-synthetic" / "export" / "20250101-000000-synthetic-merged.csv"
        )
        assert merged.exists()
        assert str(merged) in str(screen.query_one("#export-text", Static).render())


async def test_quit_key_and_theme(env):
    output, host = env
    app = make_app(output_dir=output, host_limits=host)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.theme == "textual-dark"
        await pilot.press("ctrl+t")
        assert app.theme == "textual-light"
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code == 0


# ------------------------------------------------------------------------- the real engine


async def _wait(predicate, within_s: float, pilot) -> bool:
    deadline = time.perf_counter() + within_s
    while time.perf_counter() < deadline:
        if predicate():
            return True
        await pilot.pause(0.5)
    return predicate()


@pytest.mark.docker
async def test_smoke_run_through_the_tui_on_the_real_engine(tmp_path, docker_client, server_image):
    """Choose `smoke`, trim it with the controls, run it on Docker, refuse the stop prompt, see its cells in
    Results and export them."""
    output = tmp_path / "output"
    app = make_app(output_dir=str(output), preset="smoke")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SetupScreen) and screen.current.name == "smoke"
        # one container, one cell: drop 0.5 CPU and 1 GiB with the steppers (cursor starts on them)
        screen.query_one("#f-cpus", ValueSetStepper).focus()
        await pilot.press("space")
        screen.query_one("#f-memory", ValueSetStepper).focus()
        await pilot.press("space")
        screen.query_one("#f-scales", Input).value = "0.5"
        screen.query_one("#f-requests", Input).value = "4"
        await pilot.pause()
        assert screen.data["resources"]["cpus"] == [2.0] and screen.data["resources"]["memory_gb"] == [4.0]
        assert screen.error is None, screen.error
        n_cells = screen.n_cells
        assert n_cells == 1
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, LiveScreen)
        assert await _wait(lambda: app.live_state.n_requests > 0 or not app.is_running_sweep(), 300, pilot)
        if app.is_running_sweep():  # Stop asks first; 'n' keeps the run going (it may finish meanwhile)
            await pilot.press("s")
            await pilot.pause()
            if app.is_running_sweep():
                assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen)
        assert await _wait(lambda: not app.is_running_sweep(), 400, pilot), "sweep did not finish"
        state = app.live_state
        assert state.finished is not None, [text for _, _, text in state.logs]
        assert state.finished.status == "ok"  # not 'interrupted': declining the prompt did not stop it
        assert state.cells_done == n_cells
        session_id = state.session_id
        await pilot.press("f4")
        await pilot.pause(0.5)
        results = app.screen
        assert isinstance(results, ResultsScreen)
        assert results.session is not None and results.session.name == Path(state.session_dir).name
        assert results.query_one("#result-cells", DataTable).row_count == n_cells
        await pilot.press("e")
        await pilot.pause()
        assert list((Path(state.session_dir) / "export").glob("*-merged.csv"))
        await pilot.press("ctrl+q")
    assert app.return_code == 0
    left = await asyncio.to_thread(
        docker_client.containers.list, all=True, filters={"label": f"tui-profiler.session={session_id}"}
    )
    assert not left


@pytest.mark.docker
@pytest.mark.slow
async def test_ctrl_q_during_a_run_stops_and_cleans_up(tmp_path, docker_client, server_image):
    """`tui-profiler run smoke` opens the app live (start_live); Ctrl+Q mid-run stops the sweep, removes its
    container, keeps the session resumable and exits 0."""
    output = tmp_path / "output"
    app = make_app(
        output_dir=str(output),
        preset="smoke",
        start_live=True,
        overrides=["resources.cpus=2", "resources.memory_gb=4", "input.scales=0.5", "load.requests=100000"],
    )
    async with app.run_test(size=(80, 24)) as pilot:
        assert await _wait(
            lambda: (
                app.live_state.n_requests > 0 or (app.sweep_worker is not None and not app.is_running_sweep())
            ),
            400,
            pilot,
        )
        assert app.is_running_sweep(), [text for _, _, text in app.live_state.logs]
        assert isinstance(app.screen, LiveScreen)
        session_id = app.live_state.session_id
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code == 0
    assert not app.is_running_sweep()
    session_dir = Path(app.live_state.session_dir)
    assert (session_dir / "meta.json").exists() and (session_dir / "requests.csv").exists()
    left = await asyncio.to_thread(
        docker_client.containers.list, all=True, filters={"label": f"tui-profiler.session={session_id}"}
    )
    assert not left


def test_ingest_measure_reports_rates_and_keeps_history_bounded():
    """The benchmark helper BENCH calls (not a timed assertion: rates depend on the machine)."""
    from tui_profiler.bench.tui_ingest import measure_ingest
    from tui_profiler.tui.live_state import LATENCY_POINTS

    # paced over ~2 s so the 6 Hz redraw timer has ticks to show even on a fast machine
    result = measure_ingest(3 * LATENCY_POINTS, size=(80, 24), rate=6000)
    assert result["events"] == 3 * LATENCY_POINTS
    assert result["events_per_s"] > 0 and result["seconds"] > 0
    assert result["redraws"] >= 1  # the timer kept firing while events poured in
    assert result["latency_points_kept"] == LATENCY_POINTS
    assert result["rss_mb_after"] > 0
