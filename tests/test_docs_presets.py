"""docs/presets.md documents every preset field the config model declares, with its default and choices.

The config model (`tui_profiler.config`, pydantic v2) is walked through `model_fields` from `Preset` down:
each table (a model class) has a `### ` heading under "## Fields" (`### Top level`, `` ### `[load]` ``, ...)
whose table has one row per key, `| `key` | default | allowed |`. A row's default, when it starts with a
code span, is that TOML value and must equal the declared default; a default cell that starts with words
("not set", "not capped") stands for None. Every string choice of a `Literal` field is named in its row.
A key inherited from a base shared with another documented table (e.g. the template fields of
`[request]` and `[request.template]`) is documented once. Rows for keys the model does not declare fail too.
"""

from __future__ import annotations

import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tui_profiler.config import Preset
from tui_profiler.config.types import Section

PRESETS_DOC = Path(__file__).resolve().parent.parent / "docs" / "presets.md"


# -- the model -------------------------------------------------------------------------------------------


def _walk_types(tp: Any) -> typing.Iterator[Any]:
    """`tp` and every type inside it (Annotated, Optional, unions, lists, dicts)."""
    yield tp
    for arg in get_args(tp):
        if isinstance(arg, type) or get_args(arg) or get_origin(arg) is not None:
            yield from _walk_types(arg)


def models_in(fi: FieldInfo) -> list[type[BaseModel]]:
    return [t for t in _walk_types(fi.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]


def choices_of(fi: FieldInfo) -> list[str]:
    return [
        c
        for t in _walk_types(fi.annotation)
        if get_origin(t) is Literal
        for c in get_args(t)
        if isinstance(c, str)
    ]


def tables(root: type[BaseModel]) -> dict[type[BaseModel], str]:
    """Every table of the model by its first dotted name ("" is the top level), breadth first."""
    found: dict[type[BaseModel], str] = {root: ""}
    queue = [root]
    while queue:
        model = queue.pop(0)
        for name, fi in model.model_fields.items():
            key = fi.alias or name
            for sub in models_in(fi):
                if sub not in found:
                    found[sub] = f"{found[model]}.{key}" if found[model] else key
                    queue.append(sub)
    return found


def _keys(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A table's fields by the key a file writes (the alias where one is declared)."""
    return {fi.alias or name: fi for name, fi in model.model_fields.items()}


def declared_default(fi: FieldInfo) -> Any:
    return fi.get_default(call_default_factory=True, validated_data={})


# -- the page --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    default: str
    text: str


def documented(text: str) -> dict[str, dict[str, Row]]:
    """The rows of each `### ` table under '## Fields', by table name ("" for 'Top level')."""
    m = re.search(r"^## Fields\s*$(.*?)(?=^## )", text, re.S | re.M)
    assert m, "docs/presets.md has no '## Fields' section"
    out: dict[str, dict[str, Row]] = {}
    for heading, body in re.findall(r"^### (.*?)\s*$(.*?)(?=^### |\Z)", m.group(1), re.S | re.M):
        hm = re.fullmatch(r"`\[([\w.]+)\]`", heading.strip())
        name = hm.group(1) if hm else ("" if heading.strip().lower() == "top level" else heading.strip())
        rows = {}
        for line in body.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            km = re.fullmatch(r"`(\w+)`", cells[0]) if len(cells) >= 3 else None
            if km:
                rows[km.group(1)] = Row(km.group(1), cells[1], line)
        out[name] = rows
    return out


def _code_words(text: str) -> set[str]:
    return {w for span in re.findall(r"`([^`]*)`", text) for w in re.findall(r"[\w-]+", span)}


def _default_problem(row: Row, fi: FieldInfo) -> str | None:
    if fi.is_required():  # no default at all: the page must say so
        return (
            None if row.default == "(required)" else f"default: documented {row.default!r}, declared required"
        )
    want = declared_default(fi)
    if isinstance(want, BaseModel):
        return None  # a table: its own fields are checked under its heading
    if want is None or want == [None]:
        if row.default.startswith("`"):
            return f"default: documented {row.default}, declared None (write it in words: 'not set')"
        return None
    m = re.match(r"`([^`]*)`", row.default)
    if not m:
        return f"default: documented {row.default!r}, declared {want!r} (start the cell with `value`)"
    try:
        got = tomllib.loads(f"v = {m.group(1)}")["v"]
    except tomllib.TOMLDecodeError:
        return f"default: `{m.group(1)}` is not a TOML value"
    if got != want:
        return f"default: documented {got!r}, declared {want!r}"
    return None


def problems(root: type[BaseModel], text: str) -> list[str]:
    """Every way the page and the model disagree, one line each."""
    docs = documented(text)
    found = tables(root)
    out = []
    for model, name in found.items():
        title = f"[{name}]" if name else "top level"
        if name not in docs:
            out.append(f"{title}: no '### `[{name}]`' heading" if name else "no '### Top level' heading")
            continue
        rows = docs[name]
        keys = _keys(model)
        for key, fi in keys.items():
            row = rows.get(key)
            if row is None:
                shared = [
                    other
                    for other in found
                    if other is not model
                    and key in docs.get(found[other], {})
                    and any(
                        key in _keys(base) and issubclass(other, base)
                        for base in model.__mro__[1:]
                        if isinstance(base, type)
                        and issubclass(base, BaseModel)
                        and base not in (BaseModel, Section)
                    )
                ]
                if not shared:
                    out.append(f"{title} {key}: not documented")
                continue
            problem = _default_problem(row, fi)
            if problem:
                out.append(f"{title} {key}: {problem}")
            missing = [c for c in choices_of(fi) if c not in _code_words(row.text)]
            if missing:
                out.append(f"{title} {key}: choices not named: {', '.join(missing)}")
        for key in rows:
            if key not in keys:
                out.append(f"{title} {key}: documented but not a field of {model.__name__}")
    return out


def test_every_preset_field_is_documented_with_its_default_and_choices() -> None:
    assert problems(Preset, PRESETS_DOC.read_text(encoding="utf-8")) == []


def test_the_checker_catches_a_missing_field_a_wrong_default_and_a_stale_row() -> None:
    """The checker itself, on a small model and a page that gets each thing wrong once."""

    class Inner(Section):
        mode: Literal["fast", "slow"] = "fast"

    class Outer(Section):
        size: int = 3
        note: str | None = None
        inner: Inner = Inner()

    page = (
        "## Fields\n### Top level\n| key | default | allowed |\n|---|---|---|\n"
        "| `size` | `4` | an integer |\n| `inner` | the defaults | a table |\n| `gone` | `1` | - |\n"
        '### `[inner]`\n| key | default | allowed |\n|---|---|---|\n| `mode` | `"fast"` | `fast` |\n'
        "## Errors\n"
    )
    assert problems(Outer, page) == [
        "top level size: default: documented 4, declared 3",
        "top level note: not documented",
        "top level gone: documented but not a field of Outer",
        "[inner] mode: choices not named: slow",
    ]
