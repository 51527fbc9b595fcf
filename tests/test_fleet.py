"""The fleet on real engines: extra Docker engines on this machine, each in a network namespace of its own
with its own data root and socket (scripts/engines.sh), reached over tcp:// and over ssh:// with a key the
script made. A sweep is spread over them by `tui-profiler run --hosts`, measured next to each target by the
measuring container; the assertions read the session's CSVs, its meta.json and the engines themselves.

The target is a stdlib server (tests/foreign/lazy_model) whose "model load" is CPU work (chained SHA-256
rounds), so a container group's cost is bound by the cores its host confines it to."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUN_TAG
from tests.fleet_engines import FleetEngine
from tests.replay import assert_replay_reproduces

REPO = Path(__file__).resolve().parent.parent
LAZY = REPO / "tests" / "foreign" / "lazy_model"
LAZY_TAG = "tui-profiler-test-lazy:fleet"
SESSION_LABEL = "tui-profiler.session"

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def lazy_image(docker_client) -> str:  # type: ignore[no-untyped-def]
    docker_client.images.build(
        path=str(LAZY),
        tag=LAZY_TAG,
        buildargs={"BASE_IMAGE": "tui-profiler-base:bookworm"},
        labels={"tui-profiler.image": "test-lazy"},
        pull=False,
        rm=True,
        forcerm=True,
    )
    return LAZY_TAG


def preset(
    tmp_path: Path,
    *,
    rounds: int,
    cpus: str,
    memory: str,
    requests: int,
    scales: str = "[1.0]",
    extra: str = "",
) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(
        f"""
