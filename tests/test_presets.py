"""Presets: the built-ins validate; bad presets give ONE line naming the file and the field; overrides,
discovery and saving work. No Docker needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_profiler.config import (
    PresetError,
    apply_overrides,
    discover_presets,
    load_preset,
    preset_from_dict,
    save_user_preset,
)
from tui_profiler.host import host_limits

GOOD = """
description = "test preset"
model = "mobilenet_v3_small"

[input]
scales = [0.5, 1.0]

[resources]
cpus = [1]
memory_gb = [1]

[load]
concurrency = [1]
requests = 3
"""


@pytest.fixture(autouse=True)
def _user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "user-presets"
    monkeypatch.setenv("TUI_PROFILER_PRESETS", str(d))
    return d


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(PresetError) as info:
        load_preset(str(path), overrides or [])
    msg = str(info.value)
    assert "\n" not in msg, f"not one line: {msg!r}"
    return msg


def test_builtin_presets_all_validate() -> None:
    infos = {i.name: i for i in discover_presets() if i.builtin}
    for name in (
        "smoke",
        "fcn_resnet50",
        "resnet50",
        "mobilenet_v3_small",
        "deeplabv3_resnet50",
        "ssdlite320_mobilenet_v3_large",
        "text_encoder",
        "torch_hub",
    ):
        assert name in infos, f"built-in preset {name} missing: {sorted(infos)}"
    for name, info in infos.items():
        if name.startswith("examples/"):
            continue  # foreign-server examples (LOAD helper) are checked by their own tests
        preset = load_preset(name)
        assert preset.name == name
        assert preset.path == info.path


def test_fcn_resnet50_is_the_reference_quick_start() -> None:
    p = load_preset("fcn_resnet50")
    assert p.model == "fcn_resnet50"
    assert p.input.base_size == [667, 1000]
    assert p.input.scales[0] == pytest.approx(0.1) and p.input.scales[-1] == pytest.approx(2.0)
    assert len(p.input.scales) == 20
    assert p.resources.pairing == "zip"
    assert all(m == 2 * c for c, m in zip(p.resources.cpus, p.resources.memory_gb, strict=True))


def test_text_encoder_uses_token_lengths() -> None:
    p = load_preset("text_encoder")
    assert p.input.kind == "tokens" and p.input.token_lens and not p.input.scales


def test_unknown_key_names_file_field_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("cpus = [1]", "cpu = [1]"))
    msg = error_of(path)
    assert msg.startswith(f"{path}: resources.cpu: unknown key — ")
    assert "did you mean 'cpus'" in msg


def test_unknown_top_level_section(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, GOOD + "\n[resource]\ncpus = 1\n"))
    assert ": resource: unknown key" in msg and "did you mean 'resources'" in msg


def test_top_level_key_after_a_section_is_explained(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, GOOD + "repetitions = 2\n"))
    assert "load.repetitions: unknown key" in msg and "top-level key" in msg


@pytest.mark.parametrize(
    ("old", "new", "field", "value"),
    [
        ("cpus = [1]", 'cpus = ["two"]', "resources.cpus", "'two'"),
        ("cpus = [1]", "cpus = [-1]", "resources.cpus", "-1.0"),
        ("cpus = [1]", "cpus = [0]", "resources.cpus", "0.0"),
        ("memory_gb = [1]", "memory_gb = [-2]", "resources.memory_gb", "-2.0"),
        ("requests = 3", "requests = 2.5", "load.requests", "2.5"),
        ("requests = 3", 'requests = "many"', "load.requests", "'many'"),
        ("concurrency = [1]", "concurrency = [0]", "load.concurrency", "0"),
        ('model = "mobilenet_v3_small"', 'model = "m"\nweights = "imagenet"', "weights", "'imagenet'"),
        ("scales = [0.5, 1.0]", "scales = []", "input.scales", "[]"),
        ("scales = [0.5, 1.0]", "scales = [0.5, true]", "input.scales[1]", "True"),
    ],
)
def test_bad_values_name_file_field_value(tmp_path: Path, old: str, new: str, field: str, value: str) -> None:
    path = write(tmp_path, GOOD.replace(old, new))
    msg = error_of(path)
    assert msg.startswith(f"{path}: {field}: {value} — "), msg


def test_caps_above_the_host_give_the_host_limit(tmp_path: Path) -> None:
    host = host_limits()
    msg = error_of(write(tmp_path, GOOD.replace("cpus = [1]", "cpus = [1, 100000]")))
    assert "resources.cpus: 100000.0 — at most" in msg and "this host's usable cores" in msg
    assert f"{host.cpus:g}" in msg
    msg = error_of(write(tmp_path, GOOD.replace("memory_gb = [1]", "memory_gb = [1e6]")))
    assert "resources.memory_gb: 1000000.0 — at most" in msg and "this host's memory" in msg


def test_gpus_above_the_host_say_why(tmp_path: Path) -> None:
    host = host_limits()
    msg = error_of(write(tmp_path, GOOD.replace("[load]", f"gpus = [{host.gpus + 1}]\n\n[load]")))
    assert "resources.gpus" in msg and host.gpu_reason.split(" (")[0] in msg


def test_broken_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("requests = 3", "requests = = 3"))
    msg = error_of(path)
    assert msg.startswith(f"{path}: line 14, column ")
    assert "not valid TOML — " in msg


def test_zip_pairing_needs_matching_lengths(tmp_path: Path) -> None:
    text = GOOD.replace("cpus = [1]", "cpus = [0.5, 1, 2]").replace(
        "memory_gb = [1]", 'memory_gb = [1, 2]\npairing = "zip"'
    )
    msg = error_of(write(tmp_path, text))
    assert "resources.memory_gb" in msg and "pairing 'zip'" in msg


def test_requests_and_duration_are_alternatives(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, GOOD.replace("requests = 3", "requests = 3\nduration_s = 5")))
    assert "load.duration_s" in msg and "not both" in msg
    # an override of one drops the other
    p = load_preset(str(write(tmp_path, GOOD, "q.toml")), ["load.duration_s=2"])
    assert p.load.duration_s == 2.0 and p.load.requests is None


def test_open_loop_needs_rates(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, GOOD.replace("concurrency = [1]", 'mode = "open"')))
    assert "load.rates" in msg
    p = load_preset(str(write(tmp_path, GOOD, "q.toml")), ["load.rates=0.5,2"])
    assert p.load.mode == "open" and p.load.rates == [0.5, 2.0]


def test_overrides_coerce_types_and_split_lists(tmp_path: Path) -> None:
    p = load_preset(
        "smoke",
        [
            "resources.cpus=0.5,2",
            "resources.cpuset=true",
            "load.requests=7",
            "input.scales=0.25",
            "repetitions=2",
            "resources.threads=1",
        ],
    )
    assert p.resources.cpus == [0.5, 2.0]
    assert p.resources.cpuset is True
    assert p.load.requests == 7
    assert p.input.scales == [0.25]
    assert p.repetitions == 2
    assert p.resources.threads == "1"


def test_bad_override_is_one_line() -> None:
    with pytest.raises(PresetError) as info:
        load_preset("smoke", ["resources.cpu=2"])
    assert str(info.value).startswith("--set: resources.cpu: unknown key — did you mean 'cpus'?")
    with pytest.raises(PresetError) as info:
        load_preset("smoke", ["resources.cpus=abc"])
    assert "resources.cpus: 'abc'" in str(info.value)
    with pytest.raises(PresetError) as info:
        apply_overrides({}, ["nonsense"])
    assert "section.key=value" in str(info.value)


def test_unknown_preset_name_suggests() -> None:
    with pytest.raises(PresetError) as info:
        load_preset("smok")
    assert "did you mean 'smoke'" in str(info.value)


def test_request_template_errors_come_through_one_line(tmp_path: Path) -> None:
    pytest.importorskip("tui_profiler.load.template")
    path = write(tmp_path, GOOD + '\n[request]\npath = "/predict/{nope}"\n')
    msg = error_of(path)
    assert msg.startswith(f"{path}: request.path: ") and "{nope}" in msg


def test_user_folder_shadows_builtin_and_save_round_trips(_user_dir: Path) -> None:
    d = load_preset("smoke").to_dict()
    d["description"] = "my smoke"
    d["load"]["requests"] = 4
    path = save_user_preset(d, "smoke")
    assert path.parent == _user_dir and path.is_file()
    infos = [i for i in discover_presets() if i.name == "smoke"]
    assert len(infos) == 1 and not infos[0].builtin
    p = load_preset("smoke")
    assert p.description == "my smoke" and p.load.requests == 4 and p.path == path
    save_user_preset(d, "mine")
    assert any(i.name == "mine" and not i.builtin for i in discover_presets())


def test_save_rejects_an_invalid_preset_before_writing(_user_dir: Path) -> None:
    d = load_preset("smoke").to_dict()
    d["resources"]["cpus"] = [-1]
    with pytest.raises(PresetError):
        save_user_preset(d, "broken")
    assert not (_user_dir / "broken.toml").exists()
    with pytest.raises(PresetError):
        save_user_preset(load_preset("smoke").to_dict(), "../escape")


def test_host_limits_are_plausible() -> None:
    h = host_limits()
    assert 0 < h.cpus <= (os.cpu_count() or 1)
    assert h.memory_gb > 0
    assert h.gpus >= 0 and h.gpu_reason
    if h.gpus == 0:
        assert "not available" in h.gpu_reason  # said plainly, not a silent 0


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(-5, 5), max_size=3),
)
_keys = st.sampled_from(
    [
        "model",
        "weights",
        "repetitions",
        "input",
        "resources",
        "load",
        "target",
        "cpus",
        "scales",
        "concurrency",
        "requests",
        "memory_gb",
        "kind",
        "pairing",
        "mode",
        "bogus",
    ]
)
_tables = st.recursive(_values, lambda inner: st.dictionaries(_keys, inner, max_size=5), max_leaves=12)


@pytest.mark.slow  # 200 examples
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _tables, max_size=6))
def test_fuzzed_presets_give_a_preset_or_one_line(d: dict) -> None:
    try:
        preset_from_dict(d, "fuzz.toml")
    except PresetError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz.toml: ") and "\n" not in msg and " — " in msg
