"""A deterministic environment for the TUI's tests, snapshots and screenshots (no host-dependent values).

`deterministic_env(monkeypatch, tmp_path)` points the engine's preset discovery at two fixed presets,
fixes the host limits the engine validates against, and writes one synthetic session into an output
folder. Returns (output_dir, host_limits_callable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tui_profiler.testing import synthetic

DEMO_IMAGE = """\
description = "Demo: a small image model over three scales"
model = "mobilenet_v3_small"
weights = "random"

[input]
kind = "image"
base_size = [224, 224]
scales = [0.5, 1.0, 2.0]

[resources]
cpus = [0.5, 1, 2]
memory_gb = [1, 2, 4]
pairing = "zip"

[load]
mode = "closed"
concurrency = [1]
requests = 20
warmup = 2
"""

DEMO_TEXT = """\
description = "Demo: a text encoder over token lengths"
model = "text_encoder"
weights = "random"

[input]
kind = "tokens"
token_lens = [16, 64, 256]

[resources]
cpus = [1, 2]
memory_gb = [2, 4]
pairing = "zip"

[load]
mode = "open"
rates = [2.0, 8.0]
requests = 40
warmup = 2
"""


def fixed_host() -> Any:
    from tui_profiler.host import HostLimits

    return HostLimits(cpus=8.0, memory_gb=16.0, gpus=0, gpu_reason="no GPU (fixed for tests)")


def deterministic_env(monkeypatch: Any, tmp_path: Path, with_session: bool = True) -> tuple[str, Any]:
    import tui_profiler.config.files as presets

    builtin = tmp_path / "presets"
    builtin.mkdir(exist_ok=True)
    (builtin / "demo_image.toml").write_text(DEMO_IMAGE)
    (builtin / "demo_text.toml").write_text(DEMO_TEXT)
    user = tmp_path / "user-presets"
    user.mkdir(exist_ok=True)
    monkeypatch.setattr(presets, "builtin_presets_dir", lambda: builtin)
    monkeypatch.setenv(presets.USER_PRESETS_ENV, str(user))
    monkeypatch.setattr(presets, "host_limits", fixed_host)
    output = tmp_path / "output"
    output.mkdir(exist_ok=True)
    if with_session:
        synthetic.write_session(output)
    return str(output), fixed_host


class Patcher:
    """Just enough of pytest's monkeypatch (setattr, setenv, undo) for scripts outside pytest."""

    def __init__(self) -> None:
        self._undo: list[Any] = []

    def setattr(self, target: Any, name: str, value: Any) -> None:
        old = getattr(target, name)
        self._undo.append(lambda: setattr(target, name, old))
        setattr(target, name, value)

    def setenv(self, name: str, value: str) -> None:
        import os

        old = os.environ.get(name)
        self._undo.append(
            lambda: os.environ.pop(name, None) if old is None else os.environ.__setitem__(name, old)
        )
        os.environ[name] = value

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


async def show_live(app: Any, pilot: Any, events: list[Any], settle_s: float = 0.3) -> None:
    """Open the live screen (F3), push `events` through the app's live state and redraw it now."""
    await pilot.press("f3")
    await pilot.pause()
    for event in events:
        app.live_state.ingest(event)
    app.screen.redraw(force=True)
    await pilot.pause(settle_s)
