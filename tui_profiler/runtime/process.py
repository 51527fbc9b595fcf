"""The `process` runtime: the same model server as a local subprocess, for hosts without Docker (often GPU
machines). It binds 127.0.0.1 on a free port and runs in its own process group, killed on stop.

Caps: a cgroup the runtime creates when it may (v1: `cpu`, `cpuacct`, `memory` [and `cpuset`] under
`/sys/fs/cgroup/<controller>/tui-profiler/<name>`; v2: `/sys/fs/cgroup/tui-profiler/<name>` with cpu.max,
memory.max and memory.swap.max=0). The child joins the cgroup BEFORE the server starts: a tiny `sh`
wrapper writes its own pid into cgroup.procs and then execs Python, so model loading already runs
under the caps. Where the cgroup cannot be made, each cap is recorded as not enforced with the reason.

Each child carries TUI_PROFILER_SESSION=<session id> and TUI_PROFILER_OWNER=<owner id> in its environment,
so the servers a SIGKILLed profiler left behind are found (`remove_orphans`) even without cgroups.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_profiler.cgroups import (
    CGROUP_ROOT,
    CgroupPaths,
    cgroup_version,
    confirm_caps,
    cpuset_text,
    pinned_cores,
    read_text,
)
from tui_profiler.runtime.base import (
    EnforcedCaps,
    PhaseCallback,
    RunningTarget,
    TargetFailed,
    TargetSpec,
    gb_to_bytes,
)
from tui_profiler.runtime.common import (
    LOOPBACK,
    MAX_POLL_INTERVAL_S,
    free_port,
    owner_alive,
    owner_id,
    report_phase,
    report_ready_phases,
    settle,
    wait_ready,
)
from tui_profiler.session.schema import CellStatus, ColdStartPhaseName

GROUP = "tui-profiler"
SESSION_ENV = "TUI_PROFILER_SESSION"
OWNER_ENV = "TUI_PROFILER_OWNER"  # the `owner_id` of the profiler that started the server
JOIN_EXIT = 97  # the wrapper's exit status when it could not join the cgroup
JOIN_SCRIPT = 'for f in $TUI_PROFILER_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; exec "$@"'
REPO_ROOT = Path(__file__).resolve().parents[2]  # where `servers/` lives in a source checkout


@dataclass(slots=True)
class _Child:
    proc: asyncio.subprocess.Process
    session_id: str
    log_path: str
    cgroup: CgroupPaths | None
    created_dirs: list[Path] = field(default_factory=list)


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class CgroupSetupError(Exception):
    pass


def make_cgroup(
    name: str, spec: TargetSpec, root: Path = CGROUP_ROOT
) -> tuple[CgroupPaths, list[Path], list[str]]:
    """Create the target's cgroup and write its caps. Returns (paths, dirs created (innermost last),
    procs files to join). Raises CgroupSetupError with the reason when it cannot."""
    created: list[Path] = []
    try:
        if cgroup_version(root) == 2:
            return _make_v2(name, spec, root, created)
        return _make_v1(name, spec, root, created)
    except OSError as exc:
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise CgroupSetupError(f"{exc.strerror or exc} ({exc.filename})") from exc


def _mkdir(d: Path, created: list[Path]) -> None:
    if not d.is_dir():
        d.mkdir()
        created.append(d)


def _make_v1(
    name: str, spec: TargetSpec, root: Path, created: list[Path]
) -> tuple[CgroupPaths, list[Path], list[str]]:
    controllers = ["cpu", "cpuacct", "memory"] + (["cpuset"] if spec.cpuset and spec.cpus else [])
    dirs: dict[str, str] = {}
    procs: list[str] = []
    for ctrl in controllers:
        mount = root / ctrl
        if not mount.is_dir():
            raise OSError(2, f"v1 controller {ctrl} is not mounted", str(mount))
        parent = mount / GROUP
        _mkdir(parent, created)
        d = parent / name
        if ctrl == "cpuset":  # a v1 cpuset needs cpus and mems at every level before it takes tasks
            for level in (parent,):
                if not (read_text(level / "cpuset.mems") or "").strip():
                    _write(level / "cpuset.mems", (read_text(mount / "cpuset.mems") or "0").strip())
                if not (read_text(level / "cpuset.cpus") or "").strip():
                    _write(level / "cpuset.cpus", (read_text(mount / "cpuset.cpus") or "0").strip())
        _mkdir(d, created)
        dirs[ctrl] = str(d)
        procs.append(str(d / "cgroup.procs"))
    if spec.cpus:
        period = 100_000
        _write(Path(dirs["cpu"]) / "cpu.cfs_period_us", str(period))
        _write(Path(dirs["cpu"]) / "cpu.cfs_quota_us", str(max(1000, round(spec.cpus * period))))
    if spec.memory_gb:
        mem = gb_to_bytes(spec.memory_gb)
        _write(Path(dirs["memory"]) / "memory.limit_in_bytes", str(mem))
        memsw = Path(dirs["memory"]) / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # swap accounting on: memory+swap equal to memory, so swap never hides pressure
            _write(memsw, str(mem))
    if "cpuset" in dirs:
        d = Path(dirs["cpuset"])
        _write(d / "cpuset.mems", (read_text(d.parent / "cpuset.mems") or "0").strip())
        _write(d / "cpuset.cpus", cpuset_text(pinned_cores(spec.cpus or 1)))
    return CgroupPaths(1, v1_dirs=dirs), created, procs


def _make_v2(
    name: str, spec: TargetSpec, root: Path, created: list[Path]
) -> tuple[CgroupPaths, list[Path], list[str]]:
    wanted = ["cpu", "memory"] + (["cpuset"] if spec.cpuset and spec.cpus else [])
    available = (read_text(root / "cgroup.controllers") or "").split()
    missing = [c for c in wanted if c not in available]
    if missing:
        raise OSError(2, f"controllers {missing} not available", str(root / "cgroup.controllers"))
    enable = " ".join(f"+{c}" for c in wanted)
    _write(root / "cgroup.subtree_control", enable)
    parent = root / GROUP
    _mkdir(parent, created)
    _write(parent / "cgroup.subtree_control", enable)
    d = parent / name
    _mkdir(d, created)
    if spec.cpus:
        period = 100_000
        _write(d / "cpu.max", f"{max(1000, round(spec.cpus * period))} {period}")
    if spec.memory_gb:
        _write(d / "memory.max", str(gb_to_bytes(spec.memory_gb)))
        if (d / "memory.swap.max").exists():
            _write(d / "memory.swap.max", "0")
    if "cpuset" in wanted:
        _write(d / "cpuset.cpus", cpuset_text(pinned_cores(spec.cpus or 1)))
    return CgroupPaths(2, v2_dir=str(d)), created, [str(d / "cgroup.procs")]


def cgroup_writable(root: Path = CGROUP_ROOT) -> tuple[bool, str]:
    """Whether this runtime could enforce caps here: tries to make (and remove) a probe cgroup."""
    probe = TargetSpec(session_id="probe", image="", model="", cpus=1.0, memory_gb=1.0)
    name = f"probe-{secrets.token_hex(3)}"
    try:
        paths, created, _ = make_cgroup(name, probe, root)
    except CgroupSetupError as exc:
        return False, f"cannot create a cgroup: {exc}"
    for d in reversed(created):
        if d.name == name:
            with contextlib.suppress(OSError):
                d.rmdir()
    return True, f"cgroup v{paths.version} under {root} is writable"


def _oom_kills(paths: CgroupPaths | None) -> int | None:
    if paths is None:
        return None
    if paths.version == 2:
        text = read_text(Path(paths.v2_dir or "/nonexistent") / "memory.events")
        key = "oom_kill"
    else:
        d = paths.controller_dir("memory")
        text = read_text(Path(d) / "memory.oom_control") if d else None
        key = "oom_kill"
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return None


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class ProcessRuntime:
    name = "process"

    def __init__(self, python: str = sys.executable, cgroup_root: Path = CGROUP_ROOT) -> None:
        self.python = python
        self.cgroup_root = cgroup_root
        self._children: dict[str, _Child] = {}

    async def start(self, spec: TargetSpec, on_phase: PhaseCallback | None = None) -> RunningTarget:
        if spec.mounts:
            raise TargetFailed(
                CellStatus.FAILED, "mounts are a docker runtime feature; the process runtime has none"
            )
        phases: dict[str, float | None] = {ColdStartPhaseName.IMAGE_PULL: None}
        facts: dict[str, Any] = {"runtime": "process", "ready_poll_interval_s": MAX_POLL_INTERVAL_S}
        await report_phase(on_phase, ColdStartPhaseName.IMAGE_PULL, None, "no image (process runtime)")
        enforced = EnforcedCaps.asked_by(spec)

        # create: the cgroup and its caps
        name = f"{spec.session_id}-{secrets.token_hex(3)}".replace("/", "-")
        t0 = time.perf_counter()
        cgroup: CgroupPaths | None = None
        created: list[Path] = []
        procs_files: list[str] = []
        try:
            cgroup, created, procs_files = await asyncio.to_thread(make_cgroup, name, spec, self.cgroup_root)
        except CgroupSetupError as exc:
            for cap, asked in (("cpus", spec.cpus), ("memory", spec.memory_gb)):
                if asked:
                    enforced.notes.append(f"{cap}: not enforced — {exc}")
            facts["cgroup"] = f"none: {exc}"
        phases[ColdStartPhaseName.CREATE] = time.perf_counter() - t0
        await report_phase(
            on_phase,
            ColdStartPhaseName.CREATE,
            phases[ColdStartPhaseName.CREATE],
            "cgroup" if cgroup else "no cgroup",
        )

        env = dict(os.environ)
        env.update(
            {
                "TUI_PROFILER_THREADS": spec.threads,
                SESSION_ENV: spec.session_id,
                OWNER_ENV: owner_id(),
                **spec.env,
            }
        )
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env["TUI_PROFILER_CGROUP_PROCS"] = " ".join(procs_files)
        self._assign_gpus(spec, env, enforced, facts)
        server_args = (
            spec.command if spec.command is not None else ["--model", spec.model, "--weights", spec.weights]
        )
        fd, log_path = tempfile.mkstemp(prefix="tui-profiler-process-", suffix=".log")
        child: _Child | None = None
        try:
            for attempt in range(1, 4):
                port = free_port()
                argv = [
                    self.python,
                    "-m",
                    "servers.model_server",
                    *server_args,
                    "--host",
                    LOOPBACK,
                    "--port",
                    str(port),
                ]
                t0 = time.perf_counter()
                proc = await settle(
                    asyncio.create_subprocess_exec(
                        "/bin/sh",
                        "-c",
                        JOIN_SCRIPT,
                        "tui-profiler-join",
                        *argv,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=fd,
                        stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True,
                        cwd=str(REPO_ROOT),
                        env=env,
                    )
                )
                started_epoch = time.time()
                phases[ColdStartPhaseName.START] = time.perf_counter() - t0
                child = _Child(proc, spec.session_id, log_path, cgroup, created)
                self._children[str(proc.pid)] = child
                await report_phase(
                    on_phase, ColdStartPhaseName.START, phases[ColdStartPhaseName.START], f"pid {proc.pid}"
                )
                try:
                    probe = await wait_ready(
                        LOOPBACK,
                        port,
                        spec.readiness,
                        functools.partial(self._death, child),
                        log_lines=lambda: asyncio.to_thread(_tail, log_path, 200),
                        request=spec.probe_request,
                    )
                except TargetFailed as exc:
                    if (
                        exc.status == CellStatus.CRASHED
                        and "address already in use" in _tail(log_path).lower()
                        and attempt < 3
                    ):
                        await self._kill(child)
                        self._children.pop(str(proc.pid), None)
                        child = None
                        continue
                    raise
                break
            assert child is not None
            await report_ready_phases(
                probe, started_epoch, probe.elapsed_s, spec.readiness.kind, on_phase, phases, facts
            )
            runtime_facts = facts.get("server_runtime")
            if spec.gpus and enforced.gpus_enforced:
                device = str((runtime_facts or {}).get("device", ""))
                if not device.startswith("cuda"):
                    enforced.gpus_enforced = False
                    enforced.notes.append(
                        f"gpus: assigned, but the server reports device {device or 'unknown'!r}"
                    )
            if cgroup is not None:
                await asyncio.to_thread(self._confirm_caps, cgroup, spec, enforced)
            pid = child.proc.pid
            facts.update(pid=pid, pgid=pid, log_path=log_path, host_port=port)
            return RunningTarget(
                base_url=f"http://{LOOPBACK}:{port}",
                ident=str(pid),
                enforced=enforced,
                phases=phases,
                cgroup_dir=cgroup.v2_dir if cgroup else None,
                cgroup_v1_dirs=dict(cgroup.v1_dirs) if cgroup else {},
                pids=[pid],
                facts=facts,
            )
        except BaseException as exc:
            if child is not None:
                if isinstance(exc, TargetFailed):
                    tail = " | ".join(_tail(log_path, 5).splitlines())
                    if tail:
                        exc.add_detail(f"last log lines: {tail}")
                await asyncio.shield(self._finish(child))
            else:
                await asyncio.shield(asyncio.to_thread(_remove_dirs, created))
            raise
        finally:
            os.close(fd)

    def _assign_gpus(
        self, spec: TargetSpec, env: dict[str, str], enforced: EnforcedCaps, facts: dict[str, Any]
    ) -> None:
        from tui_profiler.host import nvml_status

        status = nvml_status()
        if not spec.gpus:
            if status.available:
                env["CUDA_VISIBLE_DEVICES"] = ""  # gpu_mode 0 means no GPU, even on a GPU host
            return
        if not status.available:
            enforced.notes.append(f"gpus: not enforced — {status.reason}")
            return
        if spec.gpus > len(status.gpus):
            enforced.notes.append(f"gpus: {spec.gpus} asked, the host has {len(status.gpus)}; not enforced")
            return
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(spec.gpus))
        facts["cuda_visible_devices"] = env["CUDA_VISIBLE_DEVICES"]
        enforced.gpus_enforced = True  # confirmed against the server's reported device after ready

    def _confirm_caps(self, cgroup: CgroupPaths, spec: TargetSpec, enforced: EnforcedCaps) -> None:
        """The caps as the kernel reads them from the cgroup this runtime made (`cgroups.confirm_caps`)."""
        kernel = confirm_caps(
            cgroup, cpus=spec.cpus, memory_bytes=enforced.memory_bytes_requested, cpuset=spec.cpuset
        )
        enforced.cpus_enforced = kernel.cpus
        enforced.memory_enforced = kernel.memory
        if spec.cpus and spec.cpuset:
            enforced.cpuset = kernel.cpuset
        enforced.notes.extend(n for n in (kernel.cpus_note, kernel.memory_note) if n)

    async def _death(self, child: _Child) -> TargetFailed | None:
        """How the server died while starting, or None while it runs."""
        rc = child.proc.returncode
        if rc is None:
            return None
        if rc == JOIN_EXIT:
            return TargetFailed(CellStatus.FAILED, "the server could not join its cgroup")
        oom = _oom_kills(child.cgroup)
        if oom:
            return TargetFailed(
                CellStatus.OOM, f"OOM-killed during start (exit code {rc}, {oom} OOM kill(s) in its cgroup)"
            )
        return TargetFailed(CellStatus.CRASHED, f"exited during start with code {rc}")

    async def _kill(self, child: _Child, grace_s: float = 3.0) -> None:
        pid = child.proc.pid
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            try:
                await asyncio.wait_for(child.proc.wait(), wait_s)
                break
            except TimeoutError:
                continue
        # stragglers of the group (a child that left the leader behind)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    async def _finish(self, child: _Child) -> dict[str, Any]:
        await self._kill(child)
        rc = child.proc.returncode
        facts: dict[str, Any] = {
            "exit_code": rc,
            "oom_killed": bool(_oom_kills(child.cgroup)) if child.cgroup else None,
            "last_logs": _tail(child.log_path),
        }
        with contextlib.suppress(OSError):
            os.unlink(child.log_path)
        await asyncio.to_thread(_remove_dirs, child.created_dirs, child.cgroup)
        self._children.pop(str(child.proc.pid), None)
        facts["removed"] = True
        return facts

    async def stop(self, target: RunningTarget) -> dict[str, Any]:
        child = self._children.get(target.ident)
        if child is None:
            return {
                "exit_code": None,
                "oom_killed": None,
                "last_logs": "",
                "removed": True,
                "note": "already gone",
            }
        return await asyncio.shield(self._finish(child))

    async def cleanup_session(self, session_id: str) -> int:
        mine = [c for c in list(self._children.values()) if c.session_id == session_id]
        for child in mine:
            await self._finish(child)
        return len(mine)

    async def remove_orphans(self, *, include_live: bool = False, dry_run: bool = False) -> list[str]:
        """Servers whose profiler no longer runs (or, `include_live`, every one a process runtime started):
        their process groups killed and the empty tui-profiler cgroups removed, unless `dry_run`; one line
        each, 'pid N (session id)'."""
        return await asyncio.to_thread(
            kill_orphans, dry_run=dry_run, only_dead_owners=not include_live, cgroup_root=self.cgroup_root
        )


def _remove_dirs(created: list[Path], cgroup: CgroupPaths | None = None) -> None:
    """rmdir the target's own cgroup dirs (never the shared `tui-profiler` parent while others use it).
    The kernel refuses while a dying task is still listed, so retry briefly."""
    targets = [d for d in created if d.parent.name == GROUP]
    if cgroup is not None:
        targets += [Path(d) for d in ([cgroup.v2_dir] if cgroup.v2_dir else list(cgroup.v1_dirs.values()))]
    for d in dict.fromkeys(targets):
        for _ in range(50):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)


def find_orphan_processes(only_dead_owners: bool = False) -> list[tuple[int, str]]:
    """(pid, session id) of every live server a process runtime started (TUI_PROFILER_SESSION in its
    environment); with `only_dead_owners`, only those whose profiler no longer runs (after a SIGKILL)."""
    marker, owner_marker = f"{SESSION_ENV}=".encode(), f"{OWNER_ENV}=".encode()
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        session = next((i[len(marker) :].decode(errors="replace") for i in env if i.startswith(marker)), None)
        if session is None:
            continue
        owner = next((i[len(owner_marker) :].decode() for i in env if i.startswith(owner_marker)), "")
        if only_dead_owners and owner and owner_alive(owner):
            continue
        found.append((int(entry), session))
    return found


def kill_orphans(
    dry_run: bool = False, only_dead_owners: bool = False, cgroup_root: Path = CGROUP_ROOT
) -> list[str]:
    """Kill orphaned process-runtime servers (their process groups) and remove their empty cgroups.
    `tui-profiler clean` kills them all and removes every empty tui-profiler cgroup; a starting sweep
    passes only_dead_owners=True and removes only the killed servers' cgroups (an empty cgroup may be a
    live run's, made a moment before its server joins it). Blocking."""
    found = find_orphan_processes(only_dead_owners)
    if not dry_run:
        for pid, _ in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        sessions = None if not only_dead_owners else {session for _, session in found}
        _remove_stale_cgroups(cgroup_root, sessions, killed={pid for pid, _ in found})
    return [f"pid {pid} ({session})" for pid, session in found]


