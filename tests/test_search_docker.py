"""`run smoke --find-max-load` on the model server in a container (the `smoke` preset trimmed with --set: one
CPU and two, one input scale, 20 requests a level), then `fit --recommend --rps` from its capacity.csv.

It checks what the search must do whatever the box's speed: one capacity row per configuration, each
searched through levels that each met or failed by their interval, its cells in cells.csv and in the
configuration's one container group, and a recommendation that names a searched configuration. The
numbers it found are printed (`-s`) for the record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tui_profiler.session.reader import read_rows

SLO_S = 0.25  # p50 end-to-end latency; MobileNetV3-Small at 112 x 112 answers in ~10-30 ms on one core


def _cli(*args: str, timeout: float = 480) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui_profiler", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_find_max_load_on_the_model_server_and_recommend_from_it(server_image: str, tmp_path: Path) -> None:
    sets = [
        f"image={server_image}",
        "resources.cpus=1,2",
        "resources.memory_gb=2",
        "input.scales=0.5",
        "load.requests=20",
        "load.warmup=2",
        f"slo.e2e_s={SLO_S}",
        "slo.percentile=50",
    ]
    args = ["run", "smoke", "--find-max-load", "--headless", "--output", str(tmp_path)]
    done = _cli(*args, *(a for s in sets for a in ("--set", s)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    (session,) = tmp_path.iterdir()
    rows = read_rows(session / "capacity.csv")[1]
    cells = {c["cell_index"]: c for c in read_rows(session / "cells.csv")[1]}
    print("\n" + "\n".join(f"{r['cpu_cores']} CPU: max {r['max_load']} — {r['steps']}" for r in rows))
    assert [r["cpu_cores"] for r in rows] == ["1.0", "2.0"]
    for r in rows:
        assert r["load_kind"] == "concurrency" and r["stop_reason"] in ("resolved", "ceiling", "lowest_fails")
        ran = [cells[i] for i in r["cells"].split()]
        assert ran and all(c["status"] == "ok" for c in ran)
        assert len({c["container_idx"] for c in ran}) == 1  # one container per configuration
        assert all(c["cold_start_cell"] == ("1" if c is ran[0] else "0") for c in ran)
        if r["max_load"]:
            assert float(r["slo_hi_s"]) <= SLO_S and float(r["throughput_rps"]) > 0
            assert float(r["throughput_per_core"]) == float(r["throughput_rps"]) / float(r["cpu_cores"])
    assert sum(len(r["cells"].split()) for r in rows) == len(cells)
    meta = json.loads((session / "meta.json").read_text())
    assert meta["status"] == "ok" and meta["cells_finished"] == len(cells)

    served = [float(r["throughput_rps"]) for r in rows if r["throughput_rps"]]
    assert served, "no configuration met the SLO at one worker"
    out = tmp_path / "rec.json"
    rec = _cli("fit", str(session), "--recommend", "--rps", f"{min(served) / 2:g}", "--json", str(out))
    assert rec.returncode == 0, rec.stdout + rec.stderr
    print(rec.stdout)
    best = json.loads(out.read_text())["recommendation"]["best"]
    assert best["replicas"] == 1 and best["cpu_cores"] in (1.0, 2.0)
    assert "cheapest: gpu=off" in rec.stdout
