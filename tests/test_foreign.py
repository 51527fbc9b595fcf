"""Bring your own serving container, end to end on the real engine.

A small foreign image is built here from the local base image (no registry is reachable): a stdlib HTTP
server speaking the TensorFlow Serving REST shape (tests/foreign/tfserving_like), with a model directory
mounted read-only, a readiness probe on its model-status URL and compute that grows with the input.
It is profiled through `tui-profiler run <preset> --headless` exactly like a catalog model: cold start,
caps, scales, CSVs. Our own server image is driven through an explicit template the same way."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOREIGN = REPO / "tests" / "foreign" / "tfserving_like"
FOREIGN_TAG = "tui-profiler-test-foreign:tfserving-like"
SESSION_LABEL = "tui-profiler.session"

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def foreign_image(docker_client) -> str:  # type: ignore[no-untyped-def]
    docker_client.images.build(
        path=str(FOREIGN),
        tag=FOREIGN_TAG,
        buildargs={"BASE_IMAGE": "tui-profiler-base:bookworm"},
        labels={"tui-profiler.image": "test-foreign"},
        pull=False,
        rm=True,
        forcerm=True,
    )
    return FOREIGN_TAG


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    """TF Serving's layout: <base>/<name>/<version>/...; readable by the image's unprivileged user.
    20 rounds of per-value work, so the input-proportional compute outweighs the fixed per-request cost."""
    d = tmp_path / "models"
    (d / "half" / "1").mkdir(parents=True)
    (d / "half" / "1" / "model.json").write_text(json.dumps({"classes": 10, "rounds": 20}))
    for p in [tmp_path, d, d / "half", d / "half" / "1", d / "half" / "1" / "model.json"]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return d


def foreign_preset(image: str, models: Path, **over: str) -> str:
    values = {
        "model_path": "/v1/models/half",
        "timeout": "60",
        "request": 'template = "tfserving"\nmodel_name = "half"',
        **over,
    }
    return f"""
description = "test: a TensorFlow-Serving-shaped foreign image"

[target]
image = "{image}"
port = 8501
env = {{ MODEL_NAME = "half", LOAD_DELAY_S = "0.3" }}
mounts = ["{models}:/models"]
readiness = {{ kind = "http", path = "{values["model_path"]}", status = 200, timeout_s = {values["timeout"]} }}

[input]
kind = "image"
base_size = [48, 48]
layout = "hwc"
scales = [0.5, 2.0]
encoding = "json"

[request]
{values["request"]}

[resources]
cpus = [0.5, 1]
memory_gb = [0.5, 1]
pairing = "zip"

[load]
concurrency = [1]
requests = 4
warmup = 1
timeout_s = 30
"""


def run_cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui_profiler", "run", *args, "--headless"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "160"},
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def session_containers(docker_client, session: Path) -> list:  # type: ignore[no-untyped-def]
    """Containers still labelled with this run's session (other tests on the machine have their own)."""
    sid = json.loads((session / "meta.json").read_text())["session_id"]
    return docker_client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={sid}"})


