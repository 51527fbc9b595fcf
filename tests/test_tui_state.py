"""The TUI's textual-free parts: the bounded live state and the session reader."""

from __future__ import annotations

import csv
import sys

from tui_profiler.events import CellStarted, RequestDone, ResourceSample, SessionStarted
from tui_profiler.session import reader
from tui_profiler.testing import synthetic
from tui_profiler.tui.live_state import LATENCY_POINTS, SAMPLE_POINTS, LiveState


def test_live_state_is_bounded_and_counts_everything():
    state = LiveState()
    state.ingest(SessionStarted("s", "d", "p", "docker", "why", 1))
    state.ingest(CellStarted(0, 1, {"cpus": 1.0}))
    n = LATENCY_POINTS * 5
    for i in range(n):
        state.ingest(RequestDone(0, i * 0.001, 0.010 if i % 2 else 0.020, True, False, 200, row={"i": i}))
        state.ingest(ResourceSample(0, i * 0.001, cpu_cores=0.5))
    state.ingest(RequestDone(0, 1.0, None, False, False, 500, error="HTTP 500"))
    assert len(state.latencies) == LATENCY_POINTS
    assert len(state.cpu) == SAMPLE_POINTS
    assert state.n_requests == n + 1 and state.n_errors == 1 and state.last_error == "HTTP 500"
    p50, p99 = state.latency_stats()
    assert 0.010 <= p50 <= 0.020 and p99 == 0.020


def test_warmup_requests_do_not_enter_statistics():
    state = LiveState()
    state.ingest(CellStarted(0, 1, {}))
    state.ingest(RequestDone(0, 0.0, 5.0, True, True, 200))
    state.ingest(RequestDone(0, 0.1, 0.1, True, False, 200))
    assert state.latency_stats() == (0.1, 0.1)
    assert state.n_requests == 2 and state.cell_requests == 1


def test_a_new_cell_resets_the_plots_but_keeps_finished_cells():
    state = LiveState()
    events = list(synthetic.event_stream(n_requests=10, failed_cell=1))
    for e in events:
        state.ingest(e)
    assert state.cells_done == 9 and state.cells_failed == 1
    assert [r["status"] for r in state.finished_cells].count("oom") == 1
    assert state.finished is not None and state.eta() == 0.0


def test_eta_extrapolates_when_the_engine_gives_none():
    now = [100.0]
    state = LiveState(clock=lambda: now[0])
    state.ingest(SessionStarted("s", "d", "p", "docker", "why", 4))
    from tui_profiler.events import CellFinished

    now[0] = 110.0
    state.ingest(CellFinished(0, "ok", "", {}))
    assert state.eta() == 30.0


def test_session_reader_builds_the_acprof_series(tmp_path):
    session = synthetic.write_session(tmp_path)
    infos = reader.list_sessions(tmp_path)
    assert [i.name for i in infos] == [session.name]
    cells = reader.read_cells(session)
    x, series = reader.scaling_series(cells)
    assert x == "input_scale"
    assert [s.label for s in series] == ["CPU0.5+Mem1", "CPU1+Mem2", "CPU2+Mem4"]
    for s in series:
        assert s.x == [0.5, 1.0, 2.0] and s.y == sorted(s.y)  # latency grows with input
    # fewer CPUs are slower at every scale
    assert all(a > b for a, b in zip(series[0].y, series[2].y, strict=True))
    labels, phases = reader.cold_start_breakdown(cells)
    assert labels and "server_boot" in phases and "image_pull" not in phases  # 'cached' pull: no value
    lat = reader.cell_latencies(reader.read_requests(session), 0)
    assert len(lat) == 28  # 30 requests, 2 warm-up


def test_cells_fall_back_to_requests_when_cells_csv_is_missing(tmp_path):
    session = synthetic.write_session(tmp_path)
    (session / "cells.csv").unlink()
    cells = reader.read_cells(session)
    assert len(cells) == 9 and cells["n"].eq(28).all()


