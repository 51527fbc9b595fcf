"""The sweep's pure parts, fed by hand: how a finished cell is classified, its cells.csv row and the
columns its requests.csv rows share, the cold start's total, throughput; and what is started for a cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tui_profiler.config.model import Preset
from tui_profiler.load.client import RequestResult
from tui_profiler.plan import Cell
from tui_profiler.runtime.base import EnforcedCaps
from tui_profiler.sample import SamplerSummary
from tui_profiler.session.schema import (
    CELL_COLUMNS,
    COLD_START_PHASES,
    LOAD_GENERATOR_COLUMNS,
    REQUEST_COLUMNS,
    CellStatus,
    RequestStatus,
)
from tui_profiler.sweep import targets
from tui_profiler.sweep.outcome import (
    CellSetting,
    ColdStart,
    cell_row,
    classify_cell,
    cold_total,
    model_name,
    needs_liveness_check,
    request_constants,
    throughput,
)


def _result(
    seq: int = 0,
    *,
    ok: bool = True,
    outcome: str = "ok",
    error: str = "",
    status: int | None = 200,
    latency_s: float | None = 0.010,
    warmup: bool = False,
    server_total_ms: float | None = None,
    overhead_ms: float | None = None,
) -> RequestResult:
    t_send = seq * 0.1
    return RequestResult(
        timestamp_ms=1_700_000_000_000 + seq * 100,
        t_send_s=t_send,
        t_recv_s=t_send + latency_s if latency_s is not None else None,
        latency_s=latency_s,
        status=status,
        ok=ok,
        outcome=outcome,
        error=error,
        warmup=warmup,
        worker=0,
        seq=seq,
        server_total_ms=server_total_ms,
        overhead_ms=overhead_ms,
    )


def _failed(seq: int, error: str = "HTTP 500", status: int | None = 500) -> RequestResult:
    return _result(seq, ok=False, outcome="http_error", error=error, status=status, latency_s=0.002)


def _timed_out(seq: int) -> RequestResult:
    return _result(seq, ok=False, outcome="timeout", error="timeout after 5 s", status=None, latency_s=None)


def _cell(**kw: Any) -> Cell:
    fields: dict[str, Any] = dict(
        index=3,
        cpus=1.0,
        memory_gb=0.5,
        gpus=0,
        input_scale=1.0,
        token_len=None,
        concurrency=2,
        rate=None,
        repeat_idx=0,
        container_group=1,
    )
    fields.update(kw)
    return Cell(**fields)


def _setting(cell: Cell | None = None, payload_row: dict[str, Any] | None = None) -> CellSetting:
    return CellSetting(
        cell=cell or _cell(),
        model_name="resnet50",
        batch_size=1,
        enforced=EnforcedCaps(cpus_requested=1.0, cpus_enforced=True, cpuset="0", memory_enforced=False),
        container_idx=1,
        payload_row=payload_row if payload_row is not None else {},
    )


# ------------------------------------------------------------------------------------ classification


def test_a_results_row_has_exactly_the_load_generators_columns() -> None:
    """`as_row` fills the schema's LOAD_GENERATOR_COLUMNS (all of them requests.csv columns), nothing else."""
    res = _result(ok=False, outcome=RequestStatus.HTTP_ERROR, error="HTTP 503", status=503, warmup=True)
    row = res.as_row()
    assert tuple(row) == LOAD_GENERATOR_COLUMNS
    assert set(LOAD_GENERATOR_COLUMNS) <= set(REQUEST_COLUMNS)
    assert (row["status"], row["http_status"], row["warmup"], row["worker"]) == ("http_error", 503, 1, 0)
    assert (row["latency_s"], row["error"], row["ttft_s"]) == (0.010, "HTTP 503", None)


def test_all_answered_is_ok() -> None:
    timed = [_result(i) for i in range(5)]
    assert not needs_liveness_check(timed, "", 0)
    assert classify_cell(timed) == (CellStatus.OK, "")


def test_some_failed_stays_ok_and_says_how_many() -> None:
    timed = [_result(0), _failed(1), _result(2), _failed(3, "HTTP 503", 503)]
    assert needs_liveness_check(timed, "", None)
    status, reason = classify_cell(timed, alive=True)
    assert status == CellStatus.OK
    assert reason == "2 of 4 requests failed: HTTP 500; HTTP 503"


def test_all_failed_is_failed() -> None:
    timed = [_failed(i) for i in range(3)]
    assert classify_cell(timed, alive=True) == (CellStatus.FAILED, "3 of 3 requests failed: HTTP 500")


