"""The sweep: run every cell of a plan against real targets and emit events.

`runner.SweepRunner` orchestrates (container groups, targets started and stopped, cells, stop and resume);
`outcome` decides what a finished cell amounts to (status, reason, its CSV rows) without any I/O; `targets`
builds what is started for a cell (the `TargetSpec`, its image, the `--url` preset).
"""

from tui_profiler.sweep.runner import SweepRunner

__all__ = ["SweepRunner"]
