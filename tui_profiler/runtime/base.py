"""The Runtime protocol: how the engine starts a model server under resource caps and stops it again.

Two implementations: `docker` (docker SDK, every blocking call in a thread) and `process` (the same server
as a local subprocess, capped through cgroups where writable). The sweep only talks to this protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tui_profiler.config.model import ReadinessConfig

SESSION_LABEL = (
    "tui-profiler.session"  # every container the tool starts carries it (see `tui-profiler clean`)
)


# How to tell the server is ready (HTTP path, log line or TCP connect): the preset's `target.readiness`.
ReadinessProbe = ReadinessConfig


@dataclass(slots=True)
class TargetSpec:
    """What to start and under which caps. `None` caps mean 'not capped'."""

    session_id: str
    image: str  # docker image (docker runtime); ignored by the process runtime
    model: str  # catalog model name, or "" for a foreign image
    weights: str = "random"
    port: int = 8000  # port inside the container
    command: list[str] | None = None  # None: the image's default
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[tuple[str, str]] = field(default_factory=list)  # (host path, container path), read-only
    cpus: float | None = None
    memory_gb: float | None = None
    gpus: int = 0
    cpuset: bool = False  # also pin to ceil(cpus) cores
    threads: str = "auto"  # torch intra-op threads: a number, "auto" (the quota) or "host"
    readiness: ReadinessProbe = field(default_factory=ReadinessProbe)
    labels: dict[str, str] = field(default_factory=dict)
    user: str | None = None  # None: the image's user, or nobody (65534) when the image would run as root


@dataclass(slots=True)
class EnforcedCaps:
    """Each cap as asked and as actually enforced. A cap that was asked for but could not be enforced is
    recorded with enforced=False, never as applied."""

    cpus_requested: float | None = None
    cpus_enforced: bool = False
    cpuset: str | None = None
    memory_bytes_requested: int | None = None
    memory_enforced: bool = False
    gpus_requested: int = 0
    gpus_enforced: bool = False
    notes: list[str] = field(default_factory=list)

    def as_row(self) -> dict[str, Any]:
        return {
            "cpus_requested": self.cpus_requested,
            "cpus_enforced": self.cpus_enforced,
            "cpuset": self.cpuset or "",
            "mem_bytes_requested": self.memory_bytes_requested,
            "mem_enforced": self.memory_enforced,
            "gpus_requested": self.gpus_requested,
            "gpus_enforced": self.gpus_enforced,
        }


@dataclass(slots=True)
class RunningTarget:
    """A started, ready server. `phases` holds the cold-start phases the runtime measured (seconds, or
    None where not available): image_pull, create, start, ready; server_boot and model_load come from the
    server's /healthz timeline when it reports one."""

    base_url: str
    ident: str  # container id or pid
    enforced: EnforcedCaps
    phases: dict[str, float | None] = field(default_factory=dict)
    cgroup_dir: str | None = None  # host path of the target's cgroup (v2) or a dict of v1 controllers below
    cgroup_v1_dirs: dict[str, str] = field(default_factory=dict)  # controller -> host path
    pids: list[int] = field(default_factory=list)  # host pids of the target (for NVML VRAM mapping)
    facts: dict[str, Any] = field(default_factory=dict)  # image size, /healthz runtime facts, ...


PhaseCallback = Callable[[str, float | None, str], Awaitable[None] | None]


class Runtime(Protocol):
    name: str

    async def start(self, spec: TargetSpec, on_phase: PhaseCallback | None = None) -> RunningTarget:
        """Start the target, wait until ready, report each cold-start phase as it ends.
        Raises `TargetFailed` with a status ('oom', 'crashed', 'timeout', 'build_failed', ...) and a reason."""
        ...

    async def stop(self, target: RunningTarget) -> dict[str, Any]:
        """Stop and remove the target (always called, in a finally). Returns exit facts: exit code,
        oom_killed, last log lines."""
        ...

    async def cleanup_session(self, session_id: str) -> int:
        """Remove everything labelled with this session; returns how many were removed."""
        ...


class TargetFailed(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
