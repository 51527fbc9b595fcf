"""Issue 7, faults during a real sweep: each ends as the cell's status and reason in cells.csv, no
container of the run is left, every row on disk reads back, and the sweep goes on where that makes sense.

- a port already in use (default run; no container ever starts): `port_conflict`, for every group;
- behind `-m faults`: a container OOM-killed mid-cell (a scale that outgrows the memory cap), the server
  killed mid-request (`docker kill` during load), a hung server (`docker pause` during load: timeouts),
  the output disk full (a 32 KiB tmpfs as --output), and the engine restarting mid-sweep (opt-in twice:
  it restarts the machine's dockerd, so it also needs TUI_PROFILER_FAULTS_ENGINE_RESTART=1).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.faults.harness import (
    IMAGE_OVERRIDE,
    REPO,
    TINY,
    CliRun,
    EngineProxy,
    read_csv_rows,
    remove_containers,
    sets,
)
from tui_profiler.config import load_preset
from tui_profiler.runtime.base import SESSION_LABEL
from tui_profiler.session.store import recording
from tui_profiler.sweep import SweepRunner

pytestmark = pytest.mark.docker
START_TIMEOUT_S = 300


@pytest.fixture
def image(request: pytest.FixtureRequest) -> str:
    return IMAGE_OVERRIDE or request.getfixturevalue("server_image")


def _cells(session: Path) -> pd.DataFrame:
    return pd.read_csv(session / "cells.csv")


def _all_rows_complete(session: Path) -> None:
    """Each CSV reads back with pandas, and no row is half-written (pandas sees as many rows as there are
    complete ones)."""
    for name in ("requests.csv", "cells.csv", "samples.csv"):
        path = session / name
        if not path.exists() or path.stat().st_size == 0:
            continue
        frame = pd.read_csv(path)
        assert len(frame) == len(read_csv_rows(path)), f"{name}: a half-written row"
        assert path.read_bytes().endswith(b"\n"), f"{name}: ends mid-line"


def _finish(run: CliRun, client: Any, timeout_s: float = 600) -> tuple[int, Path]:
    try:
        rc = run.wait(timeout_s)
    finally:
        run.kill()
        leaked = run.containers(client)
        remove_containers(leaked)
    assert not leaked, f"containers left: {[c.name for c in leaked]}\n{run.tail()}"
    assert "Traceback" not in run.text(), run.tail(60)
    session = run.session_dir()
    assert session is not None
    _all_rows_complete(session)
    return rc, session


def _cli(
    tmp_path: Path, *extra: str, output: Path | None = None, env: dict[str, str] | None = None
) -> CliRun:
    out = output or tmp_path / "out"
    return CliRun(["run", "smoke", "--headless", "--output", str(out), *sets(*TINY, *extra)], out, env=env)


def _at_load(run: CliRun) -> bool:
    return any(r["warmup"] == "0" for r in run.requests()) and not run.cells()


# --------------------------------------------------------------------------------------------- default run


async def test_port_in_use_is_the_cells_status(
    tmp_path: Path, image: str, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every host port the runtime picks is taken (a listener holds it): each group's cell ends as
    `port_conflict` with the reason, the sweep goes on to the next group, and nothing is left."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    monkeypatch.setattr("tui_profiler.runtime.docker.free_port", lambda host="127.0.0.1": port)
    preset = load_preset(
        "smoke", [*TINY, "input.scales=0.5", "resources.cpus=0.5,1", "resources.memory_gb=1,2"]
    )
    runner = SweepRunner(preset, runtime="docker", output_dir=tmp_path)
    events: list[Any] = []
    try:
        finished = await runner.run(recording(events.append))
    finally:
        holder.close()
    assert finished.status == "failed" and finished.n_failed == 2
    assert runner.session_dir is not None
    cells = _cells(runner.session_dir)
    assert list(cells["cell_index"]) == [0, 1]  # the sweep went on to the second group
    assert (cells["status"] == "port_conflict").all(), cells[["status", "reason"]]
    assert cells["reason"].str.contains("127.0.0.1").all()
    left = docker_client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={runner.session_id}"})
    assert not left


# --------------------------------------------------------------------------------------------- faults


@pytest.mark.faults
def test_oom_mid_cell_then_the_sweep_goes_on(tmp_path: Path, image: str, docker_client: Any) -> None:
    """1 GiB cap; the scale grows until memory runs out (x16: 3584x3584 px). The OOM cell is `oom`; the
    next cell gets a fresh container and is measured."""
    run = _cli(
        tmp_path,
        "resources.memory_gb=1",
        "input.scales=1,16,2",
        "load.warmup=1",
        "load.requests=3",
        "load.timeout_s=120",
    )
    rc, session = _finish(run, docker_client)
    cells = _cells(session).set_index("input_scale")
    assert rc == 1, run.tail()
    assert cells.loc[1.0, "status"] == "ok"
    assert cells.loc[16.0, "status"] == "oom", cells[["status", "reason"]]
    assert "OOM" in cells.loc[16.0, "reason"]
    assert cells.loc[2.0, "status"] == "ok" and cells.loc[2.0, "cold_start_cell"] == 1  # a fresh container
    assert cells.loc[16.0, "peak_mem_bytes"] <= 1 * 2**30 * 1.01


@pytest.mark.faults
def test_server_killed_mid_request(tmp_path: Path, image: str, docker_client: Any) -> None:
    run = _cli(tmp_path)
    run.wait_for(lambda: _at_load(run), START_TIMEOUT_S, "the load")
    (container,) = run.containers(docker_client)
    container.kill()
    rc, session = _finish(run, docker_client)
    cells = _cells(session).set_index("cell_index")
    assert rc == 1
    assert cells.loc[0, "status"] == "crashed", cells[["status", "reason"]]
    assert "exit code" in cells.loc[0, "reason"]
    assert cells.loc[1, "status"] == "ok"  # the sweep went on, in a fresh container


@pytest.mark.faults
def test_hung_server_times_out(tmp_path: Path, image: str, docker_client: Any) -> None:
    run = _cli(tmp_path, "load.timeout_s=2", "load.warmup=3", "load.requests=6")
    run.wait_for(lambda: _at_load(run), START_TIMEOUT_S, "the load")
    (container,) = run.containers(docker_client)
    container.pause()
    rc, session = _finish(run, docker_client)
    cells = _cells(session).set_index("cell_index")
    requests = pd.read_csv(session / "requests.csv")
    assert rc == 1
    assert cells.loc[0, "status"] == "timeout", cells[["status", "reason"]]
    assert (requests[(requests["cell_index"] == 0)]["status"] == "timeout").any()
    assert cells.loc[1, "status"] in ("ok", "timeout")  # the sweep went on


@pytest.mark.faults
def test_output_disk_full(tmp_path: Path, image: str, docker_client: Any) -> None:
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mnt)], check=True)
    try:
        run = _cli(tmp_path, "load.requests=200", output=mnt)
        rc, session = _finish(run, docker_client)
        assert rc != 0
        errors = [line for line in run.text().splitlines() if "No space left on device" in line]
        assert errors, run.tail()
        assert len(errors[0]) < 300
        assert len(pd.read_csv(session / "requests.csv")) > 0  # what fitted is there and readable
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.faults
@pytest.mark.skipif(
    os.environ.get("TUI_PROFILER_FAULTS_ENGINE_RESTART") != "1",
    reason="restarts the machine's dockerd: set TUI_PROFILER_FAULTS_ENGINE_RESTART=1",
)
def test_engine_restart_mid_sweep(tmp_path: Path, image: str, docker_client: Any) -> None:
    import docker

    run = _cli(tmp_path)
    run.wait_for(lambda: _at_load(run), START_TIMEOUT_S, "the load")
    pid = int(Path("/var/run/docker.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    for _ in range(600):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    subprocess.run(["bash", str(REPO / "scripts" / "engine.sh")], check=True, timeout=120)
    client = docker.from_env(timeout=60)
    try:
        rc, session = _finish(run, client)
    finally:
        client.close()
    cells = _cells(session)
    assert rc in (0, 1)
    assert len(cells) == 2 and cells["status"].notna().all()
    assert cells.iloc[0]["status"] != "ok" and cells.iloc[0]["reason"]


@pytest.mark.faults
def test_engine_outage_mid_sweep(tmp_path: Path, image: str, docker_client: Any) -> None:
    """The engine goes away mid-load — its API unreachable and the container stopped, as a dockerd
    restart without live-restore does — and comes back once the cell is recorded. Played through a
    socket relay (EngineProxy) so the machine's shared dockerd is never touched. The cell ends with a
    status and reason, the sweep goes on, and no container is left once the engine is back."""
    proxy = EngineProxy(Path("/tmp") / f"tui-profiler-faults-{os.getpid()}.sock")
    proxy.up()
    try:
        run = _cli(tmp_path, env={"DOCKER_HOST": proxy.docker_host})
        run.wait_for(lambda: _at_load(run), START_TIMEOUT_S, "the load")
        (container,) = run.containers(docker_client)
        proxy.down()
        container.kill()  # what the engine's shutdown does to its containers
        run.wait_for(lambda: run.cells(), 120, "the cell's row", poll_s=0.05)
        proxy.up()
        rc, session = _finish(run, docker_client)
    finally:
        proxy.down()
    cells = _cells(session).set_index("cell_index")
    assert rc == 1
    assert cells.loc[0, "status"] != "ok" and cells.loc[0, "reason"], cells[["status", "reason"]]
    assert 1 in cells.index and cells.loc[1, "status"] in ("ok", "create_failed", "start_failed"), cells[
        ["status", "reason"]
    ]
