"""Every shipped preset measures something (its plan has cells), a plan with no cell is refused with the
reason, every field is settable with --set, and a `kind = "text"` preset is profiled end to end against a
local OpenAI-embeddings-shaped server (tests/foreign/openai_embeddings_server.py)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tui_profiler.config import PresetError, discover_presets, load_preset
from tui_profiler.config.errors import field_keys
from tui_profiler.config.overrides import apply_overrides, sections
from tui_profiler.load.template import template_for
from tui_profiler.plan import build_plan
from tui_profiler.session.store import recording

SERVER = Path(__file__).parent / "foreign" / "openai_embeddings_server.py"
SHIPPED = [i.name for i in discover_presets() if i.builtin]


@pytest.fixture(autouse=True)
def _user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUI_PROFILER_PRESETS", str(tmp_path / "user-presets"))


def test_the_examples_are_shipped() -> None:
    for name in ("examples/tei", "examples/tgi", "examples/openai-embeddings", "examples/tfserving", "smoke"):
        assert name in SHIPPED, SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_plans_at_least_one_cell(name: str) -> None:
    preset = load_preset(name, check_host=False)
    cells = build_plan(preset)
    assert len(cells) >= 1
    sizes = {c.token_len for c in cells} if preset.input.sized_by_tokens else {c.input_scale for c in cells}
    assert sizes == set(preset.input.sizes) and None not in sizes


def test_text_inputs_are_sized_by_token_lengths() -> None:
    preset = load_preset("examples/tei", check_host=False)
    assert preset.input.kind == "text" and preset.input.sized_by_tokens
    cells = build_plan(preset)
    assert [c.token_len for c in cells[:4]] == [16, 16, 64, 64]  # × concurrency 1, 4
    assert len(cells) == 4 * 2 * 2  # token lengths × concurrency × zipped resource configs


def test_a_plan_with_no_cell_is_a_preset_error_that_says_why() -> None:
    preset = load_preset("examples/tei", check_host=False)
    # validation refuses an empty axis ...
    with pytest.raises(PresetError) as info:
        load_preset("examples/tei", ["input.token_lens="], check_host=False)
    assert "input.token_lens: [] — " in str(info.value) and "not empty" in str(info.value)
    # ... and the plan refuses a preset that got past it (built without validation)
    hollow = preset.model_copy(update={"input": preset.input.model_copy(update={"token_lens": []})})
    with pytest.raises(PresetError) as info:
        build_plan(hollow)
    msg = str(info.value)
    assert "input.token_lens: [] — no input sizes: the plan has 0 cells" in msg and "\n" not in msg
    no_levels = preset.model_copy(update={"load": preset.load.model_copy(update={"concurrency": []})})
    with pytest.raises(PresetError, match=r"load\.concurrency: \[\] — no load levels"):
        build_plan(no_levels)


def test_setting_rates_or_concurrency_switches_the_loop() -> None:
    """smoke says mode = "closed": --set load.rates still means an open loop at those rates, and back."""
    smoke = load_preset("smoke", ["load.rates=2,8"], check_host=False)
    assert smoke.load.mode == "open" and smoke.load.rates == [2.0, 8.0]
    back = load_preset("smoke", ["load.rates=2", "load.concurrency=4"], check_host=False)
    assert back.load.mode == "closed" and back.load.concurrency == [4] and not back.load.rates


def test_every_field_is_settable_with_set() -> None:
    """Each key of each section is known to --set (a wrong value is the field's own one-line error, never
    'unknown key')."""
    for section, model in sections().items():
        for key in field_keys(model):
            path = f"{section}.{key}" if section else key
            try:
                apply_overrides({}, [f"{path}=1"])
            except PresetError as exc:  # pragma: no cover - the assertion says which
                pytest.fail(f"--set {path}: {exc}")


def test_documented_load_and_request_fields_through_set() -> None:
    p = load_preset(
        "smoke",
        [
            "load.transport=aiohttp",
            "load.processes=2",
            "load.timeout_s=5",
            "load.stable_ci.min_requests=5",
            "request.check.json_field=top5",
            "request.server_timing=false",
            "target.readiness.path=/ready",
            "target.image=example/img:1",
            "target.env.OMP_NUM_THREADS=2",
        ],
        check_host=False,
    )
    assert p.load.transport == "aiohttp" and p.load.processes == 2 and p.load.timeout_s == 5.0
    assert p.load.stable_ci is not None and p.load.stable_ci.min_requests == 5
    assert (
        p.target is not None
        and p.target.readiness.path == "/ready"
        and p.target.env == {"OMP_NUM_THREADS": "2"}
    )
    tpl = template_for(p)
    assert tpl.check.json_field == "top5" and tpl.server_timing is False
    with pytest.raises(PresetError) as info:
        load_preset("smoke", ["load.transport=h2"], check_host=False)
    assert "smoke.toml: load.transport: 'h2' — one of 'auto', 'raw', 'aiohttp'" in str(info.value)
    with pytest.raises(PresetError) as info:
        load_preset("smoke", ["load.arrival=poison"], check_host=False)
    assert "load.arrival: 'poison' — did you mean 'poisson'? one of 'constant', 'poisson'" in str(info.value)
    with pytest.raises(PresetError) as info:
        load_preset("smoke", ["load.transprot=raw"])
    assert str(info.value).startswith("--set: load.transprot: unknown key — did you mean 'transport'?")


def test_the_load_defaults_are_the_presets() -> None:
    from tui_profiler.config import LOAD_DEFAULTS
    from tui_profiler.load.patterns import LoadPattern, StopWhenStable

    pattern = LoadPattern()
    assert (
        (pattern.arrival, pattern.warmup, pattern.timeout_s, pattern.requests)
        == (
            LOAD_DEFAULTS.arrival,
            LOAD_DEFAULTS.warmup,
            LOAD_DEFAULTS.timeout_s,
            LOAD_DEFAULTS.requests,
        )
        == ("poisson", 2, 60.0, 20)
    )
    assert StopWhenStable().min_requests == 10


def test_a_cells_pattern_is_its_load_section_validated_once() -> None:
    """The load rules are the preset's: a pattern is built from a validated `[load]` and checks nothing."""
    from tui_profiler.config import LoadConfig, preset_from_dict
    from tui_profiler.load.patterns import LoadPattern, pattern_for

    with pytest.raises(PresetError) as info:
        preset_from_dict(
            {"model": "m", "load": {"mode": "open", "rates": [5.0], "processes": 2}},
            "p.toml",
            check_host=False,
        )
    assert "p.toml: load.processes: 2 — several client processes serve the closed loop only" in str(
        info.value
    )
    load = LoadConfig.model_validate(
        {"mode": "open", "rates": [5.0], "connections": 7, "arrival": "constant", "duration_s": 3.0}
    )
    pattern = pattern_for(load, concurrency=None, rate=5.0)
    assert pattern == LoadPattern.from_config(load, concurrency=None, rate=5.0)
    assert (pattern.mode, pattern.concurrency, pattern.rate, pattern.arrival) == ("open", 7, 5.0, "constant")
    assert (pattern.requests, pattern.duration_s, pattern.warmup) == (None, 3.0, load.warmup)
    shared = set(LoadConfig.model_fields) & {f.name for f in dataclasses.fields(LoadPattern)} - {
        "concurrency"
    }
    assert all(getattr(pattern, name) == getattr(load, name) for name in shared), shared
    closed = LoadPattern.from_config(LoadConfig(), concurrency=4, rate=None)
    assert (closed.mode, closed.concurrency, closed.rate) == ("closed", 4, None)


