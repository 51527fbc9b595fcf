"""The process runtime: the real model server as a local subprocess, capped through a cgroup when this
machine lets us make one (root with cgroup v1 here), recorded as not enforced when it does not."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import pytest

from tui_profiler.runtime.base import TargetFailed, TargetSpec
from tui_profiler.runtime.process import ProcessRuntime, cgroup_writable, find_orphan_processes
from tui_profiler.sample import ResourceSampler
from tui_profiler.session.store import recording

pytestmark = pytest.mark.server  # every test starts the model server through the process runtime
MODEL = "mobilenet_v3_small"
GIB = 1024**3
WRITABLE, WHY = cgroup_writable()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()


def _exists(path: str) -> bool:
    return Path(path).exists()


def _read(directory: str, name: str) -> str:
    return Path(directory, name).read_text()


def _proc_cpu_ns(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK")


async def test_process_runtime_caps_follow_cgroup_writability() -> None:
    rt = ProcessRuntime()
    sid = f"test-proc-{secrets.token_hex(3)}"
    spec = TargetSpec(session_id=sid, image="", model=MODEL, cpus=0.5, memory_gb=2.0)
    phases: list[str] = []
    target = await rt.start(spec, on_phase=lambda p, s, d: phases.append(p))
    pid = int(target.ident)
    try:
        assert phases == ["image_pull", "create", "start", "server_boot", "model_load", "ready"]
        assert target.base_url.startswith("http://127.0.0.1:")
        assert os.getpgid(pid) == pid  # its own process group
        assert target.facts["server_runtime"]["pid"] == pid
        if WRITABLE:
            assert target.enforced.cpus_enforced and target.enforced.memory_enforced, target.enforced.notes
            d = target.cgroup_v1_dirs or {"cpu": target.cgroup_dir, "memory": target.cgroup_dir}
            if target.cgroup_dir:
                quota, period = _read(d["cpu"], "cpu.max").split()
                assert int(_read(d["memory"], "memory.max")) == 2 * GIB
            else:
                quota, period = _read(d["cpu"], "cpu.cfs_quota_us"), _read(d["cpu"], "cpu.cfs_period_us")
                assert int(_read(d["memory"], "memory.limit_in_bytes")) == 2 * GIB
                # joined before the server ran: the cgroup was charged (almost) all the CPU the
                # process has used, torch import and model load included
                charged = int(_read(target.cgroup_v1_dirs["cpuacct"], "cpuacct.usage"))
                assert charged >= 0.9 * _proc_cpu_ns(pid)
            assert int(quota) / int(period) == pytest.approx(0.5)
            assert pid in [int(x) for x in _read(d["memory"], "cgroup.procs").split()]
            assert target.facts["server_runtime"]["threads"] == 1  # 'auto' read our quota
            sampler = ResourceSampler(target.sample_target())
            await sampler.start()
            await asyncio.sleep(0.5)
            summary = await sampler.stop()
            assert summary.sample_source.startswith("cgroup-v")
            assert summary.peak_mem_bytes is not None and 0 < summary.peak_mem_bytes <= 2 * GIB
        else:  # pragma: no cover - on a machine where cgroups are not writable
            assert not target.enforced.cpus_enforced and not target.enforced.memory_enforced
            assert any("not enforced" in n for n in target.enforced.notes)
        assert sid in {s for _, s in find_orphan_processes()}  # findable after a SIGKILL of the profiler
        assert sid not in {s for _, s in find_orphan_processes(only_dead_owners=True)}  # its owner (us) lives
    finally:
        facts = await rt.stop(target)
    assert facts["removed"] and not _alive(pid)
    assert not [d for d in target.cgroup_v1_dirs.values() if _exists(d)]
    assert sid not in {s for _, s in find_orphan_processes()}


async def test_uncapped_when_no_cgroup_can_be_made(tmp_path: Path) -> None:
    """A cgroup root that is not a cgroup filesystem: the server still runs, each cap is recorded as not
    enforced with the reason, and the sampler falls back to /proc."""
    rt = ProcessRuntime(cgroup_root=tmp_path)
    spec = TargetSpec(
        session_id=f"test-proc-nocg-{secrets.token_hex(3)}", image="", model=MODEL, cpus=0.5, memory_gb=2.0
    )
    target = await rt.start(spec)
    pid = int(target.ident)
    try:
        e = target.enforced
        assert not e.cpus_enforced and not e.memory_enforced
        assert any(n.startswith("cpus: not enforced") for n in e.notes)
        assert any(n.startswith("memory: not enforced") for n in e.notes)
        assert target.cgroup_dir is None and not target.cgroup_v1_dirs
        sampler = ResourceSampler(target.sample_target())
        await sampler.start()
        await asyncio.sleep(0.5)
        summary = await sampler.stop()
        assert summary.sample_source == "procfs"
        assert summary.peak_mem_bytes and summary.peak_mem_bytes > 50 * 2**20
        assert summary.throttled_periods is None and summary.oom_kills is None  # not available, not 0
    finally:
        await rt.stop(target)
    assert not _alive(pid)


@pytest.mark.skipif(not WRITABLE, reason=f"no writable cgroup: {WHY}")
async def test_process_oom_during_start() -> None:
    rt = ProcessRuntime()
    spec = TargetSpec(
        session_id=f"test-proc-oom-{secrets.token_hex(3)}", image="", model=MODEL, cpus=1.0, memory_gb=0.1
    )
    with pytest.raises(TargetFailed) as info:
        await rt.start(spec)
    assert info.value.status == "oom", info.value.reason
    assert not any(s == spec.session_id for _, s in find_orphan_processes())


async def test_cancel_mid_start_kills_the_server() -> None:
    """Ctrl-C while the model loads: the process group is killed and its cgroup removed."""
    rt = ProcessRuntime()
    sid = f"test-proc-cancel-{secrets.token_hex(3)}"
    phases: list[tuple[str, str]] = []
    task = asyncio.create_task(
        rt.start(
            TargetSpec(session_id=sid, image="", model=MODEL, cpus=1.0, memory_gb=2.0),
            on_phase=lambda p, s, d: phases.append((p, d)),
        )
    )
    for _ in range(1000):
        if any(p == "start" for p, _ in phases) or task.done():
            break
        await asyncio.sleep(0.01)
    # spawned, still loading. Polled briefly: while the wrapper shell execs python, /proc/PID/environ
    # reads as empty for a moment (the kernel is swapping the address space), so one look can miss it.
    seen = False
    for _ in range(100):
        if task.done():
            break
        if sid in {s for _, s in find_orphan_processes()}:
            seen = True
            break
        await asyncio.sleep(0.02)
    assert not task.done(), f"the server did not stay up while loading: {task.exception()!r}"
    assert seen, "the spawned server was never found by find_orphan_processes"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sid not in {s for _, s in find_orphan_processes()}
    assert not rt._children


# A profiler that starts a server and is then SIGKILLed: it prints the server's pid and cgroup, then waits.
KILLED_PROFILER = r"""
import asyncio, json, sys
from tui_profiler.runtime.base import TargetSpec
from tui_profiler.runtime.process import ProcessRuntime

