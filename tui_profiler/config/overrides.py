"""`--set section.key=value` overrides, driven by the preset model's own fields: every field is settable,
its text is read as the field's type (lists by comma), and validation proper happens afterwards."""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterable
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tui_profiler.config.errors import (
    UNKNOWN_KEY,
    UNKNOWN_SECTION,
    PresetError,
    field_keys,
    field_named,
    list_item,
    model_in,
    strip_annotation,
    suggest,
)
from tui_profiler.config.model import Preset

SOURCE = "--set"
USAGE = "section.key=value, e.g. resources.cpus=0.5,2"
_INT = re.compile(r"[+-]?\d+")


def sections(model: type[BaseModel] = Preset, prefix: str = "") -> dict[str, type[BaseModel]]:
    """Every table of a preset by its dotted name ("" is the top level)."""
    found = {prefix: model}
    for key in field_keys(model):
        fi = field_named(model, key)
        sub = model_in(fi.annotation) if fi is not None else None
        if sub is not None:
            found.update(sections(sub, f"{prefix}.{key}" if prefix else key))
    return found


def _free_table(fi: FieldInfo) -> bool:
    """A field that is a table of the user's own keys (env, headers, vars, json, ...)."""
    bare, _ = strip_annotation(fi.annotation)
    return bare is dict or get_origin(bare) is dict or bare is Any


def _field_for(parts: list[str], key: str) -> tuple[FieldInfo | None, int]:
    """The field a dotted key sets, and how many parts name it (the rest are keys of a free table)."""
    model: type[BaseModel] = Preset
    for i, part in enumerate(parts):
        fi = field_named(model, part)
        if fi is None:
            break
        sub = model_in(fi.annotation)
        last = i == len(parts) - 1
        if last or _free_table(fi):
            return fi, i + 1
        if sub is None:
            break
        model = sub
    section = ".".join(parts[:-1])
    known = sections()
    if section not in known:
        hint = suggest(section, [s for s in known if s])
        top = ", ".join(s for s in known if s and "." not in s)
        raise PresetError(SOURCE, key, UNKNOWN_SECTION, f"{hint}sections: {top}")
    keys = field_keys(known[section])
    raise PresetError(SOURCE, key, UNKNOWN_KEY, f"{suggest(parts[-1], keys)}allowed: {', '.join(keys)}")


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _one(text: str, tp: Any) -> Any:
    s = text.strip()
    bare, _ = strip_annotation(tp)
    if bare is int:
        try:
            return int(s) if _INT.fullmatch(s) else float(s)
        except ValueError:
            return s
    if bare is float:
        try:
            return float(s)
        except ValueError:
            return s
    if bare is bool:
        low = s.lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        return s
    if bare is str or get_origin(bare) is Literal:
        return s
    return _toml_value(s)


def coerce(text: str, fi: FieldInfo | None) -> Any:
    """An override's text as the field's type: lists split by comma, numbers and booleans read."""
    if fi is None:
        return _toml_value(text.strip())
    item = list_item(fi.annotation)
    if item is not None:
        return [_one(p, item) for p in text.split(",") if p.strip() != ""]
    return _one(text, fi.annotation)


def apply_overrides(d: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (lists by comma) to a copy of a preset table."""
    out = copy.deepcopy(d)
    for item in overrides:
        if "=" not in item:
            raise PresetError(SOURCE, item, item, USAGE)
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise PresetError(SOURCE, item, item, USAGE)
        fi, n_named = _field_for(parts, key)
        free = n_named < len(parts)  # e.g. target.env.NAME: a key of the user's own table
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {}
                node[p] = nxt
            node = nxt
        if free:
            assert fi is not None
            bare, _ = strip_annotation(fi.annotation)
            node[parts[-1]] = text.strip() if get_args(bare)[1:] == (str,) else _toml_value(text.strip())
        else:
            node[parts[-1]] = coerce(text, fi)
        if parts[:1] == ["load"] and len(parts) == 2:
            # requests and duration_s are alternatives: setting one drops the other
            if parts[-1] in ("requests", "duration_s"):
                node.pop("duration_s" if parts[-1] == "requests" else "requests", None)
            # rates and concurrency name the loop: setting one switches the mode (a later --set wins)
            if parts[-1] == "rates":
                node.pop("concurrency", None)
                node["mode"] = "open"
            if parts[-1] == "concurrency":
                node.pop("rates", None)
                node["mode"] = "closed"
    return out
