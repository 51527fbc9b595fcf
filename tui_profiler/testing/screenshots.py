"""Save SVG screenshots of every screen with deterministic data: `python3 -m tui_profiler.testing.screenshots
[OUT_DIR]` (default docs/screenshots). The README shows them."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from tui_profiler.testing import synthetic
from tui_profiler.testing.harness import Patcher, deterministic_env, show_live
from tui_profiler.tui.app import make_app


async def _shoot(
    out: Path, output_dir: str, host: Any, size: tuple[int, int], suffix: str, light: bool = False
) -> None:
    app = make_app(output_dir=output_dir, host_limits=host, clock=lambda: 0.0)
    async with app.run_test(size=size) as pilot:
        if light:
            app.theme = "textual-light"
        await pilot.pause(0.3)
        app.save_screenshot(str(out / f"setup{suffix}.svg"))
        events = synthetic.up_to_cell(synthetic.event_stream(n_requests=24, failed_cell=1), 4, 40)
        await show_live(app, pilot, events, settle_s=0.5)
        app.save_screenshot(str(out / f"live{suffix}.svg"))
        await pilot.press("f4")
        await pilot.pause(0.5)
        app.save_screenshot(str(out / f"results{suffix}.svg"))
        if not suffix:
            await pilot.press("f")
            await pilot.pause(0.3)
            app.save_screenshot(str(out / "results-figure.svg"))
            await pilot.press("h")
            await pilot.pause(0.3)
            app.save_screenshot(str(out / "results-histogram.svg"))
            await pilot.press("m")
            for _ in range(60):  # the fit runs in a thread
                await pilot.pause(0.25)
                if "fitting" not in str(app.screen.query_one("#fit-text").render()):
                    break
            app.save_screenshot(str(out / "results-fit.svg"))
        await pilot.press("ctrl+q")


async def _shoot_generative(out: Path, output_dir: str, host: Any) -> None:
    """Live and Results (Tokens tab) for a synthetic generative session."""
    app = make_app(output_dir=output_dir, host_limits=host, clock=lambda: 0.0)
    async with app.run_test(size=(120, 40)) as pilot:
        events = synthetic.up_to_cell(synthetic.generative_event_stream(n_requests=24), 4, 30)
        await show_live(app, pilot, events, settle_s=0.5)
        app.save_screenshot(str(out / "live-generative.svg"))
        await pilot.press("f4")
        await pilot.pause(0.3)
        await pilot.press("t")
        await pilot.pause(0.3)
        app.save_screenshot(str(out / "results-tokens.svg"))
        await pilot.press("ctrl+q")


def generative_screenshots(out: Path) -> None:
    patcher = Patcher()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            output_dir, host = deterministic_env(patcher, Path(tmp), with_session=False)
            synthetic.write_generative_session(Path(output_dir))
            asyncio.run(_shoot_generative(out, output_dir, host))
    finally:
        patcher.undo()


def main(out_dir: str = "docs/screenshots") -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    patcher = Patcher()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            output_dir, host = deterministic_env(patcher, Path(tmp))
            asyncio.run(_shoot(out, output_dir, host, (120, 40), ""))
            asyncio.run(_shoot(out, output_dir, host, (80, 24), "-80x24"))
            asyncio.run(_shoot(out, output_dir, host, (120, 40), "-light", light=True))
    finally:
        patcher.undo()
    generative_screenshots(out)
    for path in sorted(out.glob("*.svg")):
        print(path)


if __name__ == "__main__":
    main(*sys.argv[1:2])
