"""The engine end to end on the real Docker engine, with the real model server and a real torchvision model.

One module-scoped sweep of the `smoke` preset (MobileNetV3-Small, scales 0.5/1/2) over three resource
configs: first one whose memory cap is far below what the server needs (it must end as an OOM cell and the
sweep must go on), then the preset's own 0.5 CPU / 1 GiB and 2 CPU / 4 GiB. Then a headless run interrupted
by SIGINT during its load, resumed to completion.

Caps are proven by what the kernel counted (throttling, CPU time against the quota), never by latencies.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from statistics import median

import pytest

from tests.conftest import REPO, SESSION_LABEL
from tests.replay import assert_replay_reproduces
from tui_profiler import events as ev
from tui_profiler.session.reader import read_rows
from tui_profiler.session.schema import COLD_START_PHASES
from tui_profiler.session.store import recording

pytestmark = pytest.mark.docker

OOM_GIB = 0.12  # far below what importing torch needs
OVERRIDES = ["resources.cpus=2,0.5,2", f"resources.memory_gb={OOM_GIB},1,4", "resources.pairing=zip"]


def _num(v: str) -> float | None:
    return float(v) if v not in ("", None) else None


def _cpu_pressure_us() -> int | None:
    """The kernel's running total (us) of time in which some runnable task waited for a CPU (PSI), or None
    on a kernel without /proc/pressure."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().split()[-1].removeprefix("total="))
    except (OSError, ValueError, IndexError):
        return None


@pytest.fixture(scope="module")
def smoke_session(docker_client, server_image, tmp_path_factory):  # type: ignore[no-untyped-def]
    from tui_profiler.config import load_preset
    from tui_profiler.sweep import SweepRunner

    out = tmp_path_factory.mktemp("sweep")
    preset = load_preset("smoke", OVERRIDES)
    runner = SweepRunner(preset, runtime="docker", output_dir=out)
    events: list[object] = []
    marks: dict[int, list[tuple[float, int | None]]] = {}  # cell -> (time, PSI) at its first answer, its end

    def on_event(e: object) -> None:
        events.append(e)
        if (isinstance(e, ev.RequestDone) and e.cell_index not in marks) or isinstance(e, ev.CellFinished):
            marks.setdefault(e.cell_index, []).append((time.perf_counter(), _cpu_pressure_us()))

    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    finished = asyncio.run(runner.run(recording(on_event)))
    wall = time.perf_counter() - t0
    load_1min = max(load_before, os.getloadavg()[0])
    # per cell: the share of its load time in which some task on the host waited for a CPU
    pressure: dict[int, float] = {}
    for i, m in marks.items():
        if len(m) == 2 and m[0][1] is not None and m[1][1] is not None and m[1][0] > m[0][0]:
            pressure[i] = (m[1][1] - m[0][1]) / 1e6 / (m[1][0] - m[0][0])
    session = Path(finished.session_dir)
    print(
        f"\nsmoke sweep: {wall:.1f}s wall, session {session}, load average {load_1min:.1f}, "
        f"CPU pressure per cell {[(i, round(v, 2)) for i, v in sorted(pressure.items())]}"
    )
    return {
        "load_1min": load_1min,
        "cpu_pressure": pressure,
        "finished": finished,
        "events": events,
        "dir": session,
        "preset": preset,
        "wall_s": wall,
        "cells": read_rows(session / "cells.csv")[1],
        "requests": read_rows(session / "requests.csv")[1],
        "samples": read_rows(session / "samples.csv")[1],
        "meta": json.loads((session / "meta.json").read_text()),
    }


def _ok_cells(s: dict) -> list[dict]:
    return [c for c in s["cells"] if c["status"] == "ok"]


