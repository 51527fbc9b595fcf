"""The session store: rows are on disk as soon as they are written (a SIGKILLed writer loses nothing it
wrote), 'not available' is an empty field, and resume drops nothing and duplicates nothing. Also the
summary statistics."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tui_profiler.events import ServerMetrics
from tui_profiler.session.schema import CELL_COLUMNS, REQUEST_COLUMNS
from tui_profiler.session.store import (
    AppendCsv,
    SessionStore,
    csv_field,
    csv_line,
    fmt,
    read_rows,
)
from tui_profiler.stats import bootstrap_ci95, percentile, summarise, t_ci95, t_quantile_975

AC_PROF_LONG = [
    "timestamp_ms",
    "model_name",
    "cpu_cores",
    "gpu_mode",
    "mem_cap_gb",
    "batch_size",
    "token_len",
    "repeat_idx",
    "warmup",
    "latency_s",
    "cold_start_s",
    "status",
    "error",
]


def test_request_columns_start_with_the_ac_prof_long_format(reference_data: Path) -> None:
    assert REQUEST_COLUMNS[: len(AC_PROF_LONG)] == AC_PROF_LONG
    with (reference_data / "all-MiniLM-L6-v2_cpu_result.csv").open() as fh:
        ref = next(csv.reader(fh))
    assert set(AC_PROF_LONG) <= set(ref)  # every column we share is one the dataset has
    for col in (
        "cpu_cores",
        "mem_cap_gb",
        "gpu_mode",
        "input_scale",
        "concurrency",
        "n",
        "errors",
        "mean_s",
        "std_s",
        "p50_s",
        "p90_s",
        "p95_s",
        "p99_s",
        "max_s",
        "throughput_rps",
        "ci95_low_s",
        "ci95_high_s",
        "cold_start_s",
        "peak_mem_bytes",
        "throttled_s",
        "oom_kills",
        "status",
        "reason",
    ):
        assert col in CELL_COLUMNS


def test_not_available_is_empty_never_zero() -> None:
    assert fmt(None) == "" and fmt(float("nan")) == ""
    assert fmt(0) == "0" and fmt(0.0) == "0.0"
    assert fmt(True) == "1" and fmt(False) == "0"


TRICKY_FIELDS = [
    "",
    "plain",
    "a,b",
    'say "hi"',
    "line\nbreak",
    "cr\rlf",
    " lead",
    "trail ",
    "ünï",
    '","',
    "0.001",
]


def test_hand_formatted_rows_are_byte_identical_to_csv_writer() -> None:
    import io

    for fields in ([f] for f in TRICKY_FIELDS):  # one field per row (the lone empty field is a special case)
        buf = io.StringIO()
        csv.writer(buf).writerow(fields)
        assert csv_line([csv_field(f) for f in fields]) == buf.getvalue().encode(), fields
    buf = io.StringIO()
    csv.writer(buf).writerow(TRICKY_FIELDS)
    assert csv_line([csv_field(f) for f in TRICKY_FIELDS]) == buf.getvalue().encode()


def test_rows_with_constant_columns_match_whole_rows(tmp_path: Path) -> None:
    """The per-request fast path (a cell's settings formatted once) writes the same bytes as `write`."""
    columns = ["cell_index", "model_name", "latency_s", "error", "cpu_cores", "worker"]
    constant = {"cell_index": 3, "model_name": "m,odel", "cpu_cores": 0.5}
    varying = [
        {"latency_s": 0.0123, "error": "", "worker": 0},
        {"latency_s": None, "error": 'bad "x", y', "worker": 1},
        {"latency_s": 1e-05, "error": "multi\nline", "cpu_cores": 99},  # a constant column is not overridden
        {"latency_s": float("nan"), "error": "x", "worker": True},
    ]  # nan is 'not available'; bool is 1/0
    whole, bound = AppendCsv(tmp_path / "whole.csv", columns), AppendCsv(tmp_path / "bound.csv", columns)
    rows = bound.with_constant(constant)
    for v in varying:
        whole.write({**v, **constant})
        rows.write(v)
    whole.close()
    bound.close()
    assert (tmp_path / "bound.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    _, back = read_rows(tmp_path / "bound.csv")
    assert [r["error"] for r in back] == ["", 'bad "x", y', "multi\nline", "x"]
    assert [r["latency_s"] for r in back] == ["0.0123", "", "1e-05", ""] and {
        r["cpu_cores"] for r in back
    } == {"0.5"}
    assert [r["worker"] for r in back] == ["0", "1", "", "1"]


WRITER = r"""
import sys, time
from tui_profiler.session.store import SessionStore
store = SessionStore.create(sys.argv[1], "killme", {"preset": {}})
print(store.dir, flush=True)
i = 0
while True:
    store.write_request({"cell_index": 0, "latency_s": 0.001 * i, "timestamp_ms": i, "status": "ok"})
    i += 1
    if i == 50:
        print("50", flush=True)
    time.sleep(0.002)
"""


def test_a_sigkilled_writer_keeps_every_row(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    session = Path(proc.stdout.readline().strip())
    assert proc.stdout.readline().strip() == "50"
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    header, rows = read_rows(session / "requests.csv")
    assert header == REQUEST_COLUMNS
    assert len(rows) >= 50
    # every row is complete and in order: nothing written was lost (the last one may be cut, and is left out)
    assert [int(r["timestamp_ms"]) for r in rows] == list(range(len(rows)))
    assert rows[3]["cpu_cores"] == ""  # not given -> empty, not 0


def _cell(i: int) -> dict:
    return {"cell_index": i, "n": 2, "status": "ok", "reason": ""}


def test_resume_moves_partial_rows_and_never_duplicates(tmp_path: Path) -> None:
    store = SessionStore.create(tmp_path, "resume", {"preset_toml": {"model": "m"}})
    for cell in (0, 1, 2):
        for k in range(3):
            store.write_request({"cell_index": cell, "timestamp_ms": cell * 10 + k, "latency_s": 0.1})
            store.write_sample({"cell_index": cell, "t_s": k * 0.1, "cpu_cores": 0.5})
            store.write_server_metrics(ServerMetrics(cell_index=cell, t_s=k * 0.5, rows=[["queued", "", k]]))
        if cell < 2:
            store.write_cell(_cell(cell))  # cell 2 was cut short: no cells.csv row
    # a kill in the middle of a line
    with (store.dir / "requests.csv").open("a") as fh:
        fh.write("123,half-a-row")
    store.close()

    resumed = SessionStore.resume(store.dir)
    assert resumed.finished_cells == {0, 1}
    _, rows = read_rows(store.dir / "requests.csv")
    assert sorted({r["cell_index"] for r in rows}) == ["0", "1"] and len(rows) == 6
    _, partial = read_rows(store.dir / "requests.partial.csv")
    assert [r["timestamp_ms"] for r in partial] == ["20", "21", "22"]  # kept, not lost
    _, samples = read_rows(store.dir / "samples.csv")
    assert {r["cell_index"] for r in samples} == {"0", "1"}
    _, scraped = read_rows(store.dir / "server_metrics.csv")
    assert {r["cell_index"] for r in scraped} == {"0", "1"} and len(scraped) == 6
    _, scraped_aside = read_rows(store.dir / "server_metrics.partial.csv")
    assert [r["cell_index"] for r in scraped_aside] == ["2"] * 3
    # the resumed run redoes cell 2 once
    for k in range(3):
        resumed.write_request({"cell_index": 2, "timestamp_ms": 100 + k, "latency_s": 0.2})
    resumed.write_cell(_cell(2))
    resumed.close()
    _, rows = read_rows(store.dir / "requests.csv")
    assert [r["cell_index"] for r in rows].count("2") == 3
    _, cells = read_rows(store.dir / "cells.csv")
    assert [c["cell_index"] for c in cells] == ["0", "1", "2"]
    meta = json.loads((store.dir / "meta.json").read_text())
    assert meta["resumes"][0]["finished_cells"] == 2
    # resuming a finished session changes nothing
    again = SessionStore.resume(store.dir)
    assert again.finished_cells == {0, 1, 2}
    again.close()
    assert len(read_rows(store.dir / "requests.csv")[1]) == 9


def test_resume_needs_a_session(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SessionStore.resume(tmp_path)


def test_session_folder_name(tmp_path: Path) -> None:
    a = SessionStore.create(tmp_path, "fcn resnet/50", {})
    b = SessionStore.create(tmp_path, "fcn resnet/50", {})
    assert a.dir != b.dir and a.dir.name.endswith("-fcn_resnet_50")
    assert {p.name for p in a.dir.iterdir()} == {"meta.json", "requests.csv", "cells.csv", "samples.csv"}
    a.close()
    b.close()


def test_stats_against_numpy_and_scipy() -> None:
    rng = np.random.default_rng(1)
    x = list(rng.lognormal(-3, 0.5, 500))
    s = summarise(x)
    assert s.n == 500 and s.mean == pytest.approx(np.mean(x)) and s.std == pytest.approx(np.std(x, ddof=1))
    assert s.p50 == pytest.approx(np.percentile(x, 50)) and s.p99 == pytest.approx(np.percentile(x, 99))
    assert s.p50 <= s.p90 <= s.p95 <= s.p99 <= s.max
    assert s.ci95_low < s.mean < s.ci95_high
    lo, hi = bootstrap_ci95(x)
    assert lo < s.mean < hi
    assert abs((hi - lo) - (s.ci95_high - s.ci95_low)) < 0.5 * (s.ci95_high - s.ci95_low)
    assert percentile([1.0, 2.0], 50) == 1.5


def test_stats_undefined_is_none() -> None:
    assert summarise([]).mean is None and summarise([]).n == 0
    one = summarise([0.2])
    assert one.mean == 0.2 and one.std is None and one.ci95_low is None
    assert t_ci95([1.0]) is None and bootstrap_ci95([1.0]) is None


def test_t_quantile_matches_scipy_without_importing_it() -> None:
    """The CI's t factor is computed without scipy (its import costs ~1.6 s inside a sweep's first cell)."""
    from scipy import stats

    for df in [*range(1, 200), 250, 1000, 10**5]:
        assert t_quantile_975(df) == pytest.approx(float(stats.t.ppf(0.975, df)), abs=2e-6), df
    assert t_quantile_975(0) == math.inf
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tui_profiler.sweep, tui_profiler.stats as s; "
            "s.summarise([0.1, 0.2, 0.3]); print('scipy' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.stdout.strip() == "False", out.stderr[-500:]
