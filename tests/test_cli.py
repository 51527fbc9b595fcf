"""The command line: `presets list|show|validate`, one-line errors with exit code 2, and `run --url` against
a real model server running as a local process (no container: the same files, resource columns empty)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO
from tui_profiler.session.reader import read_rows


def cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui_profiler", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_presets_list_show_validate(tmp_path: Path) -> None:
    out = cli("presets", "list", env={"COLUMNS": "200"})
    assert out.returncode == 0
    for name in ("smoke", "fcn_resnet50", "text_encoder"):
        assert name in out.stdout
    out = cli("presets", "show", "smoke", "--set", "resources.cpus=0.5,2")
    assert (
        out.returncode == 0
        and 'model = "mobilenet_v3_small"' in out.stdout
        and "# plan: 6 cells" in out.stdout
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "resnet50"\n[load]\nconcurency = [2]\n')
    out = cli("presets", "validate", str(bad), "smoke")
    assert out.returncode == 1
    assert (
        out.stderr.strip() == f"{bad}: load.concurency: unknown key — did you mean 'concurrency'? "
        "allowed: mode, concurrency, rates, arrival, connections, requests, duration_s, warmup, timeout_s, stable_ci, stop, "
        "transport, processes, drain_s, seed, search, per_request_cgroup"
    )
    assert "1 valid, 1 invalid" in out.stdout


def test_run_with_a_bad_preset_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = cli("run", "smoke", "--headless", "--output", str(tmp_path), "--set", "resources.cpus=1000")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "resources.cpus: 1000.0 — at most" in lines[0]
    assert not any(tmp_path.iterdir())  # nothing started, nothing written
    out = cli("run", "--headless")
    assert out.returncode == 2 and "give a preset" in out.stderr


@pytest.fixture
def local_server(mobilenet_server: tuple[str, int]) -> str:
    """The run's shared model server (a local process, no container)."""
    return mobilenet_server[0]


def test_run_url_writes_the_same_files(local_server: str, tmp_path: Path) -> None:
    out = cli(
        "run",
        "--url",
        local_server,
        "--concurrency",
        "2",
        "--requests",
        "10",
        "--headless",
        "--output",
        str(tmp_path),
        "--set",
        "input.scales=0.5,1",
        "--set",
        "load.warmup=1",
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (session,) = list(tmp_path.iterdir())
    assert {p.name for p in session.iterdir()} >= {"requests.csv", "cells.csv", "samples.csv", "meta.json"}
    cells = read_rows(session / "cells.csv")[1]
    assert [c["status"] for c in cells] == ["ok", "ok"] and [c["concurrency"] for c in cells] == ["2", "2"]
    for c in cells:
        assert (
            c["n"] == "10" and c["cpu_cores"] == "" and c["cold_start_s"] == "" and c["peak_mem_bytes"] == ""
        )
        assert float(c["p50_s"]) > 0 and float(c["throughput_rps"]) > 0
    rows = read_rows(session / "requests.csv")[1]
    assert Counter(r["cell_index"] for r in rows) == {"0": 11, "1": 11}
    assert all(r["server_total_ms"] != "" and r["cpu_cores"] == "" for r in rows)
    assert rows[0]["model_name"] == "mobilenet_v3_small"  # from the server's /info
    assert "session ok" in out.stdout


URL_PRESET = """
description = "a running server's own template and inputs; no model, no [target]: nothing to start"

[input]
kind = "image"
base_size = [64, 48]
scales = [0.5, 1.0]
encoding = "png"

[request.template]
path = "/predict"
headers = { X-Client = "url-preset" }
check = { status = 200, json_field = "model" }

[load]
concurrency = [1]
requests = 5
warmup = 1
"""


def test_run_url_with_a_preset_uses_its_template_and_inputs(local_server: str, tmp_path: Path) -> None:
    preset = tmp_path / "url_only.toml"
    preset.write_text(URL_PRESET)
    out_dir = tmp_path / "out"
    out = cli("run", "--url", local_server, str(preset), "--headless", "--output", str(out_dir), timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (session,) = list(out_dir.iterdir())
    cells = read_rows(session / "cells.csv")[1]
    assert [c["status"] for c in cells] == ["ok", "ok"] and [c["input_scale"] for c in cells] == [
        "0.5",
        "1.0",
    ]
    assert [c["pixels"] for c in cells] == [str(32 * 24), str(64 * 48)]  # the preset's inputs
    rows = read_rows(session / "requests.csv")[1]
    assert Counter(r["cell_index"] for r in rows) == {"0": 6, "1": 6}
    assert all(r["status"] == "ok" and r["cold_start_s"] == "" for r in rows)
    meta = json.loads((session / "meta.json").read_text())
    assert meta["url"] == local_server
    # without --url the same preset is refused as before: there would be nothing to start
    out = cli("run", str(preset), "--headless", "--output", str(out_dir))
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"{preset}: model: '' — a catalog model name, or a [target] with image or dockerfile"
    )


def test_orphan_owner_label_tells_live_runs_from_dead_ones() -> None:
    """After a SIGKILL the next run removes only containers whose owning tui-profiler process is gone;
    containers of runs still alive (another session on the same box) are left alone."""
    from tui_profiler.runtime.common import owner_alive as _owner_alive
    from tui_profiler.runtime.common import owner_id as _owner_id

    me = _owner_id()
    assert _owner_alive(me)
    host, pid, start = me.rsplit(":", 2)
    assert not _owner_alive(f"{host}:{pid}:{int(start) + 1 if start.isdigit() else 1}")  # pid reused later
    assert not _owner_alive(f"{host}:{2**22 + 7}:1")  # no such process
    assert _owner_alive(f"another-host:{pid}:{start}")  # not ours to judge
