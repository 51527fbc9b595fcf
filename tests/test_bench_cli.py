"""`tui-profiler bench ... --quick` end to end (opt-in: `-m bench`; minutes on a busy machine): every
benchmark runs for real and writes bench.md, bench.csv and --json with the rows each one promises.
Structure only — targets are reported, never asserted here."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

EXPECTED = {
    "client": ["requests/s c=1", "requests/s c=8", "requests/s c=64", "p50 c=1", "p50 added over wrk c=1"],
    "payload": [
        "server decode+encode share of inference (default size)",
        "client encode, once per cell (default size)",
    ],
    "sampler": ["samples/s achieved", "CPU, whole process (above idle)"],
    "tui": ["events/s absorbed", "redraws/s meanwhile"],
    "sweep": ["wall / (cold starts + request time)"],
}


@pytest.mark.bench
@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_bench_all_quick(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tui_profiler.cli",
            "bench",
            "all",
            "--quick",
            "--out-dir",
            str(tmp_path / "b"),
            "--json",
            str(tmp_path / "r.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["quick"] is True and not doc["errors"]
    assert doc["machine"]["cpu_model"] and doc["machine"]["kernel"] and doc["machine"]["versions"]["wrk"]
    rows = list(csv.DictReader((tmp_path / "b" / "bench.csv").open()))
    for bench, measures in EXPECTED.items():
        have = {r["measure"] for r in rows if r["bench"] == bench}
        for m in measures:
            assert m in have, f"{bench}: no row {m!r} in {sorted(have)}"
    for r in rows:
        if r["ratio"]:
            assert math.isfinite(float(r["ratio"]))
        if r["target"] and r["value"]:
            assert r["met"] in ("yes", "no", ""), r
    md = (tmp_path / "b" / "bench.md").read_text()
    assert all(f"#### {b}" in md for b in EXPECTED)
    assert "targets met:" in out.stdout
