"""Shared fixtures. Engine tests run against a real Docker engine (scripts/test.sh starts one); they fail,
not skip, when none is reachable, unless TUI_PROFILER_ALLOW_NO_DOCKER=1 is set."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
if not SHARED.exists():  # CI lays shared/ beside the clone
    SHARED = Path(os.environ.get("TUI_PROFILER_SHARED", str(REPO.parent / "shared")))
SESSION_LABEL = "tui-profiler.session"
# This pytest run's tag: put it in the session label value of every container a test starts
# (`session_label_value("server")` does), so the leftover check below only looks at this run's containers and
# never touches those of another run sharing the engine.
RUN_TAG = os.environ.setdefault("TUI_PROFILER_TEST_RUN", secrets.token_hex(4))


def session_label_value(component: str) -> str:
    """A session label value for a container a test starts: `test-<component>-<run tag>-<random>`."""
    return f"test-{component}-{RUN_TAG}-{secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def reference_data() -> Path:
    path = SHARED / "reference-data" / "ac-prof"
    if not path.exists():
        pytest.skip(f"reference data not found at {path}")
    return path


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # pragma: no cover - depends on the machine
        if os.environ.get("TUI_PROFILER_ALLOW_NO_DOCKER") == "1":
            pytest.skip(f"no Docker engine reachable: {exc}")
        raise RuntimeError(
            f"no Docker engine reachable (run scripts/test.sh, which starts one): {exc}"
        ) from exc
    yield client
    client.close()


@pytest.fixture(scope="session")
def server_image(docker_client) -> str:  # type: ignore[no-untyped-def]
    """The model server image, built (or found in the layer cache) once per test session."""
    from tui_profiler.images import ensure_server_image

    return ensure_server_image()


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_test_containers() -> Iterator[None]:
    """After the whole run, no container labelled by this test run (see RUN_TAG) may remain."""
    yield
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
    except Exception:
        return
    left = [
        c
        for c in client.containers.list(all=True, filters={"label": SESSION_LABEL})
        if f"-{RUN_TAG}-" in c.labels.get(SESSION_LABEL, "")
    ]
    for c in left:
        c.remove(force=True)
    client.close()
    assert not left, f"containers left behind by tests: {[c.name for c in left]}"


# The extra engines of the fleet tests (network namespaces, dockerd, sshd): fixtures `fleet_engines`,
# `fleet_home`, `fleet_ssh_home`.
from tests.fleet_engines import fleet_engines, fleet_home, fleet_ssh_home  # noqa: E402, F401
