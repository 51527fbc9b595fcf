"""What the local side hands a measuring container, and what its exit code means: the unit's contract.

The measuring side (`tui_profiler.sweep.measure`) reads a `UnitDoc` from `TUI_PROFILER_UNIT` and writes
events as JSON lines (`tui_profiler.events.event_to_json`) on stdout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tui_profiler.errors import ExitCode

UNIT_ENV = "TUI_PROFILER_UNIT"
EXIT_OK = ExitCode.OK  # the unit ran (cells may have failed: that is data)
EXIT_BAD_UNIT = ExitCode.USAGE
EXIT_TARGET_GONE = 3  # the unit's own: the target died, and the remaining cells need a fresh one
EXIT_STOPPED = ExitCode.INTERRUPTED  # SIGTERM: stopped like a Ctrl-C


@dataclass(slots=True)
class UnitDoc:
    """One unit: the preset, the cells of one resource configuration still to run, the target to adopt."""

    preset: dict[str, Any]  # `Preset.to_dict()`
    cells: list[dict[str, Any]]  # `Cell.as_dict()`, in order
    target: dict[str, Any]  # `AdoptedTarget.as_dict()`
    session_id: str
    host: str = ""
    host_class: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, text: str) -> UnitDoc:
        return cls(**json.loads(text))
