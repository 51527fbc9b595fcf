"""Readiness against a server whose health endpoint answers before its model is loaded.

The server (tests/foreign/lazy_model) answers GET /health 200 as soon as it listens, while a worker thread
"loads the model" (real CPU work, no sleep); until then POST /predict answers 503 or holds the request.
It reports its own load duration, the requests it refused and how long held requests waited, so the tests
compare the profiler's numbers with the server's own rather than with fixed thresholds.

- `wait_ready` directly, the server as a local process: an `http` probe passes while the model is still
  loading; one that requires `model_state = "READY"` and a `request` probe wait for the model; a check the
  answer never passes times out naming what the answer said.
- The whole sweep on the real engine (the image built from the folder's Dockerfile through `[target]
  dockerfile`): with an `http` probe the model load lands in `first_request` (held) or in failed requests
  (503s); with `kind = "request"` (or the JSON field) `ready` holds it and every request is served warm.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tui_profiler.config import PresetError, load_preset, preset_from_dict
from tui_profiler.config.request import ResponseCheck
from tui_profiler.runtime.base import ProbeRequest, ReadinessProbe, RunningTarget, TargetFailed
from tui_profiler.runtime.common import free_port, wait_ready
from tui_profiler.session.schema import CellStatus
from tui_profiler.session.store import recording

REPO = Path(__file__).resolve().parent.parent
LAZY = REPO / "tests" / "foreign" / "lazy_model"
PREDICT = ProbeRequest(
    method="POST",
    path="/predict",
    headers={"Content-Type": "application/octet-stream"},
    body=b"\x00" * 64,
    check=ResponseCheck(status=(200,), json_field="predictions"),
    timeout_s=60.0,
)


async def _alive() -> TargetFailed | None:
    return None


def _health(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/health", timeout=10) as answer:
        return dict(json.load(answer))


class LazyServer:
    """The lazy server as a local process; `spawned` is perf_counter() just before it was started."""

    def __init__(self, rounds: int, while_loading: str = "503") -> None:
        self.port = free_port()
        self.spawned = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, str(LAZY / "server.py"), str(self.port), "127.0.0.1"],
            env={**os.environ, "LOAD_ROUNDS": str(rounds), "WHILE_LOADING": while_loading},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture()
def lazy() -> Iterator[LazyServer]:
    server = LazyServer(rounds=1_000_000)
    yield server
    server.close()


@pytest.fixture()
def quick() -> Iterator[LazyServer]:
    """The same server with a model that loads in about a millisecond, already loaded: the tests' short
    probe timeouts then time only the probe, not this process's start on a busy machine."""
    server = LazyServer(rounds=1_000)
    deadline = time.monotonic() + 60
    while True:
        try:
            if _health(server.url)["model_state"] == "READY":
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the quick lazy server never became ready"
        time.sleep(0.05)
    yield server
    server.close()


def test_an_http_probe_passes_while_the_model_still_loads(lazy: LazyServer) -> None:
    probe = ReadinessProbe(kind="http", path="/health", timeout_s=30)
    result = asyncio.run(wait_ready("127.0.0.1", lazy.port, probe, _alive))
    assert result.body is not None and result.body["model_state"] == "LOADING"


def test_an_http_probe_with_a_json_field_waits_for_its_value(lazy: LazyServer) -> None:
    probe = ReadinessProbe(
        kind="http", path="/health", json_field="model_state", json_value="READY", timeout_s=60
    )
    result = asyncio.run(wait_ready("127.0.0.1", lazy.port, probe, _alive))
    waited = time.perf_counter() - lazy.spawned
    assert result.body is not None and result.body["model_state"] == "READY"
    assert result.polls > 1  # it was asked again while the field said LOADING
    assert waited >= result.body["load_s"]  # the whole load happened before it said ready


def test_a_request_probe_waits_until_the_model_answers(lazy: LazyServer) -> None:
    probe = ReadinessProbe(kind="request", path="/health", timeout_s=60)
    result = asyncio.run(wait_ready("127.0.0.1", lazy.port, probe, _alive, request=PREDICT))
    waited = time.perf_counter() - lazy.spawned
    report = _health(lazy.url)
    assert report["model_state"] == "READY" and report["refused"] >= 1  # retried through the 503s
    assert result.polls >= report["refused"] + 1  # each 503 was one of its tries, then the one that passed
    assert waited >= report["load_s"]
    # after the request passed, the runtime read the health document (the server's own facts)
    assert result.body is not None and result.body["model_state"] == "READY"