def test_export_writes_one_merged_csv(tmp_path, monkeypatch):
    session = synthetic.write_session(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # Parquet is optional: without pyarrow, CSV only
    paths = reader.export_session(session)
    assert len(paths) == 1 and paths[0].suffix == ".csv"
    with paths[0].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9 * 30
    assert {"latency_s", "p99_s", "throughput_rps", "cell_index"} <= set(rows[0])


def test_eta_from_past_sessions(tmp_path):
    synthetic.write_session(tmp_path)
    per_cell = reader.seconds_per_cell(tmp_path, "synthetic")
    assert per_cell is not None and abs(per_cell - 120.0 / 9) < 1e-9
    assert reader.seconds_per_cell(tmp_path / "none") is None


def test_cold_start_stays_for_cells_sharing_a_container():
    from tui_profiler.events import ColdStartDone, ColdStartPhase

    state = LiveState()
    state.ingest(CellStarted(0, 2, {}))
    state.ingest(ColdStartPhase(0, "create", 0.1))
    state.ingest(ColdStartDone(0, {"create": 0.1, "ready": 2.0}, 2.1))
    state.ingest(CellStarted(1, 2, {}))  # same container: no new phases
    assert state.cold_phases == {"create": 0.1, "ready": 2.0} and state.cold_total_s == 2.1
    state.ingest(ColdStartPhase(1, "create", 0.2))  # the next container starts
    assert state.cold_phases == {"create": 0.2} and state.cold_total_s is None


def test_generative_requests_feed_bounded_ttft_and_itl_series():
    state = LiveState()
    state.ingest(SessionStarted("s", "d", "p", "docker", "why", 2))
    state.ingest(CellStarted(0, 2, {"cpus": 1.0, "token_len": 256, "output_len": 32}))
    state.ingest(RequestDone(0, 0.5, 0.5, True, False, 200, row={"i": 0}))  # no ttft_s: not generative
    assert not state.generative and state.ttft_stats() == (None, None)
    n = LATENCY_POINTS * 2
    for i in range(n):
        row = {"ttft_s": 0.1 if i % 2 else 0.3, "itl_p50_s": 0.01, "itl_p99_s": None if i % 3 else 0.05}
        state.ingest(RequestDone(0, 1.0 + i, 0.5, True, False, 200, row=row))
    state.ingest(RequestDone(0, 9e9, 0.5, True, True, 200, row={"ttft_s": 99.0}))  # warm-up: left out
    assert state.generative
    assert len(state.ttfts) == LATENCY_POINTS and len(state.itls) == LATENCY_POINTS
    p50, p99 = state.ttft_stats()
    assert 0.1 <= p50 <= 0.3 and p99 == 0.3
    assert state.itl_stats() == (0.01, 0.05)  # a missing per-request p99 is left out, not read as 0
    state.ingest(CellStarted(1, 2, {"cpus": 2.0}))
    assert not state.ttfts and not state.itls and state.generative  # the layout stays for the session


def test_every_scraped_server_metric_is_kept_and_m_steps_through_them():
    from tui_profiler.events import ServerMetrics
    from tui_profiler.tui.live_state import MAX_SERVER_METRICS

    state = LiveState()
    state.ingest(SessionStarted("s", "d", "p", "docker", "why", 2))
    state.ingest(CellStarted(0, 2, {"cpus": 1.0}))
    assert state.next_server_metric() == "" and not state.server_values  # nothing scraped yet
    rows = [["queued", "", 3.0], ["queued", 'model="b"', 9.0], ["in_flight", "", 1.0]]
    state.ingest(ServerMetrics(cell_index=0, t_s=0.5, rows=rows))
    state.ingest(ServerMetrics(cell_index=0, t_s=1.0, rows=[["queued", "", 4.0], ["in_flight", "", 2.0]]))
    state.ingest(ServerMetrics(cell_index=7, t_s=1.0, rows=[["queued", "", 99.0]]))  # another host's cell
    assert state.server_metric == "queued" and list(state.server_values) == [(0.5, 3.0), (1.0, 4.0)]
    before = state.version
    assert state.next_server_metric() == "in_flight" and state.version > before
    assert list(state.server_values) == [(0.5, 1.0), (1.0, 2.0)]
    assert state.next_server_metric() == "queued"  # round again
    assert state.next_server_metric(-1) == "in_flight"
    # a new cell empties the series and keeps the choice; the names are bounded
    state.ingest(CellStarted(1, 2, {"cpus": 2.0}))
    assert state.server_metric == "in_flight" and not state.server_values
    many = [[f"m{i}", "", float(i)] for i in range(MAX_SERVER_METRICS * 2)]
    state.ingest(ServerMetrics(cell_index=1, t_s=0.1, rows=many))
    assert len(state.server_series) == MAX_SERVER_METRICS
