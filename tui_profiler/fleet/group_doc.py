"""What the local side hands a measuring container, and what its exit code means: a group's contract.

The measuring side (`tui_profiler.sweep.measure`) reads a `GroupDoc` from `TUI_PROFILER_GROUP` and writes
events as JSON lines (`tui_profiler.events.event_to_json`) on stdout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tui_profiler.errors import ExitCode

GROUP_ENV = "TUI_PROFILER_GROUP"
EXIT_OK = ExitCode.OK  # the container group ran (cells may have failed: that is data)
EXIT_BAD_DOC = ExitCode.USAGE
EXIT_TARGET_GONE = 3  # the container group's own: the target died, and the remaining cells need a fresh one
EXIT_STOPPED = ExitCode.INTERRUPTED  # SIGTERM: stopped like a Ctrl-C


@dataclass(slots=True)
class GroupDoc:
    """One container group: the preset, its cells still to run, the target to adopt."""

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
    def from_json(cls, text: str) -> GroupDoc:
        return cls(**json.loads(text))