def test_four_files_and_every_cell_once(smoke_session) -> None:  # type: ignore[no-untyped-def]
    s = smoke_session
    assert {p.name for p in s["dir"].iterdir()} >= {"requests.csv", "cells.csv", "samples.csv", "meta.json"}
    assert [c["cell_index"] for c in s["cells"]] == [str(i) for i in range(9)]
    assert s["finished"].status == "failed" and s["finished"].n_failed == 3  # the OOM config's three cells
    ok = _ok_cells(s)
    assert len(ok) == 6, [(c["cell_index"], c["status"], c["reason"]) for c in s["cells"]]
    per_cell = Counter(r["cell_index"] for r in s["requests"])
    for c in ok:
        assert c["n"] == "12" and c["errors"] == "0" and c["warmup_n"] == "2"
        assert per_cell[c["cell_index"]] == 14  # 2 warm-up + 12 timed, each exactly once
    warm = [r for r in s["requests"] if r["warmup"] == "1"]
    assert len(warm) == 12 and all(r["status"] == "ok" for r in s["requests"])


def test_oom_cell_is_recorded_and_the_sweep_goes_on(smoke_session) -> None:  # type: ignore[no-untyped-def]
    s = smoke_session
    oom = [c for c in s["cells"] if c["mem_cap_gb"] == str(OOM_GIB)]
    assert len(oom) == 3
    assert all(c["status"] == "oom" for c in oom), [(c["status"], c["reason"]) for c in oom]
    assert "oom" in oom[0]["reason"].lower()
    assert oom[0]["n"] == "0" and oom[0]["p50_s"] == ""  # nothing measured: empty, not 0
    assert int(oom[0]["cell_index"]) < int(_ok_cells(s)[0]["cell_index"])  # later cells still ran
    finished = [e for e in s["events"] if isinstance(e, ev.CellFinished)]
    assert [e.status for e in finished].count("oom") == 3


CFS_PERIOD_S = 0.1  # Docker's cpu.cfs_period_us (100 ms): the quota is granted per period


def _cell(s: dict, cpus: str, scale: str) -> dict:
    (c,) = [c for c in _ok_cells(s) if c["cpu_cores"] == cpus and c["input_scale"] == scale]
    return c


def _cpu_s_per_request(c: dict) -> float:
    """CPU time the kernel charged to the container during the cell's load (warm-up included), per request."""
    return float(c["mean_cpu_cores"]) * float(c["load_wall_s"]) / (int(c["n"]) + int(c["warmup_n"]))


def _quota_ceiling(cap: float, span_s: float) -> float:
    """The most CPU (in cores) a CFS quota of `cap` can grant over `span_s` seconds: the span touches at most
    one period more than it covers, and each period grants `cap` x period."""
    return cap * (1 + CFS_PERIOD_S / span_s)


def test_input_bytes_and_cpu_work_grow_with_scale(smoke_session) -> None:  # type: ignore[no-untyped-def]
    """Scale 2 sends 16x the pixels of scale 0.5: every request's raw float32 body is exactly 12 bytes a pixel,
    and at 0.5 CPU the CPU time the kernel charged the container per request grows with it. (This replaces
    a p50 ratio: the quota stretches or hides a latency, not a CPU count.) At 2 CPUs the CPU count is not
    asserted: torch's second thread spin-waits, and on a busy host that spinning is most of what is charged
    (ratio 0.78-9.3 there over the runs below), so it measures the neighbours, not the work.

    Measured 2026-12-01 07:49-08:09, 22 runs of this sweep on the shared 2-core VM (load average 1.9-5.5,
    other agents building and testing): CPU seconds per request at 0.5 CPU, scale 2 / scale 0.5,
    min/median/max 2.60/3.74/4.23; asserted > 1.5."""
    s = smoke_session
    for r in s["requests"]:
        body = 3 * 4 * int(r["pixels"])  # raw float32, 3 channels
        assert body <= int(r["bytes_sent"]) <= body + 512, r  # + the request line and headers
    small, big = _cell(s, "0.5", "0.5"), _cell(s, "0.5", "2.0")
    work = _cpu_s_per_request(big) / _cpu_s_per_request(small)
    assert work > 1.5, f"CPU s/request at scale 2 vs 0.5: {work:.2f} (load average {s['load_1min']:.1f})"