def _cgroup_name_prefix(session_id: str) -> str:
    return f"{session_id}-".replace("/", "-")  # as `ProcessRuntime.start` names a target's cgroup


def _remove_stale_cgroups(
    root: Path = CGROUP_ROOT,
    sessions: set[str] | None = None,
    killed: set[int] | frozenset[int] = frozenset(),
) -> None:
    """rmdir the empty cgroups under tui-profiler/ (only those of `sessions`, when given). A killed task
    stays listed until it has exited: a cgroup that still lists one of the `killed` pids is retried for
    up to 5 s."""
    if sessions is not None and not sessions:
        return
    prefixes = tuple(_cgroup_name_prefix(s) for s in sessions) if sessions is not None else ("",)
    parents = (
        [root / GROUP]
        if cgroup_version(root) == 2
        else [root / c / GROUP for c in ("cpu", "cpuacct", "memory", "cpuset")]
    )
    pending = [
        d
        for parent in parents
        if parent.is_dir()
        for d in parent.iterdir()
        if d.is_dir() and d.name.startswith(prefixes)
    ]
    deadline = time.monotonic() + 5.0
    while pending:
        waiting = []
        for d in pending:
            procs = read_text(d / "cgroup.procs")
            if procs is None:
                continue  # gone already
            listed = {int(p) for p in procs.split() if p.isdigit()}
            if not listed:
                try:
                    d.rmdir()
                    continue
                except OSError:
                    pass  # the kernel refuses while a killed task is still leaving
            if killed and (not listed or listed & killed):
                waiting.append(d)  # a killed server's (or was): wait for it to leave
        if not waiting or time.monotonic() >= deadline:
            return
        pending = waiting
        time.sleep(0.02)