name = "fleet-{RUN_TAG}"
description = "test: a stdlib server whose model load is CPU work, on the fleet's engines"
[target]
image = "{LAZY_TAG}"
port = 8080
env = {{ LOAD_ROUNDS = "{rounds}" }}
readiness = {{ kind = "http", path = "/health", json_field = "model_state", json_value = "READY", timeout_s = 180 }}
[input]
kind = "tensor"
base_size = [8, 8]
scales = {scales}
[request]
check = {{ json_field = "predictions" }}
[resources]
cpus = {cpus}
memory_gb = {memory}
cpuset = true
[load]
concurrency = [1]
requests = {requests}
warmup = 2
{extra}
"""
    )
    return path


def hosts_file(tmp_path: Path, hosts: list[dict[str, str]]) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(
        "".join("[[hosts]]\n" + "".join(f'{k} = "{v}"\n' for k, v in h.items()) + "\n" for h in hosts)
    )
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tui_profiler", "run", *args, "--headless"]


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "COLUMNS": "160"}


def run_to_end(*args: str, home: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    """`tui-profiler run ARGS --headless`, waited for (HOME: the ssh:// key's)."""
    return subprocess.run(
        cli(*args), cwd=REPO, env=env_for(home), capture_output=True, text=True, timeout=timeout
    )


def start_run(*args: str, home: Path) -> subprocess.Popen[str]:
    """`tui-profiler run ARGS --headless` in the background, its output in one pipe."""
    return subprocess.Popen(
        cli(*args), cwd=REPO, env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_while_running(proc: subprocess.Popen[str], until: Callable[[], bool], what: str) -> None:
    """Poll `until` while the run goes on; fail with its output if it ends first, or after 180 s."""
    deadline = time.monotonic() + 180
    while not until():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def session_of(out: Path) -> Path:
    (session,) = list(out.iterdir())
    return session


def labelled(engine: FleetEngine, session: Path) -> list[Any]:
    session_id = json.loads((session / "meta.json").read_text())["session_id"]
    client = engine.client(engine.unix_url)
    try:
        return list(client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session_id}"}))
    finally:
        client.close()


def running_measurers(engine: FleetEngine, min_age_s: float) -> int:
    client = engine.client(engine.unix_url)
    try:
        found = client.containers.list(filters={"label": "tui-profiler.role=measure"})
        n = 0
        for c in found:
            started = c.attrs["State"]["StartedAt"][:26].rstrip("Z")
            from datetime import UTC, datetime

            age = time.time() - datetime.fromisoformat(started).replace(tzinfo=UTC).timestamp()
            n += age >= min_age_s
        return n
    finally:
        client.close()


def remove_images(engine: FleetEngine, *prefixes: str) -> None:
    client = engine.client(engine.unix_url)
    try:
        for image in client.images.list():
            if any(t.startswith(prefixes) for t in image.tags):
                client.images.remove(image.id, force=True)
    finally:
        client.close()


def test_a_sweep_spread_over_two_engines_lands_in_one_session(
    fleet_engines: list[FleetEngine], fleet_home: Path, lazy_image: str, tmp_path: Path
) -> None:
    e1, e2 = fleet_engines[0], fleet_engines[1]
    assert e1.ssh_url
    remove_images(e2, LAZY_TAG, "tui-profiler-measure:")  # e2 lacks both images: they are sent to it
    hosts = hosts_file(
        tmp_path,
        [
            {"url": e1.ssh_url, "name": "e1", "host_class": "class-a", "cpuset": "0"},  # over SSH
            {"url": e2.tcp_url, "name": "e2", "host_class": "class-b", "cpuset": "1"},
        ],
    )
    out = tmp_path / "out"
    spec = preset(tmp_path, rounds=200_000, cpus="[0.5, 1]", memory="[0.5, 1]", requests=10)
    recorded = tmp_path / "events.jsonl"
    args = (str(spec), "--hosts", str(hosts), "--output", str(out), "--events", str(recorded))
    proc = run_to_end(*args, home=fleet_home, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    session = session_of(out)
    # the events the remote measuring containers sent, replayed: the session's files byte for byte
    from tui_profiler.events import event_from_json

    events = [event_from_json(line) for line in recorded.read_text().splitlines()]
    assert {e.host for e in events if type(e).__name__ == "RequestDone"} == {"e1", "e2"}
    assert_replay_reproduces(events, session, tmp_path)
    cells = read_csv(session / "cells.csv")
    assert sorted(int(c["cell_index"]) for c in cells) == [0, 1, 2, 3]  # every cell exactly once
    assert all(c["status"] == "ok" for c in cells), [c["reason"] for c in cells]
    by_host = {c["host"] for c in cells}
    assert by_host == {"e1", "e2"}  # both took a container group at once
    for c in cells:
        assert c["host_class"] == {"e1": "class-a", "e2": "class-b"}[c["host"]]
        # read from the target's cgroup through the measuring container's mount: the host's own cores
        assert c["cpuset"] == {"e1": "0", "e2": "1"}[c["host"]]
        assert c["cpus_enforced"] == "1" and c["mem_enforced"] == "1"
        assert c["sample_source"].startswith("cgroup")  # sampled next to the target, not via the engine
    requests = read_csv(session / "requests.csv")
    per_cell = {c["cell_index"]: c["host"] for c in cells}
    assert len(requests) == 4 * (10 + 2)
    assert all(r["host"] == per_cell[r["cell_index"]] for r in requests)
    # the image e2 lacked was sent to it, timed and counted, and paid by its first cold start
    sent = [c for c in cells if c["host"] == "e2" and c["image_pull_detail"].startswith("sent")]
    assert len(sent) == 1 and int(sent[0]["image_pull_bytes"]) > 100 * 2**20
    assert float(sent[0]["image_pull_s"]) > 0
    meta = json.loads((session / "meta.json").read_text())
    assert set(meta["hosts"]) == {"e1", "e2"}
    for name in ("e1", "e2"):
        facts = meta["hosts"][name]
        assert facts["engine_version"] and facts["cgroup_version"]
        assert facts["machine"]["host"]["cpu_count"] == os.cpu_count()
    assert meta["hosts"]["e2"]["measuring_image_sent"]["bytes"] > 100 * 2**20
    for engine in (e1, e2):
        assert not labelled(engine, session), f"left behind on {engine.name}"


def test_sigint_removes_every_hosts_containers_and_resume_finishes(
    fleet_engines: list[FleetEngine], fleet_home: Path, lazy_image: str, tmp_path: Path
) -> None:
    e1, e2 = fleet_engines[0], fleet_engines[1]
    hosts = hosts_file(
        tmp_path,
        [{"url": e1.tcp_url, "name": "e1", "cpuset": "0"}, {"url": e2.tcp_url, "name": "e2", "cpuset": "1"}],
    )
    out = tmp_path / "out"
    spec = preset(tmp_path, rounds=200_000, cpus="[0.5, 1]", memory="[0.5, 1]", requests=150)
    proc = start_run(str(spec), "--hosts", str(hosts), "--output", str(out), home=fleet_home)
    try:
        wait_while_running(
            proc,
            lambda: bool(running_measurers(e1, 1.0) and running_measurers(e2, 1.0)),
            "no group ran on both hosts",
        )
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]
    session = session_of(out)
    for engine in (e1, e2):
        assert not labelled(engine, session), f"left behind on {engine.name}"
    assert len(read_csv(session / "cells.csv")) < 4  # it was cut short

    # the hosts come from the session's meta.json
    proc2 = run_to_end("--resume", str(session), home=fleet_home, timeout=600)
    assert proc2.returncode == 0, proc2.stdout[-3000:] + proc2.stderr[-3000:]
    cells = read_csv(session / "cells.csv")
    assert sorted(int(c["cell_index"]) for c in cells) == [0, 1, 2, 3]
    assert {c["host"] for c in cells} <= {"e1", "e2"}
    finished = {c["cell_index"] for c in cells}
    assert {r["cell_index"] for r in read_csv(session / "requests.csv")} == finished
    for engine in (e1, e2):
        assert not labelled(engine, session)


def test_an_engine_stopped_mid_unit_has_its_unit_requeued(
    fleet_engines: list[FleetEngine], fleet_home: Path, lazy_image: str, tmp_path: Path
) -> None:
    e1, e3 = fleet_engines[0], fleet_engines[2]
    hosts = hosts_file(
        tmp_path,
        [{"url": e1.tcp_url, "name": "e1", "cpuset": "0"}, {"url": e3.tcp_url, "name": "e3", "cpuset": "1"}],
    )
    out = tmp_path / "out"
    spec = preset(tmp_path, rounds=200_000, cpus="[1]", memory="[0.5, 1]", requests=150)
    proc = start_run(str(spec), "--hosts", str(hosts), "--output", str(out), home=fleet_home)
    try:
        wait_while_running(proc, lambda: bool(running_measurers(e3, 1.5)), "no group ran on e3")
        os.kill(int(e3.pidfile.read_text()), signal.SIGKILL)  # the engine is gone mid-group
        output, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["bash", str(REPO / "scripts" / "engines.sh"), "up", "3"], check=True, timeout=240)
    assert proc.returncode == 0, output[-3000:]
    session = session_of(out)
    cells = read_csv(session / "cells.csv")
    assert sorted(int(c["cell_index"]) for c in cells) == [0, 1]  # every cell exactly once
    assert all(c["status"] == "ok" and c["host"] == "e1" for c in cells)  # the dropped group ran on e1
    meta = json.loads((session / "meta.json").read_text())
    (drop,) = meta["host_drops"]
    assert drop["host"] == "e3" and drop["requeued"] is True and drop["try"] == 1
    assert "e3" in output and "another host" in output
    assert not {r["host"] for r in read_csv(session / "requests.csv")} - {"e1"}  # no half cell from e3
    # e3's engine is back with what the dropped group left there; `clean --hosts` removes it
    left = labelled(e3, session)
    cleaned = subprocess.run(
        [sys.executable, "-m", "tui_profiler", "clean", "--hosts", e3.tcp_url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert f"removed {len(left)} container(s)" in cleaned.stdout
    for engine in (e1, e3):
        assert not labelled(engine, session)


def test_a_cap_a_host_cannot_give_is_refused_naming_the_host(
    fleet_engines: list[FleetEngine], fleet_home: Path, lazy_image: str, tmp_path: Path
) -> None:
    e1, e2 = fleet_engines[0], fleet_engines[1]
    hosts = hosts_file(
        tmp_path,
        [{"url": e1.tcp_url, "name": "e1"}, {"url": e2.tcp_url, "name": "e2", "cpuset": "1"}],
    )
    out = tmp_path / "out"
    spec = preset(tmp_path, rounds=1000, cpus="[2]", memory="[0.5]", requests=1)
    proc = run_to_end(str(spec), "--hosts", str(hosts), "--output", str(out), home=fleet_home, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "resources.cpus" in line and "fleet host e2" in line and "at most 1" in line
    assert not out.exists() or not list(out.iterdir())  # refused before any session or container


def test_an_adaptive_plan_hands_each_free_host_a_configuration(
    fleet_engines: list[FleetEngine], fleet_home: Path, lazy_image: str, tmp_path: Path
) -> None:
    """2 configurations × 3 sizes over two engines: the design's five cells go out as one configuration per
    host (no configuration on two hosts at once), the sixth is chosen by uncertainty once their results
    are in; every cell runs once, says why it was chosen, and the plan's state lands in meta.json."""
    e1, e2 = fleet_engines[0], fleet_engines[1]
    hosts = hosts_file(
        tmp_path,
        [
            {"url": e1.tcp_url, "name": "e1", "cpuset": "0"},
            {"url": e2.tcp_url, "name": "e2", "cpuset": "1"},
        ],
    )
    out = tmp_path / "out"
    spec = preset(
        tmp_path,
        rounds=20_000,
        cpus="[0.5, 1]",
        memory="[0.5]",
        requests=6,
        scales="[0.5, 1.0, 2.0]",
        extra='[plan]\nstrategy = "adaptive"\ngoal = "model"\ntarget_error = 10',
    )
    proc = run_to_end(str(spec), "--hosts", str(hosts), "--output", str(out), home=fleet_home, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    session = session_of(out)
    cells = read_csv(session / "cells.csv")
    assert sorted(int(c["cell_index"]) for c in cells) == list(range(6))  # every cell exactly once
    assert all(c["status"] == "ok" for c in cells), [c["reason"] for c in cells]
    assert {c["host"] for c in cells} == {"e1", "e2"}
    why = {int(c["cell_index"]): c["chosen_because"] for c in cells}
    assert sorted(why.values()) == ["design"] * 5 + ["uncertainty"]
    (chosen,) = [c for c in cells if c["chosen_because"] == "uncertainty"]
    assert float(chosen["predicted_lo_s"]) <= float(chosen["predicted_s"]) <= float(chosen["predicted_hi_s"])
    # a configuration's design cells went out as one group, to one host, and its first cell paid the start
    for cpus in ("0.5", "1.0"):
        design = [c for c in cells if c["cpu_cores"] == cpus and c["chosen_because"] == "design"]
        assert len({c["host"] for c in design}) == 1, design
        assert sum(c["cold_start_cell"] == "1" for c in design) == 1
    meta = json.loads((session / "meta.json").read_text())
    state = meta["adaptive"]
    assert state["cells_measured"] == 6 and state["cells_pending"] == 0 and state["running"] == {}
    assert state["stop_reason"] == "exhausted"
    for engine in (e1, e2):
        assert not labelled(engine, session), f"left behind on {engine.name}"
