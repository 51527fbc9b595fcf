"""The engine never imports Textual: importing every engine module in a fresh interpreter leaves `textual`
(and plotting) out of sys.modules. The TUI and the headless CLI are consumers of the engine, not part of it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

SCRIPT = r"""
import importlib, pkgutil, sys
import tui_profiler
skip = ("tui_profiler.tui", "tui_profiler.testing", "tui_profiler.cli", "tui_profiler.commands.plot", "tui_profiler.__main__")
names = []
for info in pkgutil.walk_packages(tui_profiler.__path__, "tui_profiler."):
    if info.name.startswith(skip) or ".builtin_presets" in info.name:
        continue
    importlib.import_module(info.name)
    names.append(info.name)
# The run command is an engine consumer too: the headless path must not pull in Textual.
import tui_profiler.commands.run, tui_profiler.commands.presets
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "textual_plotext", "plotext", "matplotlib"))
print(len(names), ",".join(names))
print("BAD:" + ",".join(bad))
"""


def test_engine_imports_no_textual() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    count_line, bad_line = out.stdout.strip().splitlines()[-2:]
    names = count_line.split(" ", 1)[1].split(",")
    for must in (
        "tui_profiler.config",
        "tui_profiler.plan",
        "tui_profiler.sweep",
        "tui_profiler.session.store",
        "tui_profiler.stats",
        "tui_profiler.events",
    ):
        assert must in names, f"{must} was not imported: {names}"
    assert bad_line == "BAD:", f"engine modules imported UI/plotting modules: {bad_line}"
