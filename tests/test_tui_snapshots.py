"""Snapshot tests of each screen at 80×24 and 120×40 with deterministic data (fixed presets, host limits,
a synthetic session and a synthetic event stream; no clock or host value on screen).

Update after an intended change: `python3 -m pytest tests/test_tui_snapshots.py --snapshot-update`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_profiler.testing import synthetic
from tui_profiler.testing.harness import deterministic_env, show_live
from tui_profiler.tui.app import make_app

SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def app(monkeypatch, tmp_path):
    output, host = deterministic_env(monkeypatch, tmp_path)
    return make_app(output_dir=output, host_limits=host, clock=lambda: 0.0)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_setup_screen(snap_compare, app, size):
    async def settle(pilot):
        await pilot.pause()
        app.screen.query_one("#preset-list").focus()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_live_screen(snap_compare, app, size):
    events = synthetic.up_to_cell(synthetic.event_stream(n_requests=24, failed_cell=1), 4, 40)

    async def feed(pilot):
        await show_live(app, pilot, events)

    assert snap_compare(app, terminal_size=size, run_before=feed)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_results_screen(snap_compare, app, size):
    async def open_results(pilot):
        await pilot.press("f4")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=open_results)


def test_results_figure(snap_compare, app):
    async def open_figure(pilot):
        await pilot.press("f4")
        await pilot.pause()
        await pilot.press("f")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(120, 40), run_before=open_figure)


def test_input_picker(snap_compare, app, monkeypatch):
    from pathlib import Path

    # the tree starts at the working folder: here, the repository's test data (its photos)
    monkeypatch.chdir(Path(__file__).resolve().parent / "data")

    async def open_picker(pilot):
        await pilot.pause()
        await pilot.press("ctrl+o")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(120, 40), run_before=open_picker)


@pytest.fixture
def generative_app(monkeypatch, tmp_path):
    output, host = deterministic_env(monkeypatch, tmp_path, with_session=False)
    synthetic.write_generative_session(Path(output))
    return make_app(output_dir=output, host_limits=host, clock=lambda: 0.0)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_live_screen_generative(snap_compare, generative_app, size):
    """A generative cell adds the TTFT and inter-token latency plots beside the latency plot."""
    app = generative_app
    events = synthetic.up_to_cell(
        synthetic.generative_event_stream(n_requests=24), 4, 30
    )  # 2 CPUs, 256 tokens

    async def feed(pilot):
        await show_live(app, pilot, events)

    assert snap_compare(app, terminal_size=size, run_before=feed)


def test_results_tokens_generative(snap_compare, generative_app):
    """Results' Tokens tab: TTFT and TPOT against prompt length, one line per resource config."""

    async def open_tokens(pilot):
        await pilot.press("f4")
        await pilot.pause()
        await pilot.press("t")
        await pilot.pause(0.3)

    assert snap_compare(generative_app, terminal_size=(120, 40), run_before=open_tokens)
