"""The measuring image (tui_profiler.fleet.image) on the real engine: it builds, its measuring side imports
and reads the host as an unprivileged, read-only, offline container, and an unchanged tree reuses it."""

from __future__ import annotations

import json
import os
import time
import tomllib
from pathlib import Path

import pytest

from tests.conftest import SESSION_LABEL, session_label_value
from tui_profiler.fleet import image

CHECK = (
    "import json, os, tui_profiler.sweep.runner, tui_profiler.load.client, tui_profiler.sample, "
    "tui_profiler.host\n"
    "import importlib.util as u\n"
    "absent = [m for m in ('torch', 'textual', 'docker', 'pandas', 'scipy') if u.find_spec(m)]\n"
    "print(json.dumps({'uid': os.getuid(), 'present': absent, 'facts': tui_profiler.host.host_facts()}))"
)


def test_measure_packages_carry_the_project_bounds(repo_root: Path) -> None:
    """The image installs the bounds pyproject declares (a bump there that is not made here fails)."""
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["server"]]
    by_name = {d.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip(): d for d in declared}
    for spec in image.MEASURE_PACKAGES:
        name = spec.split(">")[0].split("<")[0].split("=")[0]
        assert name in by_name, f"{name} is not a dependency of the project"
        assert by_name[name].split(";")[0].split("#")[0].strip() == spec


def test_sources_leave_out_the_ui_layers() -> None:
    files = {str(f) for f in image.source_files()}
    assert "sweep/runner.py" in files and "fleet/Dockerfile.measure" in files
    assert not any(f.startswith(("tui/", "commands/", "bench/")) or f == "cli.py" for f in files)
    assert not any(f.endswith(".pyc") for f in files)


@pytest.mark.docker
def test_measure_image_runs_locked_down_and_is_reused(docker_client) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    tag = image.ensure_measure_image(progress=lines.append)
    assert tag.startswith(f"{image.MEASURE_REPO}:")
    built = docker_client.images.get(tag)
    assert built.labels[image.SOURCE_HASH_LABEL] == tag.split(":", 1)[1]
    assert built.attrs["Config"]["User"] == "65534:65534"
    assert built.attrs["Config"]["Entrypoint"] == [
        "/opt/venv/bin/python3",
        "-m",
        "tui_profiler.sweep.measure",
    ]

    container = docker_client.containers.run(
        tag,
        entrypoint=["/opt/venv/bin/python3", "-c", CHECK],
        user="65534:65534",
        read_only=True,
        tmpfs={"/tmp": "rw,size=16m"},
        cap_drop=["ALL"],
        network_mode="none",
        labels={SESSION_LABEL: session_label_value("measure-image")},
        detach=True,
    )
    try:
        status = container.wait(timeout=120)
        out = container.logs(stdout=True, stderr=True).decode()
    finally:
        container.remove(force=True)
    assert status["StatusCode"] == 0, out
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["uid"] == 65534
    assert seen["present"] == [], f"the measuring image holds {seen['present']}"
    assert seen["facts"]["host"]["cpu_count"] == os.cpu_count()  # the same machine as the local engine

    # Unchanged tree: the same image, found by its tag; the engine tags nothing (a build, even a fully
    # cached one, ends with a `tag` event).
    since = int(time.time()) + 1  # the next whole second: after every event of the first call
    time.sleep(since - time.time())
    again = image.ensure_measure_image()
    until = int(time.time()) + 1
    assert again == tag
    assert docker_client.images.get(again).id == built.id
    events = docker_client.events(
        since=since, until=until, filters={"type": "image", "event": "tag"}, decode=True
    )
    tagged = [e for e in events if e.get("Actor", {}).get("Attributes", {}).get("name") == tag]
    assert tagged == []
