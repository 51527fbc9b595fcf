"""tui-profiler: a terminal profiler for AI-model inference containers.

The engine (presets, plan, runtime, load, sample, session, sweep, analysis) imports no Textual and can be
used as a library; `tui_profiler.tui` and `tui_profiler.cli` only consume the engine's events.
"""

__version__ = "0.1.0"