def test_an_error_without_text_is_named_by_its_http_status() -> None:
    timed = [_failed(0, error="", status=502), _result(1)]
    assert classify_cell(timed, alive=True) == (CellStatus.OK, "1 of 2 requests failed: 502")


def test_only_timeouts_on_a_live_target_is_timeout() -> None:
    timed = [_result(0), _timed_out(1), _timed_out(2)]
    status, reason = classify_cell(timed, alive=True)
    assert status == CellStatus.TIMEOUT
    assert reason == "2 of 3 requests failed: timeout after 5 s"


def test_dead_target_with_an_oom_kill_is_oom() -> None:
    timed = [_result(0), _failed(1, "connection reset")]
    by_exit = classify_cell(
        timed, alive=False, exit_facts={"oom_killed": True, "exit_code": 137}, memory_gb=0.5
    )
    assert by_exit == (CellStatus.OOM, "the target was OOM-killed during the cell (memory cap 0.5 GiB)")
    # the sampler's count of OOM kills is enough when the exit facts do not say so (runtime could not tell)
    by_counter = classify_cell(timed, oom_kills=1, alive=False, exit_facts={}, memory_gb=2.0)
    assert by_counter[0] == CellStatus.OOM and "2.0 GiB" in by_counter[1]
    assert needs_liveness_check([_result(0)], "", 1)


def test_dead_target_whose_requests_timed_out_is_timeout() -> None:
    timed = [_result(0), _timed_out(1), _timed_out(2)]
    status, reason = classify_cell(timed, alive=False, exit_facts={"exit_code": None, "oom_killed": False})
    assert status == CellStatus.TIMEOUT
    assert reason == (
        "the target stopped answering: 2 of 3 requests timed out and /healthz did not answer; "
        "replaced for the next cell"
    )


def test_dead_target_is_crashed_with_its_exit_code_and_last_log_line() -> None:
    timed = [_result(0), _failed(1, "connection refused", None)]
    facts = {
        "exit_code": 3,
        "oom_killed": False,
        "last_logs": "booting\nTraceback ...\nValueError: bad weights\n",
    }
    status, reason = classify_cell(timed, alive=False, exit_facts=facts)
    assert status == CellStatus.CRASHED
    assert reason == "the target died during the cell (exit code 3): ValueError: bad weights"
    # no logs: the exit code alone
    bare = classify_cell(timed, alive=False, exit_facts={"exit_code": 1, "last_logs": ""})
    assert bare == (CellStatus.CRASHED, "the target died during the cell (exit code 1)")


def test_a_long_last_log_line_is_cut() -> None:
    facts = {"exit_code": 1, "last_logs": "x" * 500}
    _, reason = classify_cell([_failed(0)], alive=False, exit_facts=facts)
    assert reason.endswith(": " + "x" * 200)


def test_no_timed_request_is_failed() -> None:
    assert classify_cell([]) == (CellStatus.FAILED, "no timed request finished")


def test_load_generator_error_is_failed_with_its_message() -> None:
    error = "load generator: RuntimeError: cannot connect"
    assert needs_liveness_check([], error, None)
    assert classify_cell([_result(0), _failed(1)], load_error=error, alive=True) == (CellStatus.FAILED, error)
    # its message survives even with no timed request at all
    assert classify_cell([], load_error=error, alive=True) == (CellStatus.FAILED, error)
    # and a dead target says more than the load generator's error
    crashed = classify_cell([], load_error=error, alive=False, exit_facts={"exit_code": 139})
    assert crashed == (CellStatus.CRASHED, "the target died during the cell (exit code 139)")


# ------------------------------------------------------------------------------------ numbers


def test_cold_total_sums_what_was_measured() -> None:
    assert cold_total({}) is None
    assert cold_total({"create": None, "start": None}) is None
    assert cold_total({"create": 0.25, "start": None, "ready": 1.0}) == pytest.approx(1.25)
    assert cold_total({"not_a_phase": 9.0}) is None


def test_cold_start_finish_adds_the_first_request() -> None:
    cold = ColdStart(phases={"create": 0.5}, start_wall_s=2.0)
    assert cold.wall_s is None
    cold.phases["first_request"] = 0.25
    cold.finish()
    assert cold.wall_s == pytest.approx(2.25)
    assert cold.total_s() == pytest.approx(0.75)
    unanswered = ColdStart(start_wall_s=1.5)
    unanswered.finish()
    assert unanswered.wall_s == pytest.approx(1.5)


