"""`tui-profiler compare`: verdicts on sessions made for it, the gate, the CSV, the reasons a cell is not
comparable, and the one-line errors.

The sessions are synthetic (`testing.synthetic.write_session`): each request's latency is drawn from a known
law (the cell's base latency times exp(N(0, 0.08)), independent, seeded), 600 requests a cell, 9 cells. "The
same server measured twice" is the same law under another seed; "made 20% slower" multiplies the base
latency of cells 0, 4 and 8 by 1.2.

Tolerance of the null test, from the binomial: in `analysis.compare`'s calibration (400 seeded pairs of one
law, 600 requests a side) a 95% interval excluded 1 in at most 4.2% of pairs (throughput; p50 3.2%, p99 0%),
and the verdict further needs the interval beyond ±2% (MIN_CHANGE), which none of those pairs' intervals
reached. Over the 3 null pairs here (81 request-level comparisons, 3 × 9 cells × p50, p99, throughput), even
at a false rate of 5% the chance of more than 5% of them (5 or more) being flagged is 1 - P(Bin(81, 0.05) <= 4)
= 0.47; at the observed rate after the margin it is nil: the test asserts >= 95% of the comparable rows say
'no detectable change' (observed with these seeds: 77 comparable rows, 0 detected; 1 with the margin at 0). The 20% slowdown is ~10 times the p50 interval's half-width
(±1.5%) and ~3 times p99's (±6%): every affected cell's p50 and throughput must say 'slower'.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from tui_profiler import cli
from tui_profiler.analysis import compare
from tui_profiler.session import reader
from tui_profiler.testing import synthetic

N = 600
SLOWED = (0, 4, 8)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    made = {name: synthetic.write_session(root, name, n_requests=N, seed=seed) for name, seed in
            (("A", 1), ("B", 2), ("C", 3), ("D", 4))}  # fmt: skip
    made["slow"] = synthetic.write_session(
        root, "slow", n_requests=N, seed=5, slowdown=dict.fromkeys(SLOWED, 1.2)
    )
    return made


def _rows(base: Path, *others: Path) -> list[compare.Comparison]:
    def load(path: Path) -> compare.SessionData:
        return compare.SessionData(*reader.compare_inputs(path))

    return compare.compare_sessions(load(base), [load(o) for o in others])


REQUEST_METRICS = ("p50_s", "p99_s", "throughput_rps")


def test_same_server_twice_no_detectable_change(sessions: dict[str, Path]) -> None:
    rows = _rows(sessions["A"], sessions["B"], sessions["C"], sessions["D"])
    measured = [
        r for r in rows if r.metric in REQUEST_METRICS and r.verdict != compare.Verdict.NOT_COMPARABLE
    ]
    same = [r for r in measured if r.verdict == compare.Verdict.SAME]
    assert len(measured) >= 70  # most p99s are bounded at 600 requests
    assert len(same) / len(measured) >= 0.95, [compare.change_text(r) for r in measured if r.detected]
    # per session, the summary says so in a line
    line = compare.summary_line(rows)
    assert "B vs A: 9 cells" in line and "slower" not in line


def test_twenty_percent_slower_is_slower_and_gates(sessions: dict[str, Path], tmp_path: Path) -> None:
    rows = _rows(sessions["A"], sessions["slow"])
    index = {(f"{c.cpus:g}", f"{c.input_scale:g}"): c.index for c in synthetic.image_cells()}
    for r in rows:
        cell = index[(r.keys["cpu_cores"], r.keys["input_scale"])]
        if r.metric in ("p50_s", "throughput_rps"):
            want = compare.Verdict.SLOWER if cell in SLOWED else compare.Verdict.SAME
            assert r.verdict == want, (cell, r.metric, compare.change_text(r))
        if r.metric == "p99_s" and cell in SLOWED and r.verdict != compare.Verdict.NOT_COMPARABLE:
            assert r.verdict == compare.Verdict.SLOWER
            assert r.ratio is not None and 1.1 < r.ratio < 1.3
    assert rows[0].verdict == compare.Verdict.SLOWER  # worst first
    out = tmp_path / "cmp.csv"
    argv = ["compare", str(sessions["A"]), str(sessions["slow"]), "--csv", str(out)]
    assert cli.main([*argv, "--fail-on", "p50_s>+5%"]) == 1
    assert cli.main([*argv, "--fail-on", "p50_s>+25%", "--fail-on", "throughput_rps<-25%"]) == 0
    assert cli.main([*argv, "--fail-on", "throughput_rps<-5%"]) == 1
    with out.open(newline="") as fh:
        header = next(csv.reader(fh))
    for column in (
        "metric",
        "baseline_value",
        "value",
        "ratio",
        "ratio_lo",
        "ratio_hi",
        "verdict",
        "cpu_cores",
    ):
        assert column in header
    assert "session" not in header  # two sessions: no session column


def test_null_gate_passes_and_three_sessions_csv(sessions: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "three.csv"
    argv = ["compare", str(sessions["A"]), str(sessions["B"]), str(sessions["slow"]), "--csv", str(out)]
    assert cli.main([*argv[:3], "--fail-on", "p50_s>+5%", "--fail-on", "p99_s>+5%"]) == 0
    assert cli.main([*argv, "--fail-on", "p50_s>+5%"]) == 1
    frame = pd.read_csv(out)
    assert set(frame["session"]) == {"B", "slow"}
    assert set(frame["verdict"]) <= {*compare.DETECTED, compare.Verdict.SAME, compare.Verdict.NOT_COMPARABLE}


def _edit_cells(session: Path, dest: Path, **changes: object) -> Path:
    import shutil

    shutil.copytree(session, dest)
    cells = pd.read_csv(dest / "cells.csv")
    for column, value in changes.items():
        cells[column] = value
    cells.to_csv(dest / "cells.csv", index=False)
    return dest


def test_not_comparable_reasons(sessions: dict[str, Path], tmp_path: Path) -> None:
    other_model = _edit_cells(sessions["B"], tmp_path / "model", model_name="resnet50")
    rows = _rows(sessions["A"], other_model)
    assert {r.verdict for r in rows} == {compare.Verdict.NOT_COMPARABLE}
    assert "different model" in rows[0].reason
    saturated = _edit_cells(sessions["B"], tmp_path / "sat", saturation="client")
    assert all("saturated cell (client)" in r.reason for r in _rows(sessions["A"], saturated))
    unenforced = _edit_cells(sessions["B"], tmp_path / "caps", cpus_enforced=False)
    assert all("caps not enforced in caps" in r.reason for r in _rows(sessions["A"], unenforced))


def test_too_few_requests_for_p99(tmp_path: Path) -> None:
    a = synthetic.write_session(tmp_path, "a", n_requests=60, seed=1)
    b = synthetic.write_session(tmp_path, "b", n_requests=60, seed=2)
    rows = _rows(a, b)
    p99 = [r for r in rows if r.metric == "p99_s"]
    assert p99 and all(r.verdict == compare.Verdict.NOT_COMPARABLE for r in p99)
    assert "too few for p99_s" in p99[0].reason and "needed" in p99[0].reason
    assert all(r.verdict != compare.Verdict.NOT_COMPARABLE for r in rows if r.metric == "p50_s")


def test_no_cell_in_common_is_one_line(
    sessions: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = _edit_cells(sessions["B"], tmp_path / "gpu", cpu_cores=64)
    assert cli.main(["compare", str(sessions["A"]), str(elsewhere)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no cell in common" in err
    assert cli.main(["compare", str(sessions["A"]), str(tmp_path / "missing")]) == 2
    assert cli.main(["compare", str(sessions["A"]), str(sessions["B"]), "--fail-on", "p99>5"]) == 2


def test_generative_metrics_and_cells_only_fallback(tmp_path: Path) -> None:
    a = synthetic.write_generative_session(tmp_path, "ga", n_requests=60, seed=1)
    b = synthetic.write_generative_session(tmp_path, "gb", n_requests=60, seed=2)
    metrics = {r.metric for r in _rows(a, b)}
    assert {"ttft_p50_s", "tpot_p50_s", "itl_p50_s", "p50_s", "cold_start_s", "peak_mem_bytes"} <= metrics
    # without requests.csv, the sessions' own cells.csv intervals
    for session, scale in ((a, 1.0), (b, 1.5)):
        (session / "requests.csv").unlink()
        cells = pd.read_csv(session / "cells.csv")
        cells["p50_s"] = cells["p50_s"] * scale
        cells["p50_lo_s"], cells["p50_hi_s"] = cells["p50_s"] * 0.97, cells["p50_s"] * 1.03
        cells.to_csv(session / "cells.csv", index=False)
    p50 = [r for r in _rows(a, b) if r.metric == "p50_s"]
    assert p50 and all(r.verdict == compare.Verdict.SLOWER and "own intervals" in r.method for r in p50)


def test_mover_and_gate_parsing() -> None:
    lo, hi = compare.mover_ratio((1.0, 0.9, 1.1), (1.2, 1.08, 1.32))
    assert lo is not None and hi is not None and lo < 1.2 < hi
    assert 1.0 < lo  # a 20% change with ±10% intervals on both sides: half-widths add in quadrature
    gate = compare.parse_gate("p99_s>+5%")
    assert gate.above and gate.percent == 5.0
    assert not compare.parse_gate("throughput_rps<-5%").above
    with pytest.raises(compare.CompareError):
        compare.parse_gate("p99_s>5")


def test_plot_overlay(sessions: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "overlay.png"
    assert cli.main(["plot", str(sessions["A"]), str(sessions["slow"]), "--overlay", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert cli.main(["plot", str(sessions["A"]), str(sessions["slow"])]) == 2  # several need --overlay
