"""The `adopted` runtime: a target another process started, served in this network namespace.

On a fleet host the local profiler creates and starts the target through that host's engine (timing
image_pull, create and start there). The measuring container, which uses this runtime, joins the target's
network namespace (`network_mode="container:<id>"`), so the server answers on 127.0.0.1:<port>, and reads
the target's cgroup through a read-only mount of the host's cgroup tree. `start` reports the phases the
local side measured, waits for readiness, splits the wait by the server's timeline and confirms the caps
from the kernel's files. It never creates or removes a container: a target that died cannot be replaced
from here, so a second `start` raises `TargetGone` and the local side starts a fresh one.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tui_profiler.cgroups import CgroupPaths
from tui_profiler.runtime.base import (
    EnforcedCaps,
    PhaseCallback,
    RunningTarget,
    TargetFailed,
    TargetSpec,
)
from tui_profiler.runtime.common import LOOPBACK, report_phase, report_ready_phases, wait_ready
from tui_profiler.runtime.docker import confirm_container_caps
from tui_profiler.sample.cgroup import CgroupReader, find_container_cgroup
from tui_profiler.session.schema import CellStatus, ColdStartPhaseName

# Where the measuring container sees the host's cgroup tree (a read-only bind mount).
HOST_CGROUP_MOUNT = "/host/sys/fs/cgroup"
# The phases the starting side measures, in order; the rest are measured here.
LAUNCH_PHASES: tuple[str, ...] = (
    ColdStartPhaseName.IMAGE_PULL.value,
    ColdStartPhaseName.CREATE.value,
    ColdStartPhaseName.START.value,
)


@dataclass(slots=True)
class AdoptedTarget:
    """What the starting side tells the measuring side about the target it started."""

    container_id: str
    port: int  # the server's port inside the target (its network namespace is shared)
    started_epoch: float  # the engine's StartedAt: the host's clock, as the server's timeline is
    phases: dict[str, float | None] = field(default_factory=dict)  # image_pull, create, start
    details: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    host_config: dict[str, Any] = field(default_factory=dict)  # the engine's HostConfig (the caps asked)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdoptedTarget:
        return cls(**data)


class TargetGone(BaseException):
    """The adopted target died and the rest of its cells need a fresh one, which only the side that talks
    to the engine can start. A BaseException: no cell's error handling may turn it into a cell status."""


class AdoptedRuntime:
    name = "adopted"

    def __init__(self, target: AdoptedTarget, cgroup_root: str | Path = HOST_CGROUP_MOUNT) -> None:
        self.target = target
        self.cgroup_root = Path(cgroup_root)
        self._started = False

    async def start(self, spec: TargetSpec, on_phase: PhaseCallback | None = None) -> RunningTarget:
        if self._started:
            raise TargetGone()
        self._started = True
        t = self.target
        phases: dict[str, float | None] = {}
        for name in LAUNCH_PHASES:
            phases[name] = t.phases.get(name)
            await report_phase(on_phase, name, phases[name], t.details.get(name, ""))
        if spec.readiness.kind == "log":
            raise TargetFailed(
                CellStatus.FAILED,
                "readiness probe 'log' is not available on a fleet host (the target's log is read by its "
                "engine, not next to it): use http, request or tcp",
            )
        paths = await asyncio.to_thread(find_container_cgroup, t.container_id, None, self.cgroup_root)
        reader = CgroupReader(paths) if paths.found else None
        oom_kills = 0

        async def died() -> TargetFailed | None:
            nonlocal oom_kills
            if reader is None:
                return None  # no cgroup to watch: the readiness timeout is the only end
            if _cgroup_gone(paths):
                if oom_kills:
                    return TargetFailed(
                        CellStatus.OOM, "OOM-killed during start (the kernel's oom_kill count)"
                    )
                return TargetFailed(CellStatus.CRASHED, "exited during start (its cgroup is gone)")
            oom_kills = reader.read().oom_kills or oom_kills
            return None

        try:
            probe = await wait_ready(LOOPBACK, t.port, spec.readiness, died, request=spec.probe_request)
        finally:
            if reader is not None:
                reader.close()
        # from the container's start, not from this process's first poll: it started after the target
        ready_wait = max(0.0, probe.ready_epoch - t.started_epoch)
        facts = {
            **t.facts,
            "ready_first_poll_s": max(0.0, probe.ready_epoch - probe.elapsed_s - t.started_epoch),
        }
        await report_ready_phases(
            probe, t.started_epoch, ready_wait, spec.readiness.kind, on_phase, phases, facts
        )
        enforced = EnforcedCaps.asked_by(spec)
        await asyncio.to_thread(confirm_container_caps, t.host_config, paths, spec, enforced)
        return RunningTarget(
            base_url=f"http://{LOOPBACK}:{t.port}",
            ident=t.container_id,
            enforced=enforced,
            phases=phases,
            cgroup_dir=paths.v2_dir,
            cgroup_v1_dirs=dict(paths.v1_dirs),
            facts=facts,
        )

    async def stop(self, target: RunningTarget) -> dict[str, Any]:
        return {"note": "stopped by the side that started it"}

    async def cleanup_session(self, session_id: str) -> int:
        return 0

    async def remove_orphans(self, *, include_live: bool = False, dry_run: bool = False) -> list[str]:
        return []


def _cgroup_gone(paths: CgroupPaths) -> bool:
    d = paths.controller_dir("memory") or paths.controller_dir("cpu") or paths.v2_dir
    return d is not None and not Path(d).is_dir()