def test_throughput_from_first_send_to_last_answer() -> None:
    assert throughput([]) is None
    assert throughput([_result(0), _failed(1)]) is None  # one answer is not a rate
    timed = [_result(0, latency_s=0.1), _result(1, latency_s=0.1), _failed(2)]  # sends at 0, 0.1, 0.2
    assert throughput(timed) == pytest.approx(2 / 0.2)  # 2 answers between 0 and 0.2 s


def test_model_name_prefers_what_the_server_reports() -> None:
    assert model_name("resnet50-v2", "resnet50", "img") == "resnet50-v2"
    assert model_name(None, "resnet50", "img") == "resnet50"
    assert model_name("", "", "ghcr.io/x/tei") == "ghcr.io/x/tei"


# ------------------------------------------------------------------------------------ rows


def test_request_constants_are_the_settings_then_the_payload_columns() -> None:
    payload = {"input_scale": 0.5, "pixels": 12544, "height": 112, "width": 112, "payload_bytes": 37632}
    row = request_constants(_setting(payload_row=payload))
    assert row["input_scale"] == 0.5  # the payload's actual scale wins
    assert (row["pixels"], row["height"], row["width"], row["payload_bytes"]) == (12544, 112, 112, 37632)
    assert row["gpu_mode"] == "off" and row["cpu_cores"] == 1.0 and row["cell_index"] == 3
    # caps asked for say whether they were enforced; caps not asked for are None
    assert row["cpus_enforced"] is True and row["mem_enforced"] is False and row["gpus_enforced"] is None
    uncapped = request_constants(_setting(_cell(cpus=None, memory_gb=None)))
    assert uncapped["cpus_enforced"] is None and uncapped["mem_enforced"] is None
    assert set(row) - set(payload) <= set(REQUEST_COLUMNS)


def test_cell_row_of_the_cell_that_measures_the_cold_start() -> None:
    results = [
        _result(0, warmup=True),
        _result(1, latency_s=0.010, server_total_ms=8.0, overhead_ms=2.0),
        _result(2, latency_s=0.020, server_total_ms=9.0, overhead_ms=4.0),
        _failed(3),
    ]
    phases: dict[str, float | None] = {p: None for p in COLD_START_PHASES}
    phases.update(create=0.5, ready=1.0, first_request=0.25)
    cold = ColdStart(phases=phases, details={"image_pull": "cached"}, start_wall_s=2.0, wall_s=2.25)
    sampled = SamplerSummary(peak_cpu_cores=0.9, oom_kills=0, n_samples=4)
    row = cell_row(
        _setting(payload_row={"pixels": 50176}),
        results,
        status=CellStatus.OK,
        reason="1 of 3 requests failed: HTTP 500",
        sampled=sampled,
        cold=cold,
        measures_cold_start=True,
        profiling_url=False,
        load_wall_s=0.4,
        target_facts={"image_size_bytes": 1000, "image_pull_bytes": None},
        weight_bytes=42,
    )
    assert set(CELL_COLUMNS) <= set(row)  # every cells.csv column; the event's row carries the sampler's rest
    assert (row["n"], row["errors"], row["warmup_n"]) == (2, 1, 1)
    assert row["mean_s"] == pytest.approx(0.015)
    assert row["server_total_ms_mean"] == pytest.approx(8.5) and row["overhead_ms_max"] == 4.0
    assert row["throughput_rps"] == pytest.approx(2 / (0.2 + 0.020 - 0.1))
    assert row["cold_start_cell"] is True and row["cold_start_s"] == pytest.approx(1.75)
    assert row["cold_start_wall_s"] == 2.25 and row["image_pull_detail"] == "cached"
    assert row["create_s"] == 0.5 and row["first_request_s"] == 0.25
    assert row["image_size_bytes"] == 1000 and row["image_pull_bytes"] is None and row["weight_bytes"] == 42
    assert row["peak_cpu_cores"] == 0.9 and row["n_samples"] == 4 and row["pixels"] == 50176
    assert (row["status"], row["reason"]) == (CellStatus.OK, "1 of 3 requests failed: HTTP 500")


def test_cell_row_of_a_target_that_never_started() -> None:
    row = cell_row(
        _setting(),
        [],
        status=CellStatus.OOM,
        reason="OOM-killed while loading",
        sampled=None,
        cold=ColdStart(phases={"create": 0.1}),
        measures_cold_start=True,
        profiling_url=False,
        load_wall_s=None,
    )
    assert row["n"] == 0 and row["mean_s"] is None and row["throughput_rps"] is None
    assert row["cold_start_s"] == pytest.approx(0.1) and row["cold_start_wall_s"] is None
    assert row["load_wall_s"] is None and row["image_pull_detail"] == "" and row["weight_bytes"] is None
    assert "peak_cpu_cores" not in row  # no sampler ran: its columns are left empty by the store
    assert row["status"] == CellStatus.OOM


