"""The Setup screen picks the preset's own input files: ctrl+o opens a folder tree, the chosen folder
becomes `input.folder`, and a bad path shows the run's own one-line error inline."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DirectoryTree, Input, Static

from tui_profiler.testing.harness import deterministic_env
from tui_profiler.tui.app import make_app
from tui_profiler.tui.screens.input_picker import InputPickerScreen
from tui_profiler.tui.screens.setup import SetupScreen

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def env(monkeypatch, tmp_path):
    return deterministic_env(monkeypatch, tmp_path)


def _matrix(app) -> str:
    return str(app.screen.query_one("#matrix", Static).render())


async def test_setup_picks_a_folder_of_photos(env, monkeypatch):
    monkeypatch.chdir(DATA)
    output, host = env
    app = make_app(output_dir=output, host_limits=host)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        setup = app.screen
        assert isinstance(setup, SetupScreen)
        assert not setup.query_one("#row-files").display  # a preset without files: no files row
        await pilot.press("ctrl+o")
        await pilot.pause(0.3)
        picker = app.screen
        assert isinstance(picker, InputPickerScreen)
        tree = picker.query_one("#picker-tree", DirectoryTree)
        await pilot.press("down")  # the first entry under the root: photos/
        await pilot.pause()
        assert tree.cursor_node is not None and str(tree.cursor_node.label) == "photos"
        await pilot.press("enter")  # a folder: its path goes into the field
        await pilot.pause()
        assert picker.query_one("#picker-path", Input).value == str(DATA / "photos")
        await pilot.click("#use")
        await pilot.pause()
        assert app.screen is setup
        assert setup.data["input"]["folder"] == str(DATA / "photos")
        assert setup.query_one("#row-files").display
        assert "cells in" in _matrix(app), _matrix(app)
        assert setup.build_preset().input.folder == str(DATA / "photos")

        files = setup.query_one("#f-files", Input)
        files.value = str(DATA / "nope.jpg")
        await pilot.pause()
        assert setup.data["input"]["files"] == [str(DATA / "nope.jpg")]
        assert "input.files: '" in _matrix(app) and "— not found" in _matrix(app)
        files.value = ""
        await pilot.pause()
        assert "files" not in setup.data["input"] and "folder" not in setup.data["input"]
        assert "cells in" in _matrix(app)