def test_half_a_cpu_cap_is_enforced_and_binds(smoke_session) -> None:  # type: ignore[no-untyped-def]
    """The 0.5 CPU cap, proven by the kernel's counters rather than by latencies (under a CFS quota a request
    that fits one period's 50 ms budget runs at full speed, so a p50 hides the cap):
    - enforced: every sample of the 0.5 container reads a 0.5 quota from its cgroup, and no 0.5 cell was
      granted more CPU than the quota allows over its span (a short cell can read above 0.5 cores, up to
      1.19x here: its span touches one period more than it covers);
    - binds: the server (one thread, concurrency 1) wants a whole core, so wherever the host lets it run
      the kernel throttles it (throttled periods, or throttled time: cgroup v1 counts a period in which the
      container is still throttled before it adds that period's time). If the kernel never did, the
      neighbours left that one thread less than half a core in every period and the cap could not bind:
      a skip with the counters. But where the kernel's CPU pressure (PSI: the share of time in which some
      task waited for a CPU) stayed below 0.5 through all three 0.5 cells, the thread had its core and an
      unthrottled container is a failure.
    Not asserted, because they measure the neighbours: that the 2 CPU config used more than half a CPU
    (idle host ~1.8 cores; 0.35-0.96 cores at load 3.6-5.5 here), and usage near the quota at scale 2.

    Measured 2026-12-01 07:49-08:09, 22 runs of this sweep on the shared 2-core VM (load average 1.9-5.5,
    other agents building and testing), min/median/max: mean usage / quota ceiling, the largest of the
    three 0.5 cells, 0.72/0.88/0.95 (asserted <= 1.1); throttled periods over the three 0.5 cells 1/12/20
    and throttled time 0.009/0.27/0.90 s (asserted: either > 0, else skip); CPU pressure during the 0.5
    cells 0.25-0.99 (10 runs), all of them throttled; at scale 2 mean usage / quota 0.79/0.98/1.04
    (informative). Two further runs beside a second sweep: 2 periods, and 0 (0.23 cores: a skip). The
    p50 ratio the old check asserted > 1.3, 0.5 CPU over 2 CPUs at scale 2, was 0.06/0.41/2.8."""
    s = smoke_session
    load = f"load average {s['load_1min']:.1f}"
    half = [c for c in _ok_cells(s) if c["cpu_cores"] == "0.5"]
    assert len(half) == 3
    indices = {c["cell_index"] for c in half}
    caps = {r["cpu_cap"] for r in s["samples"] if r["cell_index"] in indices}
    assert {float(v) for v in caps} == {0.5}, caps
    for c in half:
        ceiling = _quota_ceiling(0.5, float(c["load_wall_s"]))
        assert float(c["mean_cpu_cores"]) <= 1.1 * ceiling, (c["input_scale"], c["mean_cpu_cores"], ceiling)

    periods = sum(int(c["throttled_periods"]) for c in half)  # int(''): a counter not read fails here
    throttled_s = sum(float(c["throttled_s"]) for c in half)
    if periods == 0 and throttled_s == 0:
        waited = [s["cpu_pressure"].get(int(c["cell_index"])) for c in half]
        counters = f"mean cores {[c['mean_cpu_cores'] for c in half]}, CPU pressure {waited}, {load}"
        # on a host where tasks waited for a CPU less than half the time, the thread got its core
        assert None in waited or max(waited) >= 0.5, (
            f"the 0.5 CPU cap never bound on a quiet host: {counters}"
        )
        pytest.skip(f"the 0.5 CPU cap could not bind: the kernel never throttled the container ({counters})")


