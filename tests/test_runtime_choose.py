"""Choosing a runtime (with a plain-words reason), `tui-profiler doctor` and `tui-profiler clean`."""

from __future__ import annotations

import argparse

import pytest

from tui_profiler.runtime import RuntimeUnavailable, choose_runtime

pytestmark = pytest.mark.docker


def test_default_is_docker_when_an_engine_answers(docker_client) -> None:  # type: ignore[no-untyped-def]
    runtime, why = choose_runtime(None)
    assert runtime.name == "docker" and why.startswith("docker: Docker engine ") and "default" in why


def test_named_runtimes_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, why = choose_runtime("process")
    assert runtime.name == "process" and "caps" in why
    with pytest.raises(RuntimeUnavailable) as info:
        choose_runtime("kubernetes")
    assert str(info.value) == "--runtime: 'kubernetes' — allowed: docker, process"
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(RuntimeUnavailable) as info:
        choose_runtime("docker")
    assert "\n" not in str(info.value) and "no Docker engine is reachable" in str(info.value)
    runtime, why = choose_runtime(None)  # no engine: falls back to the process runtime and says so
    assert runtime.name == "process" and why.startswith("process: no Docker engine is reachable")


def test_doctor_reports_engine_cgroups_caps_gpus_disk(
    docker_client, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    from tui_profiler.commands.doctor import _run, collect

    rows, usable = collect("output")
    by_check = {check: (status, detail) for check, status, detail in rows}
    assert usable
    assert by_check["docker engine"][0] == "ok"
    assert by_check["cgroup (host)"][1] in ("v1", "v2")
    assert by_check["docker cap: cpus (CFS quota)"][0] == "ok"
    assert "process caps: cpus, memory" in by_check
    gpu_status, gpu_detail = by_check["gpus (NVML)"]
    assert gpu_status == "ok" or gpu_detail.startswith("not available: ")
    assert "free of" in by_check["disk: output"][1] and "free of" in by_check["disk: docker root"][1]
    assert _run(argparse.Namespace(output="output")) == 0
    assert "usable: yes" in capsys.readouterr().out


def test_clean_dry_run_lists_without_removing(capsys: pytest.CaptureFixture[str]) -> None:
    from tui_profiler.commands.clean import _run

    assert _run(argparse.Namespace(dry_run=True)) == 0
    assert "would remove" in capsys.readouterr().out
