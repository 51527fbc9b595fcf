"""Runtimes: where the model server runs. `choose_runtime` picks one and says why, in plain words."""

from __future__ import annotations

import importlib.util

from tui_profiler.errors import ProfilerError
from tui_profiler.runtime.base import (
    SESSION_LABEL,
    EnforcedCaps,
    ProbeRequest,
    ReadinessProbe,
    RunningTarget,
    Runtime,
    TargetFailed,
    TargetSpec,
)

__all__ = [
    "RUNTIME_NAMES",
    "SESSION_LABEL",
    "EnforcedCaps",
    "ProbeRequest",
    "ReadinessProbe",
    "RunningTarget",
    "Runtime",
    "RuntimeUnavailable",
    "TargetFailed",
    "TargetSpec",
    "choose_runtime",
]

RUNTIME_NAMES = ("docker", "process")


class RuntimeUnavailable(ProfilerError, RuntimeError):
    """The runtime asked for cannot work here; the message is one line saying why."""


def _process_runtime_missing() -> str | None:
    """Why the process runtime cannot serve models here, or None when it can."""
    for module in ("torch", "torchvision", "aiohttp"):
        if importlib.util.find_spec(module) is None:
            return f"Python package {module!r} is not installed (pip install 'tui-profiler[server]')"
    if importlib.util.find_spec("servers.model_server") is None:
        return "the model server (servers.model_server) is not importable"
    return None


def choose_runtime(name: str | None = None) -> tuple[Runtime, str]:
    """(runtime, why). No name: docker when an engine answers, else process. A named runtime that cannot
    work raises RuntimeUnavailable with a one-line reason."""
    from tui_profiler.runtime.docker import DockerRuntime, engine_status

    if name not in (None, "", "auto", *RUNTIME_NAMES):
        raise RuntimeUnavailable(f"--runtime: {name!r} — allowed: {', '.join(RUNTIME_NAMES)}")
    if name in (None, "", "auto", "docker"):
        reachable, detail = engine_status()
        if reachable:
            why = "asked for" if name == "docker" else "the default, since an engine is reachable"
            return DockerRuntime(), f"docker: {detail} ({why})"
        if name == "docker":
            raise RuntimeUnavailable(f"--runtime docker: no Docker engine is reachable ({detail})")
        missing = _process_runtime_missing()
        if missing:
            raise RuntimeUnavailable(
                f"no Docker engine is reachable ({detail}), and the process runtime cannot run: {missing}"
            )
        from tui_profiler.runtime.process import ProcessRuntime, cgroup_writable

        ok, caps = cgroup_writable()
        return ProcessRuntime(), (
            f"process: no Docker engine is reachable ({detail}), so the server runs as a local process; "
            + ("caps through " + caps if ok else f"caps NOT enforced ({caps})")
        )
    missing = _process_runtime_missing()
    if missing:
        raise RuntimeUnavailable(f"--runtime process: {missing}")
    from tui_profiler.runtime.process import ProcessRuntime, cgroup_writable

    ok, caps = cgroup_writable()
    return ProcessRuntime(), "process: asked for; " + (
        "caps through " + caps if ok else f"caps NOT enforced ({caps})"
    )
