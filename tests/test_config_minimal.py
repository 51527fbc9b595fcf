"""A minimal preset of every input kind with every built-in request template is accepted, planned and
rendered into its first request, with nothing written that has a default.

The kinds and templates come from the config model (`KINDS`, `BUILTIN_TEMPLATES`), so a new one is covered
here without a change. A minimal preset names the model, the input kind, the template, and only what a rule
demands without a default (a body input's files). No Docker, no server: the request is rendered, not sent.
A body input with a template that builds its own body (JSON) is the one pairing refused, in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tui_profiler.config import PresetError, load_preset, preset_from_dict
from tui_profiler.config.model import ALLOWED_ENCODINGS, KINDS, SOURCE_KINDS, InputConfig
from tui_profiler.config.request import BUILTIN_TEMPLATES
from tui_profiler.load.inputs import InputSpec
from tui_profiler.load.sources import open_sources
from tui_profiler.load.template import build_payload, template_for
from tui_profiler.plan import build_plan

# What a kind cannot do without (a rule with no default): written into its minimal preset.
REQUIRED_BY_RULE: dict[str, dict[str, Any]] = {"body": {"files": ["body.bin"]}}


def _write_preset(folder: Path, kind: str, template: str) -> Path:
    (folder / "body.bin").write_bytes(b"\x00\x01payload")
    table = {
        "model": "m",
        "input": {"kind": kind, **REQUIRED_BY_RULE.get(kind, {})},
        "request": {"template": template},
    }
    path = folder / "minimal.toml"
    path.write_text(tomli_w.dumps(table))
    return path


def test_every_kind_is_covered() -> None:
    """A kind that only validates with more than its kind is named in REQUIRED_BY_RULE, and exists."""
    assert set(REQUIRED_BY_RULE) <= set(KINDS)
    assert set(REQUIRED_BY_RULE) <= set(SOURCE_KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_the_encoding_default_follows_the_kind(kind: str) -> None:
    """Not given, the encoding is one the kind allows (text: 'text'; the others: raw bytes)."""
    data: dict[str, Any] = {"kind": kind, **REQUIRED_BY_RULE.get(kind, {})}
    inp = InputConfig.model_validate(data)
    assert inp.encoding in ALLOWED_ENCODINGS[kind]
    assert "encoding" not in inp.model_fields_set
    assert inp.encoding == ("text" if kind == "text" else "raw")


@pytest.mark.parametrize("template", list(BUILTIN_TEMPLATES))
@pytest.mark.parametrize("kind", KINDS)
def test_a_minimal_preset_validates_plans_and_renders(tmp_path: Path, kind: str, template: str) -> None:
    preset = load_preset(str(_write_preset(tmp_path, kind, template)), check_host=False)
    assert preset.input.kind == kind and preset.input.encoding in ALLOWED_ENCODINGS[kind]
    cells = build_plan(preset)
    assert cells
    first = cells[0]
    tpl = template_for(preset)
    if kind == "body" and tpl.body != "input":
        # a body file is sent as is: a template that builds its own body is refused, in one line
        with pytest.raises(PresetError, match=r": input\.kind: 'body' — .*body must be 'input'"):
            open_sources(preset)
        return
    sources = open_sources(preset)
    if sources is not None:
        payload = sources.prepare(
            preset,
            tpl,
            preset.model,
            scale=first.input_scale,
            token_len=first.token_len,
            output_len=first.output_len,
        ).first
    else:
        spec = InputSpec.for_cell(preset.input, scale=first.input_scale, token_len=first.token_len)
        payload = build_payload(spec, tpl, preset.model, first.output_len)
    assert payload.path.startswith("/")
    assert payload.method == tpl.method
    # the preset as the user wrote it (defaults left out) validates again to the same input
    written = preset.to_dict()
    assert "encoding" not in written["input"]
    assert preset_from_dict(written, str(tmp_path / "again.toml"), check_host=False).input == preset.input
