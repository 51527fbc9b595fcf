"""The sweep: run the cells of a plan against real targets and emit events; it writes no file.

- `runner`: a session's life (`SweepRunner`: runtime, `SessionStarted` … `SessionFinished`, stop, resume);
- `order`: which cell runs next (`GridOrder`: the plan's order);
- `local`, `fleet`: the two drivers, one host or several, over the same group and cell code;
- `group`: one container group (its target started once, its cells, its stop); `container`: that target;
- `cell`: one cell (inputs, sampler, load, status; `fail_cells`, the one way a cell fails unrun);
- `outcome`: what a finished cell amounts to (status, reason, its cells.csv row), without I/O;
- `context`, `control`: what the pieces share (the emitter, where cells run; the stop request);
- `targets`: what is started for a cell; `schedule`: the fleet's queue and hosts; `measure`: a fleet
  container group's measuring side.
"""

from tui_profiler.sweep.runner import SweepRunner

__all__ = ["SweepRunner"]