# ---------------------------------------------------------------------------------------- end to end


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def embeddings_server() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), str(port)], stdout=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the embeddings server never answered") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_text_preset_is_profiled_end_to_end(embeddings_server: str, tmp_path: Path) -> None:
    from tui_profiler.sweep import SweepRunner

    preset = load_preset(
        "examples/openai-embeddings",
        ["input.token_lens=16,128", "load.concurrency=1,2", "load.requests=4", "load.warmup=1"],
        check_host=False,
    )
    runner = SweepRunner(preset, output_dir=tmp_path, url=embeddings_server)
    assert len(runner.plan) == 2 * 2  # the url target has no resource configs: sizes × load levels
    events: list[object] = []
    finished = asyncio.run(runner.run(recording(events.append)))
    assert finished.status == "ok", [getattr(e, "message", "") for e in events]
    with open(Path(finished.session_dir) / "requests.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 * (1 + 4)  # each cell: one warm-up, four timed
    assert {r["token_len"] for r in rows} == {"16", "128"}
    assert all(r["http_status"] == "200" and r["status"] == "ok" for r in rows), rows[:2]
    sent = {int(r["token_len"]): int(r["bytes_sent"]) for r in rows}
    assert sent[128] > sent[16] > 0  # the text grows with the token length
    assert all(int(r["bytes_received"]) > 0 for r in rows)
    assert all(r["infer_ms"] == "" for r in rows)  # no Server-Timing: not available, never 0
