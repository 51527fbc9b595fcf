"""The Textual app: Setup (F2), Live (F3), Results (F4). `make_app()` is the one factory the CLI and the
tests share.

The app owns the run: a `SweepRunner` as a Textual worker whose `emit` callback feeds a `LiveState`
(bounded, O(1) per event); the screens only read that state on a timer.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tui_profiler.tui.live_state import LiveState
from tui_profiler.tui.screens.live import LiveScreen
from tui_profiler.tui.screens.results import ResultsScreen
from tui_profiler.tui.screens.setup import SetupScreen

STOP_TIMEOUT_S = 120.0  # cleanup (container removal, flush) normally takes seconds


class ProfilerApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "tui-profiler"
    MODES: ClassVar = {"setup": SetupScreen, "live": LiveScreen, "results": ResultsScreen}
    DEFAULT_MODE = "setup"
    BINDINGS: ClassVar = [
        Binding("f2", "switch_mode('setup')", "Setup"),
        Binding("f3", "switch_mode('live')", "Live"),
        Binding("f4", "switch_mode('results')", "Results"),
        Binding("ctrl+t", "toggle_theme", "Light/dark"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        *,
        output_dir: str | None = None,
        preset: str | None = None,
        start_live: bool = False,
        overrides: Iterable[str] = (),
        runtime: str | None = None,
        fleet: Any = None,
        host_limits: Callable[[], Any] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.fleet = fleet  # a FleetConfig from `run --hosts` (None: the preset's [fleet], or this machine)
        self.output_dir = str(output_dir or "output")
        self.initial_preset = preset
        self.start_live = start_live
        self.overrides = list(overrides)
        self.runtime_name = runtime
        self._host_limits = host_limits
        self._clock = clock
        self.live_state = self.new_live_state()
        self.runner: Any = None
        self.sweep_worker: Worker[None] | None = None
        self.last_session_dir: str | None = None
        self.theme = "textual-dark"

    def run(self, *args: Any, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> int | None:
        """Run on uvloop when it is installed, as the headless runs do: the load generator shares this
        loop, and uvloop halves its per-request cost."""
        if loop is None:
            from tui_profiler.load.client import new_event_loop

            loop = new_event_loop()
            try:
                return super().run(*args, loop=loop, **kwargs)
            finally:
                loop.close()
        return super().run(*args, loop=loop, **kwargs)

    # ---------------------------------------------------------------- engine access (tests may inject)

    def host(self) -> Any:
        """The host's limits (cores, memory, GPUs and why), from the engine."""
        if self._host_limits is not None:
            return self._host_limits()
        from tui_profiler.host import host_limits

        return host_limits()

    def new_live_state(self) -> LiveState:
        return LiveState(clock=self._clock) if self._clock else LiveState()

    def on_mount(self) -> None:
        self._install_signal_handlers()
        if self.start_live and self.initial_preset:
            self.call_after_refresh(self._start_initial)

    def _start_initial(self) -> None:
        from tui_profiler.config import PresetError, load_preset

        if self.initial_preset is None:
            return
        try:
            preset = load_preset(self.initial_preset, self.overrides)
        except PresetError as exc:
            self.notify(str(exc), severity="error", timeout=15)
            return
        self.start_run(preset)

    def _install_signal_handlers(self) -> None:
        """SIGTERM and SIGHUP (an SSH disconnect) stop the sweep cleanly, as Ctrl+Q does: no container
        is left behind and the session stays resumable. Exit status 128 + the signal number."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / not POSIX
                pass

    def _on_signal(self, sig: int) -> None:
        self.run_worker(self._quit_after_stop(128 + int(sig)), group="quit")

    async def _quit_after_stop(self, code: int) -> None:
        await self.stop_run()
        self.exit(return_code=code)

    # ---------------------------------------------------------------- the run

    def is_running_sweep(self) -> bool:
        return self.sweep_worker is not None and self.sweep_worker.state in (
            WorkerState.PENDING,
            WorkerState.RUNNING,
        )

    def start_run(self, preset: Any, resume: str | None = None) -> bool:
        """Start a sweep of `preset` as a worker and show the live screen."""
        if self.is_running_sweep():
            self.notify("a sweep is already running (Live: F3, stop it with s)", severity="warning")
            return False
        from tui_profiler.sweep import SweepRunner

        try:
            runner = SweepRunner(
                preset, runtime=self.runtime_name, output_dir=self.output_dir, resume=resume, fleet=self.fleet
            )
        except (ValueError, OSError) as exc:  # e.g. a PresetError or an unwritable output folder
            self.notify(
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__, severity="error", timeout=15
            )
            return False
        self.live_state = self.new_live_state()
        self.runner = runner
        self.sweep_worker = self.run_worker(
            self._run_sweep(self.runner), name="sweep", group="sweep", exit_on_error=False
        )
        self.switch_mode("live")
        return True

    async def _run_sweep(self, runner: Any) -> None:
        from tui_profiler.session.store import recording

        state = self.live_state
        try:
            finished = await runner.run(recording(state.ingest))
        except asyncio.CancelledError:
            state.log("warning", "sweep cancelled")
            raise
        except Exception as exc:  # the engine failed outright: say it, keep the app alive
            state.log("error", f"sweep failed: {type(exc).__name__}: {exc}")
            self.notify(f"sweep failed: {exc}", severity="error", timeout=15)
            return
        if finished is not None:
            self.last_session_dir = finished.session_dir
            self.notify(
                f"sweep {finished.status}: {finished.n_cells} cells, {finished.n_failed} failed "
                "— F4 shows the results",
                timeout=10,
            )

    async def stop_run(self) -> None:
        """Graceful stop: the runner removes its container and flushes its files; then wait for it."""
        worker = self.sweep_worker
        if worker is None or not self.is_running_sweep():
            return
        self.live_state.log("warning", "stopping: removing the container, flushing the session files")
        if self.runner is not None:
            self.runner.request_stop()
        try:
            await asyncio.wait_for(worker.wait(), timeout=STOP_TIMEOUT_S)
        except (TimeoutError, Exception):
            worker.cancel()  # the runner's own finally blocks still clean up on cancellation
            try:
                await asyncio.wait_for(worker.wait(), timeout=30)
            except Exception:
                pass

    async def action_quit(self) -> None:
        if self.is_running_sweep():
            self.notify("stopping the sweep and cleaning up before quitting…", timeout=30)
            await self.stop_run()
        self.exit(return_code=0)

    # ---------------------------------------------------------------- look

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Setup", "Choose a preset and resources (F2)", lambda: self.switch_mode("setup"))
        yield SystemCommand("Live", "Watch the running sweep (F3)", lambda: self.switch_mode("live"))
        yield SystemCommand(
            "Results", "Browse sessions, figures and export (F4)", lambda: self.switch_mode("results")
        )
        yield SystemCommand("Light/dark theme", "Toggle the colour theme (Ctrl+T)", self.action_toggle_theme)
        if self.is_running_sweep():
            yield SystemCommand(
                "Stop sweep",
                "Stop the running sweep and clean up",
                lambda: self.run_worker(self.stop_run(), group="stop"),
            )


def make_app(
    output_dir: str | None = None,
    preset: str | None = None,
    start_live: bool = False,
    overrides: Iterable[str] = (),
    runtime: str | None = None,
    *,
    fleet: Any = None,
    host_limits: Callable[[], Any] | None = None,
    clock: Callable[[], float] | None = None,
) -> ProfilerApp:
    """Build the app. `preset` preselects a preset (name or path); with `start_live` the sweep starts at
    once. `host_limits` and `clock` exist for deterministic tests and screenshots."""
    if output_dir is not None:
        output_dir = str(Path(output_dir))
    return ProfilerApp(
        output_dir=output_dir,
        preset=preset,
        start_live=start_live,
        overrides=overrides,
        runtime=runtime,
        fleet=fleet,
        host_limits=host_limits,
        clock=clock,
    )