def test_caps_enforced_and_peak_memory_within_the_cap(smoke_session) -> None:  # type: ignore[no-untyped-def]
    for c in _ok_cells(smoke_session):
        assert c["cpus_enforced"] == "1" and c["mem_enforced"] == "1"
        cap = float(c["mem_cap_gb"]) * 2**30
        peak = _num(c["peak_mem_bytes"])
        assert peak is not None and 50 * 2**20 < peak <= cap, (c["cell_index"], peak, cap)
        assert _num(c["peak_cpu_cores"]) is not None
        assert float(c["peak_cpu_cores"]) <= float(c["cpu_cores"]) * 1.5 + 0.2  # sampled rate, some jitter
    by_cell = Counter(r["cell_index"] for r in smoke_session["samples"])
    for c in _ok_cells(smoke_session):
        assert by_cell[c["cell_index"]] >= 1


def test_cold_start_phases_sum_to_the_total(smoke_session) -> None:  # type: ignore[no-untyped-def]
    fresh = [c for c in _ok_cells(smoke_session) if c["cold_start_cell"] == "1"]
    assert len(fresh) == 2  # one container per resource config, reused across its scales
    for c in fresh:
        phases = {p: _num(c[f"{p}_s"]) for p in COLD_START_PHASES}
        assert phases["image_pull"] is None and c["image_pull_detail"] == "cached"  # local image, not pulled
        for p in ("create", "start", "server_boot", "model_load", "ready", "first_request"):
            assert phases[p] is not None and phases[p] >= 0, (p, phases)
        total = float(c["cold_start_s"])
        assert sum(v for v in phases.values() if v) == pytest.approx(total, rel=1e-6)
        wall = float(c["cold_start_wall_s"])  # measured around the whole start, independently
        assert abs(total - wall) <= 0.05 * wall, (total, wall, phases)
    later = [c for c in _ok_cells(smoke_session) if c["cold_start_cell"] == "0"]
    assert len(later) == 4
    phase_events = [e.phase for e in smoke_session["events"] if isinstance(e, ev.ColdStartPhase)]
    for p in ("create", "start", "server_boot", "model_load", "ready", "first_request"):
        assert phase_events.count(p) >= 2


def test_request_rows_have_server_timing_and_overhead(smoke_session) -> None:  # type: ignore[no-untyped-def]
    timed = [r for r in smoke_session["requests"] if r["warmup"] == "0"]
    for r in timed:
        lat, server, over = float(r["latency_s"]), _num(r["server_total_ms"]), _num(r["overhead_ms"])
        assert server is not None and over is not None
        assert over == pytest.approx(lat * 1000 - server, abs=0.01)
        assert r["model_name"] == "mobilenet_v3_small" and r["gpu_mode"] == "off" and r["batch_size"] == "1"
        assert int(r["pixels"]) == round(224 * float(r["input_scale"])) ** 2
        assert r["cold_start_s"] != ""
    assert median(float(r["overhead_ms"]) for r in timed) >= 0


def test_meta_records_host_runtime_and_packages(smoke_session) -> None:  # type: ignore[no-untyped-def]
    m = smoke_session["meta"]
    assert m["runtime"] == "docker" and "engine" in m["runtime_reason"].lower()
    assert m["host"]["cpu_model"] and m["host"]["kernel"] and m["host"]["cgroup_version"] in ("v1", "v2")
    assert m["engine_version"][0].isdigit()
    assert m["host"]["gpu"]  # a driver version, or 'not available (...)'
    assert m["packages"]["docker"] and m["readiness_poll_interval_s"] <= 0.01
    assert m["status"] == "failed" and m["cells_remaining"] == []
    assert m["preset_toml"]["model"] == "mobilenet_v3_small"


def _session_id(session_dir: Path) -> str:
    """The container label value of a session (the folder name plus a random token, from meta.json)."""
    return json.loads((session_dir / "meta.json").read_text())["session_id"]


def test_no_container_left(smoke_session, docker_client) -> None:  # type: ignore[no-untyped-def]
    left = docker_client.containers.list(
        all=True, filters={"label": f"{SESSION_LABEL}={_session_id(smoke_session['dir'])}"}
    )
    assert left == []


# --------------------------------------------------------------------------------------------- SIGINT


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tui_profiler", *args]


