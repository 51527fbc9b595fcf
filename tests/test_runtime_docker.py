"""The docker runtime on the real engine: caps read back from the kernel, cold-start phases, exposure and
hardening, failures during start (OOM, crash, timeout, cancellation) and cleanup."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest

from tui_profiler.runtime.base import SESSION_LABEL, ReadinessProbe, TargetFailed, TargetSpec
from tui_profiler.runtime.docker import DockerRuntime, remove_labelled

pytestmark = pytest.mark.docker

BASE_IMAGE = "tui-profiler-base:bookworm"
GIB = 1024**3


def _sid(name: str) -> str:
    return f"test-rt-{name}-{secrets.token_hex(3)}"


def _labelled(docker_client, sid: str) -> list:  # type: ignore[no-untyped-def]
    return docker_client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={sid}"})


def _read(directory: str, name: str) -> str:
    return Path(directory, name).read_text()


def _listeners(port: int) -> list[str]:
    """Local addresses listening on `port` (IPv4 and IPv6), from /proc/net/tcp*."""
    out = []
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr, _, hexport = local.rpartition(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                out.append(addr)
    return out


def _http_server_spec(sid: str, **kw) -> TargetSpec:  # type: ignore[no-untyped-def]
    return TargetSpec(
        session_id=sid,
        image=BASE_IMAGE,
        model="",
        command=["python3", "-m", "http.server", "8000"],
        readiness=ReadinessProbe(path="/", timeout_s=60),
        **kw,
    )


async def test_server_image_under_caps(docker_client, server_image) -> None:  # type: ignore[no-untyped-def]
    """The real model server under cpus=0.5 / memory=1 GiB: caps confirmed by the kernel, phases sane,
    port on 127.0.0.1 only, hardened, labelled, removed after stop."""
    rt = DockerRuntime()
    sid = _sid("server")
    spec = TargetSpec(session_id=sid, image=server_image, model="mobilenet_v3_small", cpus=0.5, memory_gb=1.0)
    reported: list[tuple[str, float | None, str]] = []
    t0 = time.perf_counter()
    target = await rt.start(spec, on_phase=lambda p, s, d: reported.append((p, s, d)))
    wall = time.perf_counter() - t0
    try:
        # caps, as the kernel sees them (cgroup v1 on this machine; v2 paths handled by the reader)
        assert target.enforced.cpus_enforced and target.enforced.memory_enforced, target.enforced.notes
        cpu_dir = target.cgroup_v1_dirs.get("cpu") or target.cgroup_dir
        mem_dir = target.cgroup_v1_dirs.get("memory") or target.cgroup_dir
        assert cpu_dir and mem_dir
        if target.cgroup_dir:  # v2
            quota, period = _read(cpu_dir, "cpu.max").split()
            limit = int(_read(mem_dir, "memory.max"))
        else:
            quota = _read(cpu_dir, "cpu.cfs_quota_us")
            period = _read(cpu_dir, "cpu.cfs_period_us")
            limit = int(_read(mem_dir, "memory.limit_in_bytes"))
        assert int(quota) / int(period) == pytest.approx(0.5)
        assert limit == GIB

        # cold-start phases: reported as they ended, in order, disjoint, summing to about the wall time
        names = [p for p, _, _ in reported]
        assert names == ["image_pull", "create", "start", "server_boot", "model_load", "ready"]
        assert reported[0] == ("image_pull", None, "cached") and target.facts["image_pull"] == "cached"
        ph = target.phases
        assert all(
            ph[k] is not None and ph[k] >= 0
            for k in ("create", "start", "server_boot", "model_load", "ready")
        )
        assert ph["server_boot"] > 0.1  # interpreter + torch import under half a core takes a while
        total = sum(v for v in ph.values() if v is not None)
        assert total <= wall and total >= 0.85 * wall, (total, wall, ph)
        assert target.facts["image_size_bytes"] > 100 * 2**20
        assert target.facts["server_runtime"]["threads"] == 1  # 'auto' = ceil(0.5 quota)
        assert target.facts["ready_poll_interval_s"] <= 0.01

        container = docker_client.containers.get(target.ident)
        assert container.labels[SESSION_LABEL] == sid
        hc = container.attrs["HostConfig"]
        assert hc["NanoCpus"] == 500_000_000 and hc["Memory"] == GIB and hc["MemorySwap"] == GIB
        # exposure: published on 127.0.0.1 only, and nothing else listens on that port
        bindings = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"]
        assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
        port = int(bindings[0]["HostPort"])
        assert target.base_url == f"http://127.0.0.1:{port}"
        assert _listeners(port) == ["0100007F"]  # 127.0.0.1 in /proc/net/tcp's byte order
        # hardening
        assert "no-new-privileges" in hc["SecurityOpt"]
        assert hc["CapDrop"] == ["ALL"] and hc["ReadonlyRootfs"] is True
        assert hc["PidsLimit"] and hc["PidsLimit"] > 0
        assert "/tmp" in hc["Tmpfs"]
        assert container.attrs["Config"]["User"] not in ("", "0", "root")
        assert not any("docker.sock" in str(m) for m in container.attrs.get("Mounts", []))
    finally:
        facts = await rt.stop(target)
    assert facts["removed"] and facts["exit_code"] is not None and facts["oom_killed"] is False
    assert not _labelled(docker_client, sid)


async def test_oom_during_start_raises_oom(docker_client, server_image) -> None:  # type: ignore[no-untyped-def]
    rt = DockerRuntime()
    sid = _sid("oom")
    spec = TargetSpec(
        session_id=sid, image=server_image, model="mobilenet_v3_small", cpus=1.0, memory_gb=0.08
    )
    with pytest.raises(TargetFailed) as info:
        await rt.start(spec)
    assert info.value.status == "oom", info.value.reason
    assert not _labelled(docker_client, sid)


async def test_crash_and_timeout_during_start(docker_client) -> None:  # type: ignore[no-untyped-def]
    rt = DockerRuntime()
    sid = _sid("fail")
    crash = TargetSpec(
        session_id=sid,
        image=BASE_IMAGE,
        model="",
        command=["python3", "-c", "print('boom: bad config'); raise SystemExit(3)"],
    )
    with pytest.raises(TargetFailed) as info:
        await rt.start(crash)
    assert info.value.status == "crashed" and "code 3" in info.value.reason and "boom" in info.value.reason
    hang = _http_server_spec(sid)
    hang.readiness = ReadinessProbe(path="/never-there", timeout_s=1.5)  # http.server answers 404
    with pytest.raises(TargetFailed) as info:
        await rt.start(hang)
    assert info.value.status == "timeout"
    assert not _labelled(docker_client, sid)


async def test_cancel_mid_start_leaves_nothing(docker_client) -> None:  # type: ignore[no-untyped-def]
    rt = DockerRuntime()
    sid = _sid("cancel")
    spec = _http_server_spec(sid)
    spec.readiness = ReadinessProbe(path="/never-there", timeout_s=60)
    phases: list[str] = []
    task = asyncio.create_task(rt.start(spec, on_phase=lambda p, s, d: phases.append(p)))
    for _ in range(500):
        if "start" in phases:
            break
        await asyncio.sleep(0.02)
    assert "start" in phases and _labelled(docker_client, sid)  # it is running and waiting for ready
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _labelled(docker_client, sid)


async def test_gpu_request_never_silently_applied(docker_client) -> None:  # type: ignore[no-untyped-def]
    """No GPU here: either the engine refuses (TargetFailed) or the cap is recorded as not enforced."""
    rt = DockerRuntime()
    sid = _sid("gpu")
    try:
        target = await rt.start(_http_server_spec(sid, gpus=1))
    except TargetFailed as exc:
        assert exc.status in ("gpu_unavailable", "start_failed"), exc
    else:
        try:
            assert target.enforced.gpus_enforced is False and any("gpus" in n for n in target.enforced.notes)
        finally:
            await rt.stop(target)
    assert not _labelled(docker_client, sid)


async def test_docker_socket_is_never_mounted() -> None:
    rt = DockerRuntime()
    spec = _http_server_spec(_sid("sock"))
    spec.mounts = [("/var/run/docker.sock", "/var/run/docker.sock")]
    with pytest.raises(TargetFailed) as info:
        await rt.start(spec)
    assert info.value.status == "refused"


async def test_cleanup_session_and_clean_listing(docker_client) -> None:  # type: ignore[no-untyped-def]
    """Orphans (containers whose profiler died) are found by label: by session, and by `clean`."""
    sid = _sid("orphans")
    for _ in range(2):
        docker_client.containers.create(BASE_IMAGE, ["sleep", "60"], labels={SESSION_LABEL: sid})
    try:
        # every labelled container (`clean`), whatever its owner; removes nothing
        listed = await DockerRuntime().remove_orphans(include_live=True, dry_run=True)
        assert sum(sid in name for name in listed) == 2
        assert len(_labelled(docker_client, sid)) == 2
        import argparse

        from tui_profiler.commands.clean import _run

        assert await asyncio.to_thread(_run, argparse.Namespace(dry_run=True)) == 0
        assert await DockerRuntime().cleanup_session(sid) == 2
        assert not _labelled(docker_client, sid)
    finally:
        remove_labelled(f"{SESSION_LABEL}={sid}")


async def test_port_conflict_is_retried_with_the_reason(
    docker_client, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A host port taken between choosing it and publishing it: the runtime retries on another one and
    keeps the reason in the facts."""
    import socket

    import tui_profiler.runtime.docker as docker_runtime

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy_port = taken.getsockname()[1]
    ports = iter([busy_port])
    real_free_port = docker_runtime.free_port
    monkeypatch.setattr(docker_runtime, "free_port", lambda: next(ports, None) or real_free_port())
    rt = DockerRuntime()
    sid = _sid("port")
    try:
        target = await rt.start(_http_server_spec(sid))
        try:
            retries = target.facts.get("port_retries", [])
            assert len(retries) == 1 and retries[0].startswith(f"{busy_port}: ")
            assert target.facts["host_port"] != busy_port
        finally:
            await rt.stop(target)
    finally:
        taken.close()
    assert not _labelled(docker_client, sid)
