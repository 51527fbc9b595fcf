"""Deterministic data and harnesses for the TUI's tests, snapshots and the docs screenshots: synthetic
sessions and event streams (`synthetic`), a fixed environment for the app (`harness`) and the screenshot
generator (`python3 -m tui_profiler.testing.screenshots`). Nothing here is ever shown as a measurement;
the engine never imports it."""
