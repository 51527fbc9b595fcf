"""Every number with its uncertainty, where it is shown and used (issue 20, the display and analysis side):
the headless lines and table, the live state's running intervals, `fit`'s weights and the cells it leaves
out, `recommend`'s decided-or-within-noise, and the spread between repetitions. Known answers only: the
intervals are constructed, never measured here."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from tui_profiler import formatting
from tui_profiler.analysis import fit
from tui_profiler.analysis.recommend import judge, recommend_paths
from tui_profiler.events import CellFinished, CellStarted, RequestDone, SessionFinished, SessionStarted
from tui_profiler.session.repetitions import repetition_rows
from tui_profiler.session.schema import CELL_COLUMNS, REPETITION_COLUMNS, CellStatus, SessionStatus
from tui_profiler.session.store import SessionWriter
from tui_profiler.testing import synthetic
from tui_profiler.tui.live_state import INTERVAL_EVERY_S, LiveState

# ------------------------------------------------------------------------------------------- formatting


def test_an_interval_reads_in_its_estimates_unit_with_open_sides_and_the_requests_it_needs() -> None:
    assert formatting.latency_interval(0.041, 0.037, 0.0452) == "41.0 ms [37.0, 45.2]"
    assert formatting.latency_interval(0.041, 0.037, None, 368) == "41.0 ms [37.0, –] needs 368"
    assert formatting.latency_interval(0.041, 0.037, 0.05, 368) == "41.0 ms [37.0, 50.0]"  # bounded: no need
    assert formatting.latency_interval(None, 0.1, 0.2) == formatting.NOT_AVAILABLE
    # a cells.csv row (text): the columns decide whether an interval is shown at all
    row = {"p99_s": "0.041", "p99_lo_s": "0.037", "p99_hi_s": "", "p99_n_needed": "400"}
    assert formatting.row_percentile(row, "p99") == "41.0 ms [37.0, –] needs 400"
    assert formatting.row_percentile(row, "p99", needs=False) == "41.0 ms [37.0, –]"
    assert formatting.row_percentile({"p50_s": "0.0084"}, "p50") == "8.4 ms"  # a session before intervals
    assert formatting.saturation(None) == "" and formatting.saturation(math.nan) == ""


# --------------------------------------------------------------------------------------------- headless


def _console():
    from rich.console import Console

    return Console(record=True, width=220, color_system=None)


def test_the_headless_cell_line_shows_intervals_and_the_saturation_flag() -> None:
    from tui_profiler.commands.run import _Progress

    console = _console()
    progress = _Progress(console)
    progress(SessionStarted("s", "d", "p", "docker", "why", 2))
    progress(CellStarted(0, 2, {"cpus": 1.0}))
    summary = {
        "n": 20,
        "p50_s": 0.0084,
        "p50_lo_s": 0.0081,
        "p50_hi_s": 0.0089,
        "p99_s": 0.041,
        "p99_lo_s": 0.037,
        "p99_hi_s": None,
        "p99_n_needed": 368,
        "saturation": "client",
        "saturation_reason": "the load generator used 0.98 of its 1 core",
    }
    progress(CellFinished(0, CellStatus.OK, "", summary))
    text = console.export_text()
    assert "p50 8.4 ms [8.1, 8.9] p99 41.0 ms [37.0, –] needs 368" in text
    assert "saturated: client — the load generator used 0.98 of its 1 core" in text


def test_the_headless_table_shows_intervals_flags_and_reasons_and_reads_old_sessions() -> None:
    from tui_profiler.commands.run import _summary_table

    console = _console()
    rows = [
        {"cell_index": "0", "p50_s": "0.0084", "p50_lo_s": "0.0081", "p50_hi_s": "0.0089", "p99_s": "0.041",
         "p99_lo_s": "0.037", "p99_hi_s": "", "p99_n_needed": "368", "status": "ok",
         "saturation": "server+host", "saturation_reason": "latency rises through the cell"},
        {"cell_index": "1", "p50_s": "0.009", "p50_lo_s": "", "p50_hi_s": "", "p99_s": "0.02",
         "p99_lo_s": "", "p99_hi_s": "", "status": "ok", "saturation": "", "saturation_reason": ""},
    ]  # fmt: skip
    _summary_table(console, rows)
    text = console.export_text()
    assert "8.4 ms [8.1, 8.9]" in text and "41.0 ms [37.0, –] needs 368" in text
    assert "9.0 ms [–, –]" in text  # an interval neither side of which the cell can bound
    assert "server+host" in text
    assert "saturated cell 0: server+host — latency rises through the cell" in text
    old = _console()
    _summary_table(old, [{"cell_index": "0", "p50_s": "0.0084", "p99_s": "0.041", "status": "ok"}])
    old_text = old.export_text()
    assert "8.4 ms" in old_text and "[" not in old_text.split("status")[1] and "needs" not in old_text


# ------------------------------------------------------------------------------------------- live state


def test_the_running_cells_intervals_are_computed_on_the_timer_not_per_event() -> None:
    state = LiveState()
    state.ingest(CellStarted(0, 1, {}))
    assert state.latency_intervals(now=0.0) is None
    for i in range(400):
        state.ingest(RequestDone(0, i * 0.01, 0.010 + 0.0001 * (i % 50), True, False, 200))
    p50, p99 = state.latency_intervals(now=0.0)
    assert p50.bounded and p50.lo <= p50.estimate <= p50.hi and p50.n == 400
    assert p99.n == 400 and p99.lo is not None
    state.ingest(RequestDone(0, 5.0, 1.0, True, False, 200))
    assert state.latency_intervals(now=INTERVAL_EVERY_S / 2)[0].n == 400  # too soon: the last one
    assert state.latency_intervals(now=INTERVAL_EVERY_S)[0].n == 401  # new data and time passed
    state.ingest(CellStarted(1, 2, {}))
    assert state.latency_intervals(now=INTERVAL_EVERY_S) is None  # a new cell starts afresh


# ---------------------------------------------------------------------------------------------- weights


def test_a_cell_weighs_by_the_inverse_of_its_relative_variance() -> None:
    w, how = fit.cell_weights([1.0, 1.0], [0.9, 0.8], [1.1, 1.2], [100, 100])
    assert how == "intervals"
    assert w[0] / w[1] == pytest.approx(4.0)  # half the width, a quarter of the variance
    # a cell without a bounded interval: the variance its requests imply at the group's variance per request
    w, how = fit.cell_weights([1.0, 1.0], [0.9, None], [1.1, None], [100, 25])
    assert how == "intervals and request counts" and w[0] / w[1] == pytest.approx(4.0)
    w, how = fit.cell_weights([1.0, 2.0], [None, None], [None, None], [30, 10])
    assert how == "request counts" and w[0] / w[1] == pytest.approx(3.0)


@pytest.mark.parametrize("form", ["loglinear", "work-parallel"])
def test_a_cell_with_a_wide_interval_moves_the_fit_less_than_a_narrow_one(form: str) -> None:
    """y = 0.01 + 1e-6 * s / c exactly (work-parallel's law), one cell 50% too slow: weighted 1e-6 of the
    others it barely moves the fit; weighted 1e3 times the others it pulls the fit to itself."""
    s = np.array([1e4, 4e4, 1.6e5] * 3, float)
    c = np.repeat([1.0, 2.0, 4.0], 3)
    y = 0.01 + 1e-6 * s / c
    y_out = y.copy()
    y_out[4] *= 1.5
    wide = np.ones(9)
    wide[4] = 1e-6
    narrow = np.ones(9)
    narrow[4] = 1e3
    model = fit.FORMS[form]
    at_wide = model.fit(s, c, y_out, wide).predict(s[4:5], c[4:5])[0]
    at_narrow = model.fit(s, c, y_out, narrow).predict(s[4:5], c[4:5])[0]
    assert abs(at_narrow - y_out[4]) / y_out[4] < 0.01  # the narrow cell is honoured
    assert abs(at_wide - y_out[4]) > 10 * abs(at_narrow - y_out[4])
    if form == "work-parallel":  # the law itself: the wide cell leaves it where the others put it
        assert at_wide == pytest.approx(y[4], rel=0.01)


def _cells_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, columns)
        w.writeheader()
        w.writerows(rows)
    return path


def _law_cells(rel: float, *, saturated: int | None = None, cpus=(1.0, 2.0, 4.0)) -> list[dict[str, object]]:
    """cells.csv rows on p99 = p50 = 0.01 + 1e-6 * pixels / cpus, each with a ±`rel` interval."""
    rows = []
    for i, (cpu, px) in enumerate((c, p) for c in cpus for p in (1e4, 4e4, 1.6e5)):
        v = 0.01 + 1e-6 * px / cpu
        rows.append(
            {
                "cell_index": i, "model_name": "m", "cpu_cores": cpu, "mem_cap_gb": 2 * cpu, "pixels": px,
                "concurrency": 1, "repeat_idx": 0, "n": 500, "mean_s": v, "p50_s": v, "p99_s": v,
                "p50_lo_s": v * (1 - rel), "p50_hi_s": v * (1 + rel),
                "p99_lo_s": v * (1 - rel), "p99_hi_s": v * (1 + rel), "status": "ok",
                "saturation": "client" if i == saturated else "",
                "saturation_reason": "the client fell behind" if i == saturated else "",
            }
        )  # fmt: skip
    return rows


def test_fit_weights_cells_by_their_intervals_and_reports_their_noise(tmp_path: Path) -> None:
    rows = _law_cells(0.02)
    rows[4]["p50_lo_s"], rows[4]["p50_hi_s"] = rows[4]["p50_s"] * 0.5, rows[4]["p50_s"] * 1.5  # type: ignore[operator]
    report = fit.fit_paths([_cells_csv(tmp_path / "cells.csv", rows)], target="p50")
    (group,) = report.groups
    assert group.weighting == "intervals"
    assert group.noise["rel_below"] == pytest.approx(0.02) and group.noise["cells_bounded"] == 9
    assert "weights: by intervals" in "\n".join(report.summary_lines())
    assert report.to_dict()["groups"][0]["weighting"] == "intervals"


def test_fit_and_recommend_leave_saturated_cells_out_and_say_so(tmp_path: Path) -> None:
    cells = _cells_csv(tmp_path / "s" / "cells.csv", _law_cells(0.02, saturated=3))
    report = fit.fit_paths([cells], target="p99")
    assert report.groups[0].n_cells == 8
    assert [e["cell_index"] for e in report.excluded] == [3]
    assert report.to_dict()["excluded_cells"]["count"] == 1
    assert "left out 1 cell flagged saturated (client 1)" in "\n".join(report.summary_lines())
    rec = recommend_paths([str(cells)], slo_s=0.033, size=4e4, host_cpus=4)
    assert rec.excluded_cells == 1 and any("left out 1 cell" in c for c in rec.caveats)


def test_a_session_folders_requests_take_their_cells_saturation(tmp_path: Path) -> None:
    session = synthetic.write_session(tmp_path, n_requests=12)
    path = session / "cells.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["saturation"] = "host" if r["cell_index"] in ("0", "4") else ""
        r["saturation_reason"] = "another process took the cores" if r["saturation"] else ""
    _cells_csv(path, rows)  # type: ignore[arg-type]
    report = fit.fit_paths([session], target="latency_s")
    assert report.has_requests and sorted(e["cell_index"] for e in report.excluded) == [0, 4]
    assert report.groups[0].n_cells == 7


# ------------------------------------------------------------------------------------------- recommend


def test_a_choice_is_decided_only_when_its_interval_clears_and_the_cheapers_fails() -> None:
    decided = judge("2 CPUs", {"p99": 0.030}, "1.5 CPUs", {"p99": 0.036}, {"p99": 0.033})
    assert decided.decided and decided.line.startswith("decided by the measurements")
    overlaps = judge("2 CPUs", {"p99": 0.034}, "1.5 CPUs", {"p99": 0.036}, {"p99": 0.033})
    assert not overlaps.decided and "exceeds the SLO" in overlaps.reason
    cheaper_may = judge("2 CPUs", {"p99": 0.030}, "1.5 CPUs", {"p99": 0.032}, {"p99": 0.033})
    assert not cheaper_may.decided and "may meet it too" in cheaper_may.reason
    unbounded = judge("2 CPUs", {"p99": None}, None, {}, {"p99": 0.033})
    assert not unbounded.decided and "no upper bound" in unbounded.reason
    alone = judge("0.5 CPUs", {"p99": 0.030}, None, {}, {"p99": 0.033})
    assert alone.decided and "no cheaper configuration" in alone.reason


@pytest.mark.parametrize(("rel", "decided"), [(0.01, True), (0.3, False)])
def test_recommend_says_whether_the_measurements_decide(tmp_path: Path, rel: float, decided: bool) -> None:
    """At 40000 pixels the law gives 1.5 CPUs 0.0367 s and 2 CPUs 0.0300 s: an SLO of 0.033 s is decided by
    cells measured to ±1%, and lies within the noise of cells measured to ±30%."""
    cells = _cells_csv(tmp_path / "cells.csv", _law_cells(rel))
    rec = recommend_paths([str(cells)], slo_s=0.033, size=4e4, host_cpus=4)
    assert rec.best is not None and rec.best.cpu_cores == 2.0
    assert rec.to_dict()["decided"] is decided
    verdict = "decided by the measurements" if decided else "within the measurements' noise"
    assert any(line.strip().startswith(verdict) for line in rec.summary_lines())


# ------------------------------------------------------------------------------------------- repetitions


def _rep(index: int, rep: int, p50: float, lo: float | None, hi: float | None) -> dict[str, object]:
    row: dict[str, object] = {"cell_index": index, "repeat_idx": rep, "model_name": "m", "cpu_cores": "2",
                              "mem_cap_gb": "4", "input_scale": "1", "concurrency": "1", "status": "ok",
                              "p50_s": p50, "p99_s": p50 * 1.2}  # fmt: skip
    if lo is not None or hi is not None:
        row |= {"p50_lo_s": "" if lo is None else lo, "p50_hi_s": "" if hi is None else hi}
    return row


def test_repetitions_that_agree_within_their_intervals() -> None:
    (row,) = repetition_rows([_rep(0, 0, 0.010, 0.009, 0.011), _rep(1, 1, 0.0105, 0.0095, 0.0115)])
    assert row["repetitions"] == 2 and row["cell_indices"] == "0 1" and row["disagree"] is False
    assert row["p50_cv"] == pytest.approx(np.std([0.010, 0.0105], ddof=1) / 0.01025)
    assert row["p50_median_s"] == pytest.approx(0.01025)
    assert row["p50_median_lo_s"] is None and row["p50_median_hi_s"] is None  # 2 repetitions bound neither


def test_repetitions_that_disagree_beyond_their_intervals_mark_the_outlier() -> None:
    rows = [
        _rep(0, 0, 0.010, 0.009, 0.011),
        _rep(5, 1, 0.0102, 0.0095, 0.0110),
        _rep(9, 2, 0.020, 0.018, None),
    ]
    (row,) = repetition_rows([*rows, _rep(1, 0, 0.5, 0.4, 0.6) | {"cpu_cores": "4"}])  # another config: alone
    assert row["disagree"] is True and row["disagree_cells"] == "9"
    assert "share no point" in row["disagree_reason"]


def test_repetitions_without_intervals_are_not_judged_and_six_bound_the_median() -> None:
    (row,) = repetition_rows([_rep(i, i, 0.01 + 0.001 * i, None, None) for i in range(6)])
    assert row["disagree"] is None
    assert row["p50_median_lo_s"] == pytest.approx(0.010) and row["p50_median_hi_s"] == pytest.approx(0.015)
    assert set(row) == set(REPETITION_COLUMNS)


def test_the_writer_writes_repetitions_csv_when_a_session_finishes(tmp_path: Path) -> None:
    writer = SessionWriter()
    writer(SessionStarted("s", str(tmp_path / "s"), "p", "docker", "why", 2))
    for i, (lo, hi) in enumerate(((0.009, 0.011), (0.019, 0.021))):
        writer(CellFinished(i, CellStatus.OK, "", _rep(i, i, (lo + hi) / 2, lo, hi)))
    writer(SessionFinished(str(tmp_path / "s"), SessionStatus.OK, 2, 0, 1.0, cells_finished=2))
    with (tmp_path / "s" / "repetitions.csv").open(newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["repetitions"] == "2" and row["p50_median_s"] == "0.015"
    report = fit.fit_paths([tmp_path / "s" / "cells.csv"], target="p50")
    lines = "\n".join(report.summary_lines())
    if "p50_lo_s" in CELL_COLUMNS:  # cells.csv records the cells' intervals: the two are judged apart
        assert row["disagree"] == "1" and row["disagree_cells"] == "0 1"
        assert "DISAGREE beyond their intervals" in lines
    else:  # a cells.csv without intervals (before the interval columns): not judged
        assert row["disagree"] == "" and "agreement not judged (no intervals)" in lines


def test_no_repetitions_no_file(tmp_path: Path) -> None:
    session = synthetic.write_session(tmp_path, n_requests=6)
    assert not (session / "repetitions.csv").exists()