def test_foreign_tfserving_image_profiled_end_to_end(
    docker_client, foreign_image: str, model_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    preset = tmp_path / "foreign_tfserving.toml"
    preset.write_text(foreign_preset(foreign_image, model_dir))
    out = tmp_path / "out"
    proc = run_cli(str(preset), "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (session,) = list(out.iterdir())
    assert {p.name for p in session.iterdir()} >= {"requests.csv", "cells.csv", "samples.csv", "meta.json"}

    rows = read_csv(session / "requests.csv")
    assert len(rows) == 4 * (4 + 1)  # 2 resource configs x 2 scales x (4 timed + 1 warm-up)
    assert all(r["status"] == "ok" and r["http_status"] == "200" for r in rows)
    assert sum(r["warmup"] == "1" for r in rows) == 4
    # TF Serving sends no Server-Timing: server-side columns are 'not available' (empty), never 0
    for col in ("decode_ms", "infer_ms", "server_total_ms", "overhead_ms"):
        assert all(r[col] == "" for r in rows), col
    sent = {r["input_scale"]: int(r["bytes_sent"]) for r in rows}
    assert sent["2.0"] > 8 * sent["0.5"]
    assert {r["pixels"] for r in rows} == {str(24 * 24), str(96 * 96)}

    cells = read_csv(session / "cells.csv")
    assert len(cells) == 4 and all(c["status"] == "ok" for c in cells)
    first = [c for c in cells if c["cold_start_cell"] == "1"]
    assert len(first) == 2  # one cold start per container (resource config), measured in its first cell
    for c in first:
        phases = [float(c[k]) for k in ("create_s", "start_s", "ready_s", "first_request_s")]
        assert all(p >= 0 for p in phases) and float(c["cold_start_s"]) >= 0.3  # the model load delay
    for c in cells:
        assert c["cpus_enforced"] == "1" and c["mem_enforced"] == "1"
        assert int(c["peak_mem_bytes"]) <= float(c["mem_cap_gb"]) * 2**30
    _compute_grows_and_the_half_cpu_cap_holds(cells)
    meta = json.loads((session / "meta.json").read_text())
    assert meta["preset"]["request"]["template"] == "tfserving"
    assert not session_containers(docker_client, session)


CFS_PERIOD_S = 0.1  # Docker's cpu.cfs_period_us: the quota is granted per 100 ms period


def _compute_grows_and_the_half_cpu_cap_holds(cells: list[dict[str, str]]) -> None:
    """What the kernel counted for the foreign container, not latencies (its latency at scale 0.5 is mostly
    the stdlib server's delayed-ACK wait, and a p50 hides a CFS quota that a short request fits in):
    - the compute grows with the input: CPU seconds charged per request (mean cores x load wall / requests),
      scale 2 (16x the values) over scale 0.5, in both resource configs. A one-thread server's CPU time is
      its work, whatever the neighbours do;
    - the 0.5 CPU cap holds: at scale 2 the container was granted no more than the quota allows over the
      cell's span (one period's budget more than the span covers).
    That the cap binds is not asserted here: a one-thread server stops being throttled as soon as the host
    gives a thread less than half a core (seen with the smoke sweep on this shared VM); test_sweep proves
    binding, and says when a host cannot show it.

    Measured 2026-12-01 over 10 runs of this preset on the shared 2-core VM (load average 4.1-5.2),
    min/median/max: CPU s/request ratio 10.1/13.0/14.6 at 0.5 CPU and 10.7/13.0/21.1 at 1 CPU (asserted > 4);
    at 0.5 CPU and scale 2 mean usage / quota ceiling 0.76/0.81/0.85 (asserted <= 1.1), throttled periods
    2/3.5/6 and mean usage / quota 0.88/0.94/1.02 (informative)."""
    by = {(c["cpu_cores"], c["input_scale"]): c for c in cells}

    def cpu_s_per_request(c: dict[str, str]) -> float:
        return float(c["mean_cpu_cores"]) * float(c["load_wall_s"]) / (int(c["n"]) + int(c["warmup_n"]))

    for cpus in ("0.5", "1.0"):
        work = cpu_s_per_request(by[(cpus, "2.0")]) / cpu_s_per_request(by[(cpus, "0.5")])
        assert work > 4, (cpus, work)
    bound = by[("0.5", "2.0")]
    mean, wall = float(bound["mean_cpu_cores"]), float(bound["load_wall_s"])
    assert mean <= 1.1 * 0.5 * (1 + CFS_PERIOD_S / wall), (mean, wall)


def test_foreign_image_built_from_a_preset_dockerfile(docker_client, model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`[target] dockerfile` (relative to the preset file) is built before the sweep and profiled the same way;
    a Dockerfile that does not exist is a one-line build failure with no container started."""
    import shutil

    shutil.copytree(FOREIGN, tmp_path / "tfserving_like")
    text = foreign_preset("unused", model_dir).replace(
        'image = "unused"',
        'dockerfile = "tfserving_like/Dockerfile"\nbuild_args = { BASE_IMAGE = "tui-profiler-base:bookworm" }',
    )
    preset = tmp_path / "from_dockerfile.toml"
    preset.write_text(text)
    out = tmp_path / "out"
    proc = run_cli(
        str(preset), "--output", str(out), "--set", "resources.cpus=1", "--set", "resources.memory_gb=1"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (session,) = list(out.iterdir())
    cells = read_csv(session / "cells.csv")
    assert len(cells) == 2 and all(c["status"] == "ok" for c in cells)
    built = [
        i
        for i in docker_client.images.list(filters={"label": "tui-profiler.image=target"})
        if any(t.startswith("tui-profiler-target-tfserving_like:") for t in i.tags)
    ]
    assert built, "the target image was not built from the preset's Dockerfile"
    assert not session_containers(docker_client, session)
    for image in built:  # tagged by this tmp path's hash: nothing reuses it
        for tag in image.tags:
            docker_client.images.remove(tag)

    preset.write_text(text.replace("tfserving_like/Dockerfile", "missing/Dockerfile"))
    out2 = tmp_path / "out2"
    proc = run_cli(
        str(preset), "--output", str(out2), "--set", "resources.cpus=1", "--set", "resources.memory_gb=1"
    )
    assert proc.returncode != 0
    (session2,) = list(out2.iterdir())
    cells = read_csv(session2 / "cells.csv")
    assert cells and all(c["status"] == "build_failed" for c in cells)
    assert any("missing/Dockerfile" in c["reason"] for c in cells)


def test_foreign_image_that_never_gets_ready_is_a_failed_cell(
    docker_client, foreign_image: str, model_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    preset = tmp_path / "never_ready.toml"
    preset.write_text(foreign_preset(foreign_image, model_dir, model_path="/v1/models/other", timeout="3"))
    out = tmp_path / "out"
    proc = run_cli(
        str(preset), "--output", str(out), "--set", "resources.cpus=1", "--set", "resources.memory_gb=1"
    )
    assert proc.returncode != 0
    (session,) = list(out.iterdir())
    cells = read_csv(session / "cells.csv")
    assert cells and all(c["status"] in ("timeout", "failed") for c in cells)
    assert not session_containers(docker_client, session)


@pytest.mark.parametrize(
    ("request_toml", "field"),
    [
        ('template = "tfserving"\nmodel_name = "half"\npath = "/v1/models/{modle}:predict"', "request.path"),
        ('template = "tfserving"\nmodel_name = "half"\ncheck = { status = 999 }', "request.check.status"),
        ('template = "tf-serving"', "request.template"),
    ],
)
def test_bad_template_is_a_one_line_error_before_any_container(
    docker_client, foreign_image: str, model_dir: Path, tmp_path: Path, request_toml: str, field: str
) -> None:  # type: ignore[no-untyped-def]
    preset = tmp_path / "bad.toml"
    preset.write_text(foreign_preset(FOREIGN_TAG, model_dir, request=request_toml))

    def ours() -> set[str]:  # containers of the foreign image (other tests on the machine run their own)
        return {c.id for c in docker_client.containers.list(all=True, filters={"ancestor": FOREIGN_TAG})}

    before = ours()
    out = tmp_path / "out"
    proc = run_cli(str(preset), "--output", str(out), timeout=60)
    assert proc.returncode != 0
    err = (proc.stderr or proc.stdout).strip().splitlines()
    assert any(field in line and str(preset) in line for line in err), err
    assert not out.exists() or not any(out.iterdir())  # nothing started, no session
    assert ours() <= before


def test_our_server_image_through_an_explicit_template(
    docker_client, server_image: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    proc = run_cli(
        str(REPO / "presets" / "examples" / "own-server-explicit-template.toml"),
        "--output", str(out),
        "--set", "input.scales=0.5",
        "--set", "load.requests=3",
        "--set", "resources.cpus=1",
        "--set", "resources.memory_gb=2",
        timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (session,) = list(out.iterdir())
    rows = read_csv(session / "requests.csv")
    assert len(rows) == 3 + 2 and all(r["status"] == "ok" for r in rows)
    # our server reports its own timing: the server-side columns are filled and the overhead is a column
    for r in rows:
        assert float(r["infer_ms"]) > 0 and r["server_total_ms"] and r["overhead_ms"]
    meta = json.loads((session / "meta.json").read_text())
    assert meta["preset"]["request"]["template"]["path"] == "/predict"
    assert not session_containers(docker_client, session)