def test_a_request_probe_applies_the_templates_check(quick: LazyServer) -> None:
    probe = ReadinessProbe(kind="request", timeout_s=1.5)
    wrong_field = ProbeRequest(
        method="POST", path="/predict", headers={}, body=b"x", check=ResponseCheck(json_field="outputs")
    )
    with pytest.raises(TargetFailed) as failed:
        asyncio.run(wait_ready("127.0.0.1", quick.port, probe, _alive, request=wrong_field))
    assert failed.value.status == CellStatus.TIMEOUT
    assert "request probe; last: check: no field 'outputs' in the answer" in failed.value.reason
    wrong_status = ProbeRequest(
        method="POST", path="/predict", headers={}, body=b"x", check=ResponseCheck(status=(201,))
    )
    with pytest.raises(TargetFailed) as failed:
        asyncio.run(wait_ready("127.0.0.1", quick.port, probe, _alive, request=wrong_status))
    assert "last: HTTP 200 (expected 201)" in failed.value.reason


def test_an_http_probe_names_the_value_it_waited_for(quick: LazyServer) -> None:
    probe = ReadinessProbe(
        kind="http", path="/health", json_field="model_state", json_value="AVAILABLE", timeout_s=1.5
    )
    with pytest.raises(TargetFailed) as failed:
        asyncio.run(wait_ready("127.0.0.1", quick.port, probe, _alive))
    assert "last: model_state is 'READY' (expected 'AVAILABLE')" in failed.value.reason
    missing = ReadinessProbe(kind="http", path="/health", json_field="models.0.state", timeout_s=1.5)
    with pytest.raises(TargetFailed) as failed:
        asyncio.run(wait_ready("127.0.0.1", quick.port, missing, _alive))
    assert "last: no field 'models.0.state' in the answer" in failed.value.reason


def test_a_request_probe_without_a_request_is_refused() -> None:
    with pytest.raises(TargetFailed, match="needs the preset's request"):
        asyncio.run(wait_ready("127.0.0.1", 9, ReadinessProbe(kind="request"), _alive))


def test_readiness_fields_are_checked_in_the_preset() -> None:
    def error(readiness: dict[str, Any]) -> str:
        with pytest.raises(PresetError) as exc:
            preset_from_dict({"model": "resnet50", "target": {"readiness": readiness}}, "p.toml")
        return str(exc.value)

    assert error({"json_value": "READY"}) == (
        "p.toml: target.readiness.json_value: 'READY' — json_value needs json_field (the field to compare)"
    )
    assert error({"kind": "request", "json_field": "state"}).startswith(
        "p.toml: target.readiness.json_field: 'state' — only for kind 'http'"
    )
    assert error({"json_field": "a..b"}).startswith("p.toml: target.readiness.json_field: 'a..b' — a dotted")
    assert error({"json_field": "a", "json_value": [1]}) == (
        "p.toml: target.readiness.json_value: [1] — a string, number or boolean (one value, not a list)"
    )
    assert "did you mean 'request'?" in error({"kind": "reqest"})
    ok = ReadinessProbe(json_field="ready", json_value=1)
    assert ok.json_matches(1) and ok.json_matches(1.0) and not ok.json_matches(True)


def test_the_request_probe_is_the_presets_smallest_request() -> None:
    from tui_profiler.plan import build_plan
    from tui_profiler.sweep import targets

    preset = load_preset("smoke", ["target.readiness.kind=request"], check_host=False)
    probe = targets.probe_request(preset)
    assert probe is not None and (probe.method, probe.path) == ("POST", "/predict")
    assert probe.headers["X-Tensor-Shape"] == "1,3,112,112"  # scale 0.5 of 224 x 224: the smallest
    assert len(probe.body) == 3 * 112 * 112 * 4 and probe.check.status == (200,)
    spec = targets.target_spec(preset, build_plan(preset)[0], image="img", session_id="s")
    assert spec.probe_request == probe and spec.readiness.kind == "request"
    # a [target] that only sets the readiness is still our server, serving the preset's model
    assert spec.command is not None and spec.command[:2] == ["--model", "mobilenet_v3_small"]
    assert targets.probe_request(load_preset("smoke", check_host=False)) is None


@pytest.mark.server
def test_our_server_through_the_process_runtime_with_a_request_probe() -> None:
    """Our model server answers /healthz only once loaded, so `request` changes little for it; the
    health document read after the request passed still splits the wait with the server's timeline."""
    pytest.importorskip("torch")
    from tui_profiler.plan import build_plan
    from tui_profiler.runtime.process import ProcessRuntime
    from tui_profiler.sweep import targets

    preset = load_preset(
        "smoke",
        ["target.readiness.kind=request", "resources.cpus=2", "resources.memory_gb=4"],
        check_host=False,
    )
    spec = targets.target_spec(
        preset, build_plan(preset)[0], image="", session_id=f"test-ready-{secrets.token_hex(3)}"
    )
    phases: dict[str, float | None] = {}

    async def main() -> RunningTarget:
        runtime = ProcessRuntime()
        target = await runtime.start(spec, on_phase=lambda p, s, d: phases.__setitem__(p, s))
        await runtime.stop(target)
        return target

    target = asyncio.run(main())
    assert target.facts["ready_probe"] == "request" and target.facts["ready_polls"] >= 1
    assert isinstance(target.facts["server_runtime"], dict)  # from /healthz, read after the request
    assert phases["server_boot"] is not None and phases["model_load"] is not None
    assert phases["ready"] is not None and phases["ready"] >= 0


