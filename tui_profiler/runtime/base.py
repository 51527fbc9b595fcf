"""The Runtime protocol: how the engine starts a model server under resource caps and stops it again.

Two implementations: `docker` (docker SDK, every blocking call in a thread) and `process` (the same server
as a local subprocess, capped through cgroups where writable). The sweep only talks to this protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tui_profiler.cgroups import CgroupPaths
from tui_profiler.config.model import ReadinessConfig
from tui_profiler.config.request import ResponseCheck
from tui_profiler.sample import SampleTarget
from tui_profiler.session.schema import CellStatus

SESSION_LABEL = (
    "tui-profiler.session"  # every container the tool starts carries it (see `tui-profiler clean`)
)


# How to tell the server is ready (HTTP path, the preset's request, log line or TCP connect): the
# preset's `target.readiness`.
ReadinessProbe = ReadinessConfig


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """The preset's own request, rendered (its smallest input, through its template), that a `request`
    readiness probe sends until an answer passes `check`. Built by the sweep, which knows the template;
    the runtime only sends bytes and judges the answer."""

    method: str
    path: str
    headers: Mapping[str, str]  # the content type included
    body: bytes
    check: ResponseCheck  # the template's: the statuses allowed and the JSON field the answer must have
    timeout_s: float = 60.0  # one try's limit: the preset's per-request timeout


@dataclass(slots=True)
class TargetSpec:
    """What to start and under which caps. `None` caps mean 'not capped'."""

    session_id: str
    image: str  # docker image (docker runtime); ignored by the process runtime
    model: str  # catalog model name, or "" for a foreign image
    weights: str = "random"
    port: int = 8000  # port inside the container
    extra_ports: tuple[int, ...] = ()  # other ports inside it to publish too (a metrics endpoint's)
    command: list[str] | None = None  # None: the image's default
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[tuple[str, str]] = field(default_factory=list)  # (host path, container path), read-only
    cpus: float | None = None
    memory_gb: float | None = None
    gpus: int = 0
    cpuset: bool = False  # also pin to ceil(cpus) cores
    threads: str = "auto"  # torch intra-op threads: a number, "auto" (the quota) or "host"
    readiness: ReadinessProbe = field(default_factory=ReadinessProbe)
    probe_request: ProbeRequest | None = None  # what a `request` readiness probe sends
    labels: dict[str, str] = field(default_factory=dict)
    user: str | None = None  # None: the image's user, or nobody (65534) when the image would run as root


def gb_to_bytes(gb: float) -> int:
    """GiB (what presets say, docker's `g`) as bytes."""
    return round(gb * 1024**3)


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

    @classmethod
    def asked_by(cls, spec: TargetSpec) -> EnforcedCaps:
        """The caps `spec` asks for, none enforced yet (a runtime confirms each one it can)."""
        return cls(
            cpus_requested=spec.cpus,
            memory_bytes_requested=gb_to_bytes(spec.memory_gb) if spec.memory_gb else None,
            gpus_requested=spec.gpus,
        )

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
    # Opens a Docker client for the sampler's `docker stats` fallback; only a container has one.
    stats_client: Callable[[], Any] | None = None

    def sample_target(self) -> SampleTarget:
        """What the resource sampler reads for this target: its cgroup, its processes and, for a
        container, the id the Docker stats fallback streams."""
        cgroup = None
        if self.cgroup_dir or self.cgroup_v1_dirs:
            version = 2 if self.cgroup_dir else 1
            cgroup = CgroupPaths(version, v2_dir=self.cgroup_dir, v1_dirs=dict(self.cgroup_v1_dirs))
        pgid = self.facts.get("pgid")
        return SampleTarget(
            cgroup=cgroup,
            pids=tuple(self.pids),
            pgid=int(pgid) if isinstance(pgid, int) else None,
            container_id=self.ident if self.stats_client is not None else None,
            docker_client=self.stats_client,
            cpu_cap=self.enforced.cpus_requested if self.enforced.cpus_enforced else None,
        )


PhaseCallback = Callable[[str, float | None, str], Awaitable[None] | None]


class Runtime(Protocol):
    name: str

    async def start(self, spec: TargetSpec, on_phase: PhaseCallback | None = None) -> RunningTarget:
        """Start the target, wait until ready, report each cold-start phase as it ends.
        Raises `TargetFailed` with a `CellStatus` (OOM, CRASHED, TIMEOUT, BUILD_FAILED, ...) and a reason."""
        ...

    async def stop(self, target: RunningTarget) -> dict[str, Any]:
        """Stop and remove the target (always called, in a finally). Returns exit facts: exit code,
        oom_killed, last log lines."""
        ...

    async def cleanup_session(self, session_id: str) -> int:
        """Remove everything labelled with this session; returns how many were removed."""
        ...

    async def remove_orphans(self, *, include_live: bool = False, dry_run: bool = False) -> list[str]:
        """Find and remove the targets (and their cgroups) that profiler runs on this host left behind when
        they were killed: those whose starting profiler process no longer runs. Returns one line per
        target found. `include_live`: also the targets of runs still going (`tui-profiler clean`);
        `dry_run`: list them, remove nothing."""
        ...


class TargetFailed(Exception):
    """A target that could not start or died: the cell's status and a one-line reason."""

    def __init__(self, status: CellStatus, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.phases: dict[str, float | None] = {}  # the cold-start phases measured before it failed

    def add_detail(self, detail: str) -> None:
        """Append to the reason (the target's last log lines, ...)."""
        self.reason = f"{self.reason}; {detail}"
        self.args = (f"{self.status}: {self.reason}",)
