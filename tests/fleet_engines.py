"""Extra Docker engines for the fleet tests: `scripts/engines.sh up` once per test session, `down` at its end.

Each engine is a separate "host" only this machine reaches: its own network namespace (tpf-eN, address
10.213.N.2), data root, socket, and an sshd whose key's forced command is `docker system dial-stdio`
against that engine. ssh:// clients (paramiko, through the docker SDK) read the key, config and
known_hosts from `$HOME/.ssh`: set HOME to `fleet_home` (the `fleet_ssh_home` fixture does) before
making one. Several pytest runs may share the engines: the last one to finish takes them down.

Fixtures: `fleet_engines` -> list[FleetEngine] (FLEET_ENGINE_COUNT of them), `fleet_home` -> Path,
`fleet_ssh_home` -> Path (and HOME set to it for the test).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
ENGINES_SCRIPT = REPO / "scripts" / "engines.sh"
ENGINES_ROOT = Path("/var/lib/tui-profiler-engines")
FLEET_HOME = ENGINES_ROOT / "ssh" / "home"
FLEET_ENGINE_COUNT = 3  # all three up in ~2 s (with `--tls=false`, see engines.sh)
# Who uses the engines now: one file per pytest process, taken under a lock so that up/down never race.
_USERS = Path("/run/tpf-engines.users")
_LOCK = Path("/run/tpf-engines.lock")


@dataclass(frozen=True)
class FleetEngine:
    """One extra engine, as scripts/engines.sh makes it."""

    index: int
    name: str  # "tpf-e1": also its network namespace
    netns: str
    address: str  # "10.213.1.2", inside the namespace
    unix_url: str  # "unix:///run/tpf-e1.sock"
    tcp_url: str  # "tcp://10.213.1.2:2375"
    ssh_url: str | None  # "ssh://root@10.213.1.2" (HOME must be fleet_home when a client is made)
    data_root: Path
    pidfile: Path

    @classmethod
    def numbered(cls, i: int) -> FleetEngine:
        return cls(
            index=i,
            name=f"tpf-e{i}",
            netns=f"tpf-e{i}",
            address=f"10.213.{i}.2",
            unix_url=f"unix:///run/tpf-e{i}.sock",
            tcp_url=f"tcp://10.213.{i}.2:2375",
            ssh_url=f"ssh://root@10.213.{i}.2",
            data_root=ENGINES_ROOT / f"e{i}",
            pidfile=Path(f"/run/tpf-e{i}.pid"),
        )

    def client(self, url: str | None = None, timeout: int = 60) -> Any:
        """A docker SDK client for this engine (default: over tcp://)."""
        import docker

        return docker.DockerClient(base_url=url or self.tcp_url, timeout=timeout)


def _engines(*args: str) -> None:
    proc = subprocess.run(
        ["bash", str(ENGINES_SCRIPT), *args], capture_output=True, text=True, timeout=240, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/engines.sh {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")


def _live_users() -> list[Path]:
    live = []
    for f in _USERS.glob("*"):
        try:
            os.kill(int(f.name), 0)
            live.append(f)
        except (ValueError, ProcessLookupError):
            f.unlink(missing_ok=True)  # a run that died without its teardown
        except PermissionError:
            live.append(f)
    return live


def _remove_run_containers(engines: list[FleetEngine]) -> list[str]:
    """This run's labelled containers on every engine (removed); the names, to fail the run with."""
    from tests.conftest import RUN_TAG, SESSION_LABEL

    left: list[str] = []
    for engine in engines:
        try:
            client = engine.client(engine.unix_url, timeout=30)
            containers = client.containers.list(all=True, filters={"label": SESSION_LABEL})
        except Exception:
            continue  # the engine is gone (a test stopped it): it holds nothing that runs
        for c in containers:
            if f"-{RUN_TAG}-" in c.labels.get(SESSION_LABEL, ""):
                left.append(f"{engine.name}/{c.name}")
                c.remove(force=True)
        client.close()
    return left


@pytest.fixture(scope="session")
def fleet_engines() -> Iterator[list[FleetEngine]]:
    """FLEET_ENGINE_COUNT extra engines, up for the whole session (kept up at its end when another pytest
    run still uses them, or when TUI_PROFILER_FLEET_KEEP=1)."""
    if os.geteuid() != 0:
        if os.environ.get("TUI_PROFILER_ALLOW_NO_DOCKER") == "1":
            pytest.skip("fleet engines need root (network namespaces, dockerd)")
        raise RuntimeError(
            "fleet engines need root (network namespaces, dockerd): run scripts/test.sh as root"
        )
    me = _USERS / str(os.getpid())
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _USERS.mkdir(exist_ok=True)
        me.touch()
        _engines("up", str(FLEET_ENGINE_COUNT))
    engines = [FleetEngine.numbered(i) for i in range(1, FLEET_ENGINE_COUNT + 1)]
    yield engines
    left = _remove_run_containers(engines)
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        me.unlink(missing_ok=True)
        if not _live_users() and os.environ.get("TUI_PROFILER_FLEET_KEEP") != "1":
            _engines("down")
    assert not left, f"containers left behind on the fleet engines: {left}"


@pytest.fixture(scope="session")
def fleet_home(fleet_engines: list[FleetEngine]) -> Path:
    """The HOME whose .ssh/ (config, known_hosts, id_ed25519) reaches every engine's ssh:// URL."""
    return FLEET_HOME


@pytest.fixture
def fleet_ssh_home(fleet_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME set to fleet_home for this test, so ssh:// clients made in it find their key."""
    monkeypatch.setenv("HOME", str(fleet_home))
    return fleet_home