def test_sigint_mid_load_then_resume_runs_each_cell_once(docker_client, server_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # the image the fixture made, named, so that no rebuild (the server's sources changing while a
    # developer works) can eat the time before the load starts
    sets = [
        "--set",
        f"image={server_image}",
        "--set",
        "resources.cpus=2",
        "--set",
        "resources.memory_gb=2",
        "--set",
        "input.scales=0.5,1",
        "--set",
        "load.requests=20",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _cli("run", "smoke", "--headless", "--output", str(tmp_path), *sets),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    session: Path | None = None
    rows_before = 0
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            dirs = [d for d in tmp_path.iterdir() if d.is_dir()]
            if dirs:
                session = dirs[0]
                rows_before = len(read_rows(session / "requests.csv")[1])
                if rows_before >= 5:  # warm-up done, timed requests of cell 0 under way
                    break
            time.sleep(0.05)
        assert session is not None and rows_before >= 5, "the run never reached its load phase"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-2000:]
    assert "resume with" in out
    left = docker_client.containers.list(
        all=True, filters={"label": f"{SESSION_LABEL}={_session_id(session)}"}
    )
    assert left == [], "the interrupted run left a container"
    meta = json.loads((session / "meta.json").read_text())
    assert meta["status"] == "interrupted" and 0 in meta["cells_remaining"]
    partial_rows = read_rows(session / "requests.csv")[1]
    assert len(partial_rows) >= rows_before  # every finished request is on disk

    res = subprocess.run(
        _cli("run", "--resume", str(session), "--headless"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    cells = read_rows(session / "cells.csv")[1]
    assert sorted(c["cell_index"] for c in cells) == ["0", "1"]  # each cell exactly once
    assert all(c["status"] == "ok" for c in cells)
    per_cell = Counter(r["cell_index"] for r in read_rows(session / "requests.csv")[1])
    assert per_cell == {"0": 22, "1": 22}  # 2 warm-up + 20 timed each; no duplicates
    kept = read_rows(session / "requests.partial.csv")[1]  # the cut cell's rows: moved aside, not lost
    assert len(kept) >= rows_before and {r["cell_index"] for r in kept} == {"0"}
    meta = json.loads((session / "meta.json").read_text())
    assert meta["status"] == "ok" and len(meta["resumes"]) == 1
    assert (
        docker_client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={_session_id(session)}"})
        == []
    )


def test_sigkill_leaves_an_orphan_that_the_next_start_removes(
    docker_client, server_image, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL gives no chance to clean up: the container stays. The next run's start-up (remove_orphans)
    removes it because its owner process is gone, and names it; live runs' containers are not touched."""
    from tui_profiler.runtime.docker import OWNER_LABEL, DockerRuntime

    sets = [
        "--set",
        f"image={server_image}",
        "--set",
        "resources.cpus=2",
        "--set",
        "resources.memory_gb=2",
        "--set",
        "input.scales=0.5",
        "--set",
        "load.requests=100000",
    ]
    proc = subprocess.Popen(
        _cli("run", "smoke", "--headless", "--output", str(tmp_path), *sets),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    found = []
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None and not found:
            dirs = [d for d in tmp_path.iterdir() if d.is_dir()]
            if dirs and (dirs[0] / "meta.json").is_file():
                found = docker_client.containers.list(
                    filters={"label": f"{SESSION_LABEL}={_session_id(dirs[0])}"}
                )
            time.sleep(0.2)
        assert found, "the run never started its container"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (container,) = found
    assert container.labels[OWNER_LABEL].split(":")[1] == str(proc.pid)
    container.reload()  # still there: nobody cleaned up
    removed = asyncio.run(DockerRuntime().remove_orphans())
    assert any(container.name in r for r in removed), removed
    assert docker_client.containers.list(all=True, filters={"id": container.id}) == []


def test_a_recorded_stream_replays_into_the_same_files(smoke_session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert_replay_reproduces(smoke_session["events"], smoke_session["dir"], tmp_path)
