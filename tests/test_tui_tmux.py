"""The installed `tui-profiler` in a real terminal (tmux), as a person over SSH would use it: the screen
draws, F4 opens Results with a session's cells, Ctrl+Q quits with exit status 0."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tui_profiler.testing import synthetic

pytestmark = [
    pytest.mark.skipif(
        shutil.which("tmux") is None, reason="tmux not installed (scripts/test.sh installs it)"
    ),
    pytest.mark.slow,  # the real TUI in a real terminal: seconds of start-up and waiting per test
]


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True, timeout=30).stdout


def _wait_for(session: str, text: str | tuple[str, ...], within_s: float) -> str:
    texts = (text,) if isinstance(text, str) else text
    deadline = time.perf_counter() + within_s
    screen = ""
    while time.perf_counter() < deadline:
        screen = _tmux("capture-pane", "-p", "-t", session)
        if any(t in screen for t in texts):
            return screen
        time.sleep(0.3)
    raise AssertionError(f"{text!r} not on screen after {within_s} s:\n{screen}")


def test_tui_in_tmux_draws_and_quits_with_ctrl_q(tmp_path):
    exe = shutil.which("tui-profiler")
    if exe is None:
        pytest.skip("tui-profiler is not installed (python3 -m pip install --no-deps -e .)")
    output = tmp_path / "output"
    synthetic.write_session(output)
    status_file = tmp_path / "status"
    session = f"tuiprof-test-{time.monotonic_ns()}"
    command = (
        f"cd {shlex.quote(str(tmp_path))} && {shlex.quote(exe)} "
        f"--output {shlex.quote(str(output))}; echo $? > {shlex.quote(str(status_file))}"
    )
    _tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", command)
    try:
        _wait_for(session, "Presets", 60)
        # the matrix line: the cell count, or the engine's validation message on a small host
        screen = _wait_for(session, ("Matrix:", "✗"), 30)
        assert "Quit" in screen
        _tmux("send-keys", "-t", session, "F4")
        screen = _wait_for(session, "20250101-000000-synthetic", 30)
        assert "Export CSV" in screen
        _tmux("send-keys", "-t", session, "C-q")
        deadline = time.perf_counter() + 30
        while not status_file.exists() and time.perf_counter() < deadline:
            time.sleep(0.2)
        assert status_file.exists(), "tui-profiler did not quit on Ctrl+Q"
        assert Path(status_file).read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=30)


def test_tui_in_tmux_quits_cleanly_on_sighup(tmp_path):
    """An SSH disconnect sends SIGHUP: the app stops whatever runs and exits 128+1 instead of dying mid-way."""
    exe = shutil.which("tui-profiler")
    if exe is None:
        pytest.skip("tui-profiler is not installed (python3 -m pip install --no-deps -e .)")
    status_file = tmp_path / "status"
    pid_file = tmp_path / "pid"
    session = f"tuiprof-test-{time.monotonic_ns()}"
    command = (
        f"cd {shlex.quote(str(tmp_path))} && (echo $BASHPID > {shlex.quote(str(pid_file))}; "
        f"exec {shlex.quote(exe)} --output out); "
        f"echo $? > {shlex.quote(str(status_file))}"
    )
    _tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", command)
    try:
        _wait_for(session, "Presets", 60)
        pid = int(pid_file.read_text())
        subprocess.run(["kill", "-HUP", str(pid)], check=True, timeout=10)
        deadline = time.perf_counter() + 30
        while not status_file.exists() and time.perf_counter() < deadline:
            time.sleep(0.2)
        assert status_file.exists(), "tui-profiler did not exit on SIGHUP"
        assert status_file.read_text().strip() == "129"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=30)