def test_cell_row_against_a_running_server_has_no_cold_start() -> None:
    row = cell_row(
        _setting(),
        [_result(0), _result(1)],
        status=CellStatus.OK,
        reason="",
        sampled=None,
        cold=ColdStart(),
        measures_cold_start=True,
        profiling_url=True,
        load_wall_s=0.3,
    )
    assert row["cold_start_cell"] is None and row["cold_start_s"] is None and row["cold_start_wall_s"] is None
    later = cell_row(
        _setting(),
        [_result(0)],
        status=CellStatus.OK,
        reason="",
        sampled=None,
        cold=ColdStart(phases={"create": 0.1}),
        measures_cold_start=False,
        profiling_url=False,
        load_wall_s=0.3,
    )
    assert later["cold_start_cell"] is False and later["cold_start_s"] == pytest.approx(0.1)


# ------------------------------------------------------------------------------------ targets


def _preset(**kw: Any) -> Preset:
    return Preset.model_validate({"name": "t", "model": "resnet50", **kw})


def test_our_server_gets_the_model_command_line() -> None:
    preset = _preset(server_args=["--workers", "2"])
    assert targets.server_command(preset) == ["--model", "resnet50", "--weights", "random", "--workers", "2"]
    spec = targets.target_spec(preset, _cell(gpus=0), image="img:1", session_id="s1")
    assert (spec.image, spec.session_id, spec.cpus, spec.memory_gb, spec.port) == (
        "img:1",
        "s1",
        1.0,
        0.5,
        8000,
    )
    assert spec.command == ["--model", "resnet50", "--weights", "random", "--workers", "2"]


def test_a_foreign_target_keeps_its_own_command_and_gets_gpu_env_only_with_gpus() -> None:
    preset = _preset(
        model="", target={"image": "ghcr.io/x/tei:1", "port": 80, "env": {"A": "1"}, "gpu_env": {"G": "on"}}
    )
    assert targets.server_command(preset) is None  # the image's own command
    cpu = targets.target_spec(preset, _cell(gpus=0), image="ghcr.io/x/tei:1", session_id="s")
    assert cpu.env == {"A": "1"} and cpu.port == 80
    gpu = targets.target_spec(preset, _cell(gpus=1), image="ghcr.io/x/tei:1", session_id="s")
    assert gpu.env == {"A": "1", "G": "on"}


def test_image_source_order() -> None:
    given = targets.image_source(_preset(model="", target={"image": "nginx:1"}))
    assert given == targets.GivenImage("nginx:1")
    assert targets.image_source(_preset(image="mine:2")) == targets.GivenImage("mine:2")
    ours = targets.image_source(_preset())
    assert isinstance(ours, targets.ImageBuild) and "model-server image" in ours.note


def test_a_dockerfile_is_relative_to_the_preset_file(tmp_path: Path) -> None:
    preset = _preset(model="", target={"dockerfile": "srv/Dockerfile"})
    preset.path = tmp_path / "p.toml"
    source = targets.image_source(preset)
    assert isinstance(source, targets.ImageBuild)
    assert source.note == f"building the target image from {tmp_path / 'srv' / 'Dockerfile'}"


def test_image_failure_keeps_the_first_line() -> None:
    failed = targets.image_failure(RuntimeError("pull access denied\nmore detail"))
    assert (failed.status, failed.reason) == (CellStatus.BUILD_FAILED, "image: pull access denied")
    assert targets.image_failure(OSError()).reason == "image: OSError"


def test_the_url_preset_plans_one_uncapped_config() -> None:
    preset = _preset(resources={"cpus": [0.5, 2], "memory_gb": [1, 2]})
    preset.path = Path("/x/p.toml")
    planned = targets.url_preset(preset)
    res = planned.resources
    assert (res.cpus, res.memory_gb, res.gpus, res.pairing) == ([None], [None], [0], "grid")
    assert planned.path == Path("/x/p.toml") and preset.resources.cpus == [0.5, 2]


def test_a_cells_settings_are_the_schemas_setting_columns() -> None:
    """The session writer formats these columns once per cell: they must be exactly what the sweep sets."""
    from tui_profiler.session.schema import REQUEST_COLUMNS, SETTING_COLUMNS
    from tui_profiler.sweep.outcome import setting_columns

    assert list(setting_columns(_setting())) == list(SETTING_COLUMNS)
    assert set(SETTING_COLUMNS) <= set(REQUEST_COLUMNS)
