"""Issue 7, exposure and hardening, checked on the container a real `tui-profiler run smoke --headless`
starts, while it serves the load:

- the published port is bound to 127.0.0.1 only, in the engine's port bindings AND in the kernel's table
  of listening sockets (/proc/net/tcp and tcp6: nothing on 0.0.0.0 or :: for that port);
- no-new-privileges, all capabilities dropped, a read-only root filesystem with a tmpfs at /tmp, a pids
  limit, a non-root user, not privileged, no Docker socket mounted — from the engine's inspect data and
  from the kernel's view of every process in the container (/proc/PID/status: Uid, CapEff, NoNewPrivs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import IMAGE_OVERRIDE, TINY, CliRun, remove_containers, sets

pytestmark = pytest.mark.docker


@pytest.fixture
def image(request: pytest.FixtureRequest) -> str:
    return IMAGE_OVERRIDE or request.getfixturevalue("server_image")


def listeners(port: int) -> list[str]:
    """The local addresses in LISTEN state on `port`, parsed from /proc/net/tcp and /proc/net/tcp6."""
    found = []
    for name in ("tcp", "tcp6"):
        path = Path(f"/proc/net/{name}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            addr, _, hexport = fields[1].rpartition(":")
            if fields[3] == "0A" and int(hexport, 16) == port:
                found.append(addr)
    return found


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _container_pids(container: Any) -> list[int]:
    for base in ("/sys/fs/cgroup/pids/docker", "/sys/fs/cgroup/memory/docker", "/sys/fs/cgroup/system.slice"):
        for candidate in (Path(base, container.id), Path(base, f"docker-{container.id}.scope")):
            procs = candidate / "cgroup.procs"
            if procs.exists():
                return [int(p) for p in procs.read_text().split()]
    return [int(container.attrs["State"]["Pid"])]


def check_container_hardening(container: Any) -> dict[str, Any]:
    container.reload()
    hc = container.attrs["HostConfig"]
    cfg = container.attrs["Config"]
    # ports: the engine's bindings and the kernel's listeners
    bindings = [b for bs in (hc.get("PortBindings") or {}).values() for b in (bs or [])]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings
    published = [
        int(b["HostPort"])
        for bs in (container.attrs["NetworkSettings"]["Ports"] or {}).values()
        for b in (bs or [])
    ]
    assert published, container.attrs["NetworkSettings"]["Ports"]
    for port in published:
        addrs = listeners(port)
        assert addrs, f"nothing listens on {port}"
        assert set(addrs) == {"0100007F"}, f"port {port} listens on {addrs} (0100007F = 127.0.0.1 only)"
    # engine-side hardening
    assert "no-new-privileges" in " ".join(hc.get("SecurityOpt") or []), hc.get("SecurityOpt")
    assert [c.upper() for c in hc.get("CapDrop") or []] == ["ALL"] and not hc.get("CapAdd")
    assert hc.get("ReadonlyRootfs") is True
    assert "/tmp" in (hc.get("Tmpfs") or {})
    assert (hc.get("PidsLimit") or 0) > 0
    assert not hc.get("Privileged")
    user = cfg.get("User") or ""
    assert user and user.split(":")[0] not in ("0", "root"), user
    mounts = container.attrs.get("Mounts") or []
    assert not any("docker.sock" in (m.get("Source", "") + m.get("Destination", "")) for m in mounts), mounts
    # the kernel's view of every process in the container
    pids = _container_pids(container)
    for pid in pids:
        st = _status(pid)
        assert all(int(u) != 0 for u in st["Uid"].split()), (pid, st["Uid"])
        assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, (pid, st["CapEff"])
        assert st["NoNewPrivs"] == "1", pid
    # from inside: the root filesystem is read-only, /tmp is writable, no Docker socket
    probe = (
        "import os\n"
        "try:\n open('/probe', 'w')\n print('rootfs writable')\nexcept OSError as e:\n print('rootfs', e.strerror)\n"
        "open('/tmp/probe', 'w').write('x'); print('tmp ok')\n"
        "print('sock', any(os.path.exists(p) for p in ('/var/run/docker.sock', '/run/docker.sock')))\n"
    )
    code, out = container.exec_run(["python3", "-c", probe])
    text = out.decode()
    assert (
        code == 0 and "rootfs Read-only file system" in text and "tmp ok" in text and "sock False" in text
    ), text
    return {"pids": len(pids), "ports": published, "user": user, "pids_limit": hc.get("PidsLimit")}


def test_running_container_is_loopback_only_and_hardened(
    tmp_path: Path, docker_client: Any, image: str
) -> None:
    out = tmp_path / "out"
    run = CliRun(["run", "smoke", "--headless", "--output", str(out), *sets(*TINY, "input.scales=0.5")], out)
    try:
        run.wait_for(lambda: any(r["warmup"] == "0" for r in run.requests()), 300, "the load")
        (container,) = run.containers(docker_client)
        print(check_container_hardening(container))
        assert run.wait(300) == 0, run.tail()
    finally:
        run.kill()
        leaked = run.containers(docker_client)
        remove_containers(leaked)
    assert not leaked