async def main() -> None:
    spec = TargetSpec(session_id=sys.argv[1], image="", model=sys.argv[2], cpus=1.0, memory_gb=2.0)
    target = await ProcessRuntime().start(spec)
    dirs = [target.cgroup_dir] if target.cgroup_dir else list(target.cgroup_v1_dirs.values())
    print(json.dumps({"pid": int(target.ident), "cgroups": dirs}), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_sweep_start_removes_the_server_of_a_killed_run(tmp_path: Path) -> None:
    """SIGKILL gives the profiler no chance to stop its server: the server (its own process group) keeps
    running. The next sweep's start (`Runtime.remove_orphans`) kills it because its owner is dead, removes
    its cgroup and names it in the log; the sweep here stops right after that start-up."""
    import json
    import signal
    import sys

    from tests.conftest import REPO
    from tui_profiler.config import load_preset
    from tui_profiler.events import LogMessage, SessionStarted
    from tui_profiler.session.schema import SessionStatus
    from tui_profiler.sweep import SweepRunner

    sid = f"test-proc-orphan-{secrets.token_hex(3)}"
    profiler = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLED_PROFILER,
        sid,
        MODEL,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
    )
    server_pid = None
    try:
        assert profiler.stdout is not None
        line = await asyncio.wait_for(profiler.stdout.readline(), 300)
        assert line, f"the profiler exited before its server was ready (code {profiler.returncode})"
        started = json.loads(line)
        server_pid = started["pid"]
        profiler.send_signal(signal.SIGKILL)
        await asyncio.wait_for(profiler.wait(), 30)  # reaped, as a shell reaps a killed command
        await asyncio.sleep(0.5)
        assert _alive(server_pid), "the server died with its profiler: there is no orphan to remove"
        assert (server_pid, sid) in find_orphan_processes(only_dead_owners=True)

        runner = SweepRunner(load_preset("smoke"), runtime=ProcessRuntime(), output_dir=tmp_path)
        logs: list[str] = []

        def emit(event: object) -> None:
            if isinstance(event, SessionStarted):
                runner.request_stop()  # the orphan check runs at start whatever follows
            elif isinstance(event, LogMessage):
                logs.append(event.text)

        finished = await runner.run(recording(emit))
        assert finished.status == SessionStatus.INTERRUPTED
        for _ in range(100):
            if not _alive(server_pid):
                break
            await asyncio.sleep(0.02)
        assert not _alive(server_pid)
        assert any("left by a killed run" in t and f"pid {server_pid} ({sid})" in t for t in logs), logs
        assert not any(_exists(d) for d in started["cgroups"]), started["cgroups"]
    finally:
        if profiler.returncode is None:
            profiler.kill()
            await profiler.wait()
        if server_pid is not None and _alive(server_pid):
            os.killpg(server_pid, signal.SIGKILL)
