"""`run --url ... --find-max-load` against a stdlib server whose capacity is known by arithmetic.

The server answers one request at a time, first come first served, each in a fixed service time S (a
worker thread sleeps until the request's service ends: `max(arrival, previous end) + S`, so one late
wake-up does not delay the requests queued behind it). Under a closed loop of c workers each request waits
for the c - 1 ahead of it and its own service: its latency is about c · S. With `[slo] e2e_s = (k + 0.5) · S`
at the median, concurrency k meets (k · S, half a service time under the bound) and k + 1 fails ((k + 1) · S,
half a service time over): the search must answer k. The margin on either side is S / 2 against the
box's jitter, which only adds to a latency (it cannot move k + 1 under the bound). Measured on this 2-core
box at load 4-6 with S = 50 ms and k = 3 (bound 175 ms), three runs: the median at c = 3 was 150.40-150.43
ms (its interval's upper end at most 150.50 ms: 24.5 ms under the bound), at c = 4 200.6-201.1 ms; each run
tried 1, 2, 4, 3 and answered 3, decided, in 5 s. (The handler turns Nagle's algorithm off: otherwise the
body waits ~40 ms for the delayed ACK of the headers, and c = 1 answers in 92 ms, not 50.)

Open loop (slow: ~40 s): constant arrivals at rate r below 1 / S are served as they come (latency S);
above it the queue grows by S - 1/r a request, so with a bound of 2 S the median of N requests fails once
r > 1 / (S · (1 - 2 / N)). The answer lies between 1 / S less the search's 5% resolution and that. Measured
(S = 50 ms, N = 40, from 15/s): 19.69/s twice (capacity 20/s), the step at 20.62/s stopping at the request
cap undecided (each further cell starts from an empty queue; a `server` saturation flag decides such a
level at once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tui_profiler.session.reader import read_rows
from tui_profiler.testing.known_server import known_server, served

SERVICE_S = 0.050
K = 3


@pytest.fixture()
def fifo_server() -> Iterator[str]:
    """One request at a time, in arrival order, each taking SERVICE_S (`testing.known_server`)."""
    with known_server(f"fixed:{SERVICE_S}") as url:
        yield url


def _run(url: str, out: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "tui_profiler", "run", "--url", url, "--find-max-load", "--headless"]
    args += ["--output", str(out), "--set", "input.kind=body", "--set", "input.files=" + str(_body(out))]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, "COLUMNS": "200"}
    )


def _body(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out.parent / "body.json"
    path.write_bytes(b'{"x": 1}')
    return path


def test_find_max_load_finds_the_largest_concurrency_within_the_slo(fifo_server: str, tmp_path: Path) -> None:
    url = fifo_server
    bound = (K + 0.5) * SERVICE_S
    done = _run(
        url,
        tmp_path / "out",
        "load.concurrency=1",
        "load.requests=20",
        "load.warmup=1",
        f"slo.e2e_s={bound}",
        "slo.percentile=50",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    (session,) = (tmp_path / "out").iterdir()
    (row,) = read_rows(session / "capacity.csv")[1]
    assert row["load_kind"] == "concurrency"
    assert (row["max_load"], row["next_load"]) == (str(K), str(K + 1)), row["steps"]
    assert row["decided"] == "1" and row["stop_reason"] == "resolved"
    assert row["slo_metric"] == "e2e" and float(row["slo_bound_s"]) == pytest.approx(bound)
    assert float(row["slo_hi_s"]) <= bound < float(row["slo_hi_s"]) + SERVICE_S  # k · S, within S / 2
    # the server serves one at a time: about 1 / S answers a second, whatever the concurrency
    assert 0.5 / SERVICE_S < float(row["throughput_rps"]) <= 1.05 / SERVICE_S
    assert row["cpu_cores"] == "" and row["throughput_per_core"] == ""  # --url: no cap, no per-core figure
    cells = read_rows(session / "cells.csv")[1]
    assert [int(c["cell_index"]) for c in cells] == [int(i) for i in row["cells"].split()]
    # the levels tried, in order; a level whose interval is not sure yet gets more requests (another cell
    # at the same level): the first requests at a higher concurrency fill the queue (50, 100, 150 ms ...),
    # a rising start the dependence estimate counts against a sample of 20
    assert list(dict.fromkeys(c["concurrency"] for c in cells)) == ["1", "2", "4", "3"]
    meta = json.loads((session / "meta.json").read_text())
    assert meta["search"]["percentile"] == 50.0 and meta["cells_finished"] == len(cells)
    assert "capacity" in done.stdout and "searching" in done.stdout
    assert served(url) == sum(int(c["n"]) + int(c["warmup_n"]) for c in cells)


@pytest.mark.slow
def test_find_max_load_finds_the_rate_capacity_of_an_open_loop(fifo_server: str, tmp_path: Path) -> None:
    url = fifo_server
    n = 40
    done = _run(
        url,
        tmp_path / "out",
        "load.mode=open",
        "load.arrival=constant",
        "load.rates=15",
        f"load.requests={n}",
        "load.warmup=0",
        f"slo.e2e_s={2 * SERVICE_S}",
        "slo.percentile=50",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    (session,) = (tmp_path / "out").iterdir()
    (row,) = read_rows(session / "capacity.csv")[1]
    assert row["load_kind"] == "rate" and row["stop_reason"] == "resolved", row["steps"]
    # 30/s is past capacity: it fails on its interval, and the saturation judge may also flag it `server`
    assert row["steps"].startswith("15 meets (n=40); 30 fails (n=40"), row["steps"]
    capacity = 1 / SERVICE_S
    assert capacity * 0.9 <= float(row["max_load"]) <= capacity / (1 - 2 / n), row["steps"]
