"""Shared fixtures and the test tiers. Engine tests run against a real Docker engine (scripts/test.sh starts
one); they fail, not skip, when none is reachable, unless TUI_PROFILER_ALLOW_NO_DOCKER=1 is set.

Tiers (docs/development.md, "Test tiers"): a test is marked by what it needs — `docker` (a Docker engine),
`server` (a model-server process, container or in-process model), `fleet` (the extra engines), `slow`. The
marks come from the fixtures a test uses, directly or through other fixtures (`FIXTURE_NEEDS` for the shared
ones here, `@needs(...)` on a module's own fixture), or from a module's `pytestmark`. A test with none of
them needs neither Docker nor a model server: `bash scripts/test.sh --fast` runs exactly those."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
if not SHARED.exists():  # CI lays shared/ beside the clone
    SHARED = Path(os.environ.get("TUI_PROFILER_SHARED", str(REPO.parent / "shared")))
SESSION_LABEL = "tui-profiler.session"
# This pytest run's tag: put it in the session label value of every container a test starts
# (`session_label_value("server")` does), so the leftover check below only looks at this run's containers and
# never touches those of another run sharing the engine. Each pytest-xdist worker has a tag of its own, so
# that its leftover check never sees another worker's running containers.
RUN_TAG = os.environ.setdefault("TUI_PROFILER_TEST_RUN", secrets.token_hex(4)) + os.environ.get(
    "PYTEST_XDIST_WORKER", ""
)


# What each shared fixture needs, as marks for every test that uses it (directly or through another fixture).
FIXTURE_NEEDS: dict[str, tuple[str, ...]] = {
    "docker_client": ("docker",),
    "server_image": ("docker", "server"),
    "fleet_engines": ("docker", "fleet"),
    "fleet_home": ("docker", "fleet"),
    "fleet_ssh_home": ("docker", "fleet"),
    "mobilenet_server": ("server",),
}
# The marks that take a test out of the fast tier (registered in pyproject.toml).
TIER_MARKS = ("docker", "server", "fleet", "slow", "faults", "bench")

_F = TypeVar("_F", bound=Callable[..., object])


def needs(*marks: str) -> Callable[[_F], _F]:
    """Mark a module's own fixture with what it needs; every test using it gets these marks. Put it under
    `@pytest.fixture`: `@pytest.fixture(scope="module")` / `@needs("server")` / `def model(): ...`."""
    unknown = set(marks) - set(TIER_MARKS)
    assert not unknown, f"unknown tier marks {unknown}: use {TIER_MARKS}"

    def mark(func: _F) -> _F:
        func._tier_needs = marks  # type: ignore[attr-defined]
        return func

    return mark


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        wanted: set[str] = set()
        for name, defs in info.name2fixturedefs.items():  # the test's whole fixture closure
            wanted.update(FIXTURE_NEEDS.get(name, ()))
            for fixturedef in defs:
                wanted.update(getattr(fixturedef.func, "_tier_needs", ()))
        for mark in sorted(wanted):
            if not item.get_closest_marker(mark):
                item.add_marker(mark)
        # Under `-n 2 --dist loadgroup` (scripts/test.sh): the engine tests run on one worker, one after the
        # other as without xdist (they count containers, share the images and the fleet engines), unless
        # a test names a group of its own; the tests of the shared model server share one worker and so
        # one server. (The `alone` tests, which compare CPU caps, are run after, by themselves.)
        if item.get_closest_marker("xdist_group"):
            continue
        if item.get_closest_marker("docker") or item.get_closest_marker("fleet"):
            item.add_marker(pytest.mark.xdist_group("engine"))
        elif "mobilenet_server" in info.name2fixturedefs:
            item.add_marker(pytest.mark.xdist_group("mobilenet_server"))


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


def start_model_server(model: str) -> tuple[subprocess.Popen[bytes], str]:
    """`servers.model_server` with `model` (random weights, one thread) as a local process; waits until
    /healthz answers 200 and returns the process and its URL. The caller stops it."""
    from tui_profiler.runtime.common import free_port

    port = free_port()
    env = {**os.environ, "TUI_PROFILER_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "servers.model_server", "--model", model, "--weights", "random",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"model server exited: {err}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("model server never became ready")


@pytest.fixture(scope="session")
def mobilenet_server() -> Iterator[tuple[str, int]]:
    """One MobileNetV3-Small model server process for the whole run (each xdist worker has its own): its
    URL and process id. Tests only send it requests; none may stop or reconfigure it."""
    pytest.importorskip("torch")
    proc, url = start_model_server("mobilenet_v3_small")
    try:
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
