"""The bench plumbing, quickly (default run): real wrk and our client against a real pinned nginx for a
fraction of a second, the report files and their columns, the tool-output parsers and the CLI's one-line
errors. Structure only: no timed assertion (the numbers of a busy shared machine prove nothing here)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tui_profiler.bench import client as bench_client
from tui_profiler.bench.core import CSV_COLUMNS, BenchReport, Measure, measured

WRK_OUT = """Running 1s test @ http://127.0.0.1:1/predict
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    52.00us   10.00us   1.20ms   90.00%
  Latency Distribution
     50%   48.00us
     75%   55.00us
     90%   61.00us
     99%    1.05ms
  20000 requests in 1.00s, 3.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  19990.12
Transfer/sec:      3.00MB
"""

HEY_OUT = """Summary:
  Requests/sec:\t9500.1234

Latency distribution:
  10% in 0.0001 secs
  50% in 0.0001 secs
  99% in 0.0004 secs

Status code distribution:
  [200]\t9000 responses
  [500]\t2 responses

Error distribution:
  [4]\tPost "http://127.0.0.1:1/predict": dial tcp: connection refused
"""


def test_parsers() -> None:
    w = bench_client.parse_wrk(WRK_OUT)
    assert w == {"rps": 19990.12, "p50_us": 48.0, "p99_us": 1050.0, "n": 20000, "errors": 3}
    h = bench_client.parse_hey(HEY_OUT)
    assert (
        h["rps"] == 9500.1234 and h["p50_us"] == pytest.approx(100.0) and h["p99_us"] == pytest.approx(400.0)
    )
    assert h["n"] == 9002 and h["errors"] == 6
    with pytest.raises(ValueError):
        bench_client.parse_wrk("wrk: something else")


def test_report_files(tmp_path: Path) -> None:
    report = BenchReport(["client", "payload"], quick=True)
    report.measures.append(
        measured(
            "client",
            "requests/s c=1",
            "ours",
            [3.0, 1.0, 2.0],
            "req/s",
            ratio=2.5,
            baseline="b",
            target="≥ 2×",
            met=True,
        )
    )
    report.measures.append(Measure("payload", "share", "x", None, "%", target="≤ 1%"))
    report.errors["payload"] = "not here"
    paths = report.write(tmp_path / "out", tmp_path / "extra.json")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert list(rows[0]) == CSV_COLUMNS
    assert rows[0]["value"] == "2.0" and rows[0]["runs"] == "3" and rows[0]["met"] == "yes"
    assert rows[1]["value"] == "" and rows[1]["met"] == ""  # not measured: empty, never 0 or a pass
    assert rows[0]["machine"] and rows[0]["versions"]
    md = paths["markdown"].read_text()
    assert "| requests/s c=1 | ours | 2.00 req/s | 3 [1.00–3.00] | 2.50× |" in md
    assert "Not measured: not here" in md and "| share | x | — |" in md and "n/a" in md
    assert json.loads((tmp_path / "extra.json").read_text())["measures"][0]["subject"] == "ours"


def test_cli_bad_bench_is_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tui_profiler.cli", "bench", "nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "'nope': allowed client, payload" in out.stderr


@pytest.mark.skipif(
    shutil.which("wrk") is None or shutil.which("nginx") is None or shutil.which("hey") is None,
    reason="wrk/hey/nginx not installed (apt-get install wrk hey nginx-light)",
)
def test_client_bench_plumbing(tmp_path: Path) -> None:
    """One short round of the real clients against the real nginx: rows, ratios, files."""
    report = BenchReport(["client"], quick=True)
    bench_client.run_client_bench(
        report,
        quick=True,
        say=lambda s: None,
        clients=("wrk", "ours (library)", "plain aiohttp"),
        concurrencies=(1,),
        rounds=1,
        duration=0.5,
    )
    rows = {(m.measure, m.subject): m for m in report.measures}
    for subject in ("wrk", "ours (library)", "plain aiohttp"):
        m = rows[("requests/s c=1", subject)]
        assert m.value is not None and m.value > 0 and m.runs == 1
        assert m.ratio is not None and math.isfinite(m.ratio)
        assert rows[("p50 c=1", subject)].value is not None
    ours = rows[("requests/s c=1", "ours (library)")]
    assert ours.target and ours.met is not None  # judged, whichever way
    added = rows[("p50 added over wrk c=1", "ours (library)")]
    assert added.value is not None and math.isfinite(added.value) and added.met is not None
    assert any("pinned" in n or "not pinned" in n for n in report.notes["client"])
    paths = report.write(tmp_path)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())


def test_nginx_is_stopped(tmp_path: Path) -> None:
    if shutil.which("nginx") is None:
        pytest.skip("nginx not installed")
    import socket

    with bench_client.nginx_server(None) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