def test_every_example_preset_says_which_probe_it_uses_and_why() -> None:
    examples = sorted((REPO / "presets" / "examples").glob("*.toml"))
    assert examples
    for path in examples:
        text = path.read_text()
        preset = load_preset(str(path), check_host=False)
        kind = preset.target.readiness.kind if preset.target else "http"
        comment = [line for line in text.splitlines() if line.startswith("# readiness:")]
        assert comment, f"{path.name}: no '# readiness: ...' line saying which probe and why"
        assert f"'{kind}'" in comment[0], f"{path.name}: the comment does not name the probe {kind!r}"


# ------------------------------------------------------------------------------ the sweep, real engine


def _preset(tmp_path: Path, readiness: str, while_loading: str) -> Path:
    path = tmp_path / "lazy.toml"
    path.write_text(f"""
description = "test: a server whose health answers before its model is loaded"

[target]
dockerfile = "{LAZY / "Dockerfile"}"
port = 8080
env = {{ WHILE_LOADING = "{while_loading}", LOAD_ROUNDS = "1000000" }}
readiness = {readiness}

[input]
kind = "tensor"
base_size = [16]
scales = [1.0]

[request]
template = "tui-profiler"
check = {{ json_field = "predictions" }}

[resources]
cpus = [1]

[load]
concurrency = [1]
requests = 8
warmup = 1
timeout_s = 60
""")
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


HTTP = '{ kind = "http", path = "/health", timeout_s = 120 }'
HTTP_FIELD = (
    '{ kind = "http", path = "/health", json_field = "model_state", json_value = "READY", timeout_s = 120 }'
)
REQUEST = '{ kind = "request", path = "/health", timeout_s = 120 }'


def _sweep(tmp_path: Path, readiness: str, while_loading: str) -> tuple[dict[str, str], list[dict], dict]:
    """Run the preset's sweep on the docker runtime; (its cell row, its request rows, the server's own
    report read just before the container was removed)."""
    from tui_profiler.runtime.docker import DockerRuntime
    from tui_profiler.sweep import SweepRunner

    reports: list[dict[str, Any]] = []

    class ReportingDocker(DockerRuntime):
        """The docker runtime, asking the target for its own report before stopping it."""

        async def stop(self, target: RunningTarget) -> dict[str, Any]:
            reports.append(await asyncio.to_thread(_health, target.base_url))
            return await super().stop(target)

    preset = load_preset(str(_preset(tmp_path, readiness, while_loading)))
    runner = SweepRunner(preset, runtime=ReportingDocker(), output_dir=tmp_path / "out")
    finished = asyncio.run(runner.run(recording()))
    assert runner.session_dir is not None
    (cell,) = _rows(runner.session_dir / "cells.csv")
    requests = _rows(runner.session_dir / "requests.csv")
    assert len(reports) == 1 and finished.n_cells == 1
    return cell, requests, reports[0]


@pytest.mark.docker
def test_with_an_http_probe_the_held_first_request_pays_the_model_load(tmp_path: Path) -> None:
    cell, requests, report = _sweep(tmp_path, HTTP, "block")
    assert all(r["http_status"] == "200" for r in requests)
    # the server held the first request until the model was loaded (only that one: one worker), and the
    # wait it measured is inside the first_request phase
    (waited_s,) = report["waits_s"]
    assert float(cell["first_request_s"]) >= waited_s > 0


@pytest.mark.docker
def test_with_an_http_probe_early_requests_fail(tmp_path: Path) -> None:
    cell, requests, report = _sweep(tmp_path, HTTP, "503")
    assert requests[0]["http_status"] == "503" and requests[0]["status"] == "http_error"  # while loading
    assert int(cell["errors"]) >= 1 and report["refused"] >= 1


@pytest.mark.docker
@pytest.mark.parametrize(
    ("readiness", "while_loading"), [(REQUEST, "503"), (REQUEST, "block"), (HTTP_FIELD, "503")]
)
def test_a_probe_that_waits_for_the_model_puts_its_load_in_ready(
    tmp_path: Path, readiness: str, while_loading: str
) -> None:
    cell, requests, report = _sweep(tmp_path, readiness, while_loading)
    assert cell["status"] == "ok" and cell["errors"] == "0"
    assert all(r["http_status"] == "200" and r["status"] == "ok" for r in requests)
    # none of the timed requests waited for the model (a held probe try is the probe's, not ours)
    assert len(report["waits_s"]) == (1 if (readiness, while_loading) == (REQUEST, "block") else 0)
    if readiness == REQUEST and while_loading == "503":
        assert report["refused"] >= 1  # the probe's own tries while the model loaded, none of ours
    # the server's own load duration is inside the cold start, before any timed request
    assert cell["server_boot_s"] == "" and cell["model_load_s"] == ""  # this server reports no timeline
    assert float(cell["ready_s"]) >= report["load_s"]
