"""Issue 7, bad input: preset FILES fuzzed with hypothesis and fed to the real CLI (`tui-profiler presets
validate`, in-process through `tui_profiler.cli.main`, and a few through a subprocess, plus `run`):
wrong types, negative and huge caps, unknown keys, broken TOML. Each answer is a verdict — a valid preset,
or ONE line naming the file — never a traceback. The number of cases tried is printed."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_profiler.cli import main as cli_main

pytestmark = pytest.mark.slow  # hundreds of fuzzed preset files, and a subprocess per bad preset
REPO = Path(__file__).resolve().parent.parent
SMOKE = (REPO / "presets" / "smoke.toml").read_text()
BASE: dict[str, Any] = {
    "description": "fuzz base",
    "model": "mobilenet_v3_small",
    "weights": "random",
    "repetitions": 1,
    "input": {"kind": "image", "base_size": [224, 224], "scales": [0.5, 1.0], "encoding": "raw"},
    "resources": {"cpus": [1], "memory_gb": [2], "gpus": [0], "pairing": "grid", "threads": "auto"},
    "load": {"mode": "closed", "concurrency": [1], "requests": 5, "warmup": 1, "timeout_s": 30},
}
FIELDS = [(s, k) for s, sec in BASE.items() if isinstance(sec, dict) for k in sec] + [
    (None, k) for k, v in BASE.items() if not isinstance(v, dict)
]
COUNTS: Counter[str] = Counter()

_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([-1, 0, -0.5, 1e308, 1e-300, 10**12, 2**31]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
_values = st.one_of(
    _scalars, st.lists(_scalars, max_size=4), st.dictionaries(st.text(max_size=5), _scalars, max_size=2)
)
_unknown_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)


@pytest.fixture(autouse=True)
def _user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUI_PROFILER_PRESETS", str(tmp_path / "user-presets"))


def _validate_in_process(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `presets validate PATH` in-process; the verdict is 'valid' or 'invalid' (checked one-line)."""
    capsys.readouterr()
    try:
        rc = cli_main(["presets", "validate", str(path)])
    except SystemExit as exc:  # argparse may exit; anything else propagating is a traceback: a failure
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert rc in (0, 1), (rc, out, err)
    if rc == 0:
        assert out.strip() == "1 valid, 0 invalid" and not err.strip(), (out, err)
        return "valid"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"not one line: {err!r}"
    assert lines[0].startswith(f"{path}: ") or lines[0].startswith(f"{path.name}: "), lines[0]
    assert out.strip() == "0 valid, 1 invalid"
    return "invalid"


def _mutated(draw: Any) -> dict[str, Any]:
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "unknown", "drop", "section"]))
        section, key = draw(st.sampled_from(FIELDS))
        table = d if section is None else d.get(section)
        if not isinstance(table, dict):
            continue  # that section was already replaced by a non-table
        if kind == "value":
            table[key] = draw(_values)
        elif kind == "unknown":
            table[draw(_unknown_keys)] = draw(_values)
        elif kind == "drop":
            table.pop(key, None)
        else:
            d[section or "load"] = draw(_values)  # a section that is not a table
    return d


@st.composite
def preset_docs(draw: Any) -> dict[str, Any]:
    return _mutated(draw)


def test_fuzzed_preset_files_give_one_line_or_a_preset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counts: Counter[str] = Counter()

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(preset_docs())
    def check(doc: dict[str, Any]) -> None:
        path = tmp_path / "fuzz.toml"
        try:
            text = tomli_w.dumps(doc)
        except (TypeError, ValueError):
            counts["unwritable"] += 1  # e.g. a dict key TOML cannot hold; not a preset file at all
            return
        path.write_text(text)
        counts[_validate_in_process(path, capsys)] += 1

    check()
    COUNTS.update({f"structured_{k}": v for k, v in counts.items()})
    with capsys.disabled():
        print(f"\npreset file fuzz (structured): {dict(counts)}")
    assert counts["invalid"] > 100  # the generator really produced bad presets


def test_fuzzed_broken_toml_gives_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    counts: Counter[str] = Counter()

    @settings(
        max_examples=250,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        st.integers(0, 2**32 - 1),
        st.integers(1, 6),
        st.sampled_from(["insert", "delete", "replace", "truncate", "binary"]),
    )
    def check(seed: int, n_edits: int, how: str) -> None:
        rnd = random.Random(seed)
        data = bytearray(SMOKE.encode())
        for _ in range(n_edits):
            i = rnd.randrange(len(data))
            if how == "insert":
                data[i:i] = rnd.choice([b"[", b"]", b"=", b'"', b"\n", b"{", b"\x00", b"\xff", b"[[x]]\n"])
            elif how == "delete":
                del data[i : i + rnd.randint(1, 8)]
            elif how == "replace":
                data[i] = rnd.randrange(256)
            elif how == "truncate":
                del data[i:]
                break
            else:
                data[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
        path = tmp_path / "broken.toml"
        path.write_bytes(bytes(data))
        counts[_validate_in_process(path, capsys)] += 1

    check()
    COUNTS.update({f"toml_{k}": v for k, v in counts.items()})
    with capsys.disabled():
        print(f"\npreset file fuzz (broken TOML bytes): {dict(counts)}")
    assert counts["invalid"] > 100


EXTREMES = {
    "negative_cpus": ("cpus = [0.5, 2]", "cpus = [-1]"),
    "huge_cpus": ("cpus = [0.5, 2]", "cpus = [100000]"),
    "huge_memory": ("memory_gb = [1, 4]", "memory_gb = [1e308, 1]"),
    "nan_scale": ("scales = [0.5, 1.0, 2.0]", "scales = [nan]"),
    "string_requests": ("requests = 12", 'requests = "twelve"'),
    "unknown_key": ("timeout_s = 60", "timeout_s = 60\nspeed = 11"),
    "broken_toml": ("[load]", "[load"),
    "not_utf8": ('description = "', 'description = "\xff\xfe'),
}


@pytest.mark.parametrize("name", list(EXTREMES))
def test_bad_preset_through_a_subprocess_is_one_line(tmp_path: Path, name: str) -> None:
    old, new = EXTREMES[name]
    assert old in SMOKE
    path = tmp_path / f"{name}.toml"
    text = SMOKE.replace(old, new, 1)
    path.write_bytes(text.encode("latin-1") if name == "not_utf8" else text.encode())
    for args in (
        ["presets", "validate", str(path)],
        ["run", str(path), "--headless", "--output", str(tmp_path)],
    ):
        res = subprocess.run(
            [sys.executable, "-m", "tui_profiler", *args],
            capture_output=True,
            text=True,
            cwd=str(REPO),
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert "Traceback" not in res.stdout + res.stderr, res.stderr
        assert res.returncode == (1 if args[0] == "presets" else 2), (args, res.returncode, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path.name) in lines[0], res.stderr
    assert not any(p.is_dir() for p in tmp_path.iterdir()), "a bad preset must not create a session folder"
    COUNTS["subprocess"] += 2
