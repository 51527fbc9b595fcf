"""Real third-party serving stacks, built here from PyPI (stacks/<name>/, scripts/stacks.sh), profiled end
to end by `tui-profiler run PRESET --headless` exactly as their example presets ship, apart from the image
tag (the one scripts/stacks.sh built) and small request counts: MLServer behind the KServe V2 protocol
(`kserve-v2` template) and LitServe (`litserve` template), each under 0.5 and 2 CPUs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "presets" / "examples"
SESSION_LABEL = "tui-profiler.session"
REQUESTS, WARMUP = 4, 1

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def stack_image(name: str) -> str:
    """The stack's image tag, built by scripts/stacks.sh when missing (seconds when it is up to date)."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "stacks.sh"), name], capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    built, tag = proc.stdout.split()[-2:]
    assert built == name and tag.startswith(f"tui-profiler-stack-{name}:")
    return tag


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", ["mlserver", "litserve"])
def test_stack_profiled_end_to_end_under_two_cpu_caps(docker_client, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tag = stack_image(name)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tui_profiler",
            "run",
            str(EXAMPLES / f"{name}.toml"),
            "--headless",
            "--output",
            str(out),
            "--set",
            f"target.image={tag}",
            "--set",
            f"load.requests={REQUESTS}",
            "--set",
            f"load.warmup={WARMUP}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (session,) = list(out.iterdir())

    cells = read_csv(session / "cells.csv")
    assert cells and all(c["status"] == "ok" for c in cells), [(c["status"], c["error"]) for c in cells]
    assert {float(c["cpu_cores"]) for c in cells} == {0.5, 2.0}
    assert all(c["cpus_enforced"] == "1" and c["mem_enforced"] == "1" for c in cells)

    rows = read_csv(session / "requests.csv")
    assert len(rows) == len(cells) * (REQUESTS + WARMUP)
    assert all(r["status"] == "ok" and r["http_status"] == "200" for r in rows), {r["error"] for r in rows}
    assert all(int(r["bytes_sent"]) > 0 and int(r["bytes_received"]) > 0 for r in rows)
    assert all(r["cpus_enforced"] == "1" and r["mem_enforced"] == "1" for r in rows)
    # per-request CPU from the container's cgroup (on by default)
    assert all(r["cpu_ms"] not in ("", None) and float(r["cpu_ms"]) >= 0 for r in rows)
    assert all(c["cpu_ms_mean"] not in ("", None) for c in cells)
    if name == "mlserver":  # its real /metrics on 8082, scraped during every cell ([target] metrics)
        scraped = read_csv(session / "server_metrics.csv")
        assert {int(r["cell_index"]) for r in scraped} == {int(c["cell_index"]) for c in cells}
        metrics = {r["metric"] for r in scraped}
        assert "rest_server_requests_in_progress" in metrics, sorted(metrics)
        assert any(m.endswith(":rate") for m in metrics), sorted(metrics)  # counters as rates
        assert all(json.loads(c["server_metrics"]).get("rest_server_requests_in_progress") for c in cells)
    sent = {float(r["input_scale"]): int(r["bytes_sent"]) for r in rows}
    assert sent[1.0] > 2 * sent[0.5]  # 4x the pixels: the body grows with the image

    cold = [c for c in cells if c["cold_start_cell"] == "1"]
    assert len(cold) == 2  # one container per CPU cap, its cold start measured in its first cell
    for c in cold:
        for phase in ("create_s", "start_s", "ready_s", "first_request_s", "cold_start_s"):
            assert c[phase] != "" and float(c[phase]) >= 0, (phase, c[phase])
        assert float(c["ready_s"]) > 0  # the process boots and loads the model before the probe passes
        assert int(c["image_size_bytes"]) > 10**9  # torch and the stack
        # Neither stack reports a boot/load timeline: not available, never 0.
        assert c["server_boot_s"] == "" and c["model_load_s"] == ""

    meta = json.loads((session / "meta.json").read_text())
    assert meta["preset"]["request"]["template"] == name.replace("mlserver", "kserve-v2")
    sid = meta["session_id"]
    assert not docker_client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={sid}"})
