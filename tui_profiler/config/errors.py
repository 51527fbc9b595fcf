"""One-line preset errors: `<file>: <field>: <value> — <what is allowed>`.

`PresetError.from_validation` builds them from pydantic's structured errors (loc, type, input, ctx) and the
field's own declaration (its type, bounds, choices, description), never from pydantic's message text.
Unknown keys get the closest known key suggested; control characters are escaped so a message stays one
line and never drives the terminal. Every problem found is kept as (path, key, message) in `problems`; the
message is the first.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from tui_profiler.config.types import RULE_ERROR
from tui_profiler.errors import ProfilerError

Problem = tuple[str, str, str]  # (file, field, one-line message)


class PresetError(ProfilerError, ValueError):
    """A preset that cannot be used. The message is one line naming the file, the field, the value and
    what is allowed."""

    def __init__(
        self,
        source: str,
        fieldname: str,
        value: Any,
        allowed: str,
        *,
        problems: Sequence[Problem] = (),
    ) -> None:
        self.source = source
        self.field = fieldname
        self.value = value
        self.allowed = allowed
        message = printable(f"{source}: {fieldname}: {show(value)} — {allowed}")
        self.problems: tuple[Problem, ...] = tuple(problems) or ((source, fieldname, message),)
        super().__init__(message)

    @classmethod
    def verbatim(cls, source: str, fieldname: str, message: str) -> PresetError:
        """Wrap a one-line message that already names the file and the field (e.g. a TOML syntax error)."""
        err = cls(source, fieldname, "", "")
        err.allowed = message
        err.args = (printable(message),)
        err.problems = ((source, fieldname, err.args[0]),)
        return err

    @classmethod
    def from_validation(
        cls,
        exc: ValidationError,
        source: str,
        data: Any,
        root: type[BaseModel],
        prefix: tuple[str, ...] = (),
    ) -> PresetError:
        """The problems of a failed `root.model_validate(data)`; `prefix` names where `data` sits in a
        preset (e.g. ("request",) when a request section is validated alone)."""
        errors = sorted(exc.errors(include_url=False), key=lambda e: _position(data, e["loc"]))
        found = [_problem(err, data, root, prefix) for err in errors]
        problems = [(source, f, printable(f"{source}: {f}: {show(v)} — {a}")) for f, v, a in found]
        fieldname, value, allowed = found[0]
        return cls(source, fieldname, value, allowed, problems=problems)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def printable(text: str) -> str:
    """Escape control characters (a key like "a\\u001e" or "\\u001b[2J" from a preset file)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


UNKNOWN_KEY = "unknown key"
UNKNOWN_SECTION = "unknown section"


def show(value: Any) -> str:
    if value in (UNKNOWN_KEY, UNKNOWN_SECTION) and isinstance(value, str):
        return value
    text = repr(value) if isinstance(value, str) else str(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= 80 else text[:77] + "..."


def fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'? " if close else ""


# ------------------------------------------------------------------------------------- reading a field


def field_keys(model: type[BaseModel]) -> list[str]:
    """The keys a table of this model takes, as written in a file (aliases where declared)."""
    return [fi.alias or name for name, fi in model.model_fields.items()]


def field_named(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, fi in model.model_fields.items():
        if (fi.alias or name) == key:
            return fi
    return None


def strip_annotation(tp: Any) -> tuple[Any, list[Any]]:
    """(the bare type, its Annotated metadata), Optional removed."""
    meta: list[Any] = []
    while True:
        if get_origin(tp) is typing.Annotated:
            args = get_args(tp)
            tp = args[0]
            meta.extend(args[1:])
            continue
        if get_origin(tp) in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp, meta


def model_in(tp: Any) -> type[BaseModel] | None:
    """The preset section (a model class) this annotation holds, if any (through Optional and unions)."""
    tp, _ = strip_annotation(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def list_item(tp: Any) -> Any | None:
    """The item type when this annotation is a list (through Optional), else None."""
    bare, _ = strip_annotation(tp)
    return get_args(bare)[0] if get_origin(bare) is list else None


def _bounds(meta: list[Any]) -> list[str]:
    out = []
    for m in meta:
        items = m.metadata if isinstance(m, FieldInfo) else [m]
        for c in items:
            if isinstance(c, annotated_types.Gt):
                out.append(f"> {fmt_number(c.gt)}")  # type: ignore[arg-type]
            elif isinstance(c, annotated_types.Ge):
                out.append(f">= {fmt_number(c.ge)}")  # type: ignore[arg-type]
            elif isinstance(c, annotated_types.Lt):
                out.append(f"< {fmt_number(c.lt)}")  # type: ignore[arg-type]
            elif isinstance(c, annotated_types.Le):
                out.append(f"<= {fmt_number(c.le)}")  # type: ignore[arg-type]
    return out


def _describe_type(tp: Any, field_meta: Sequence[Any] = ()) -> str:
    bare, meta = strip_annotation(tp)
    meta = [*meta, *field_meta]
    if get_origin(bare) is Literal:
        return "one of " + ", ".join(repr(c) for c in get_args(bare))
    if bare is bool:
        return "true or false"
    if bare in (int, float):
        what = "an integer" if bare is int else "a number"
        bounds = _bounds(meta)
        return what + (" " + " and ".join(bounds) if bounds else "")
    if bare is str:
        return "a string"
    if model_in(bare) is not None or get_origin(bare) is dict or bare is dict:
        return "a table"
    return "a value"


def describe(fi: FieldInfo) -> str:
    """What a field allows, in words, from its declaration."""
    extra = fi.json_schema_extra if isinstance(fi.json_schema_extra, dict) else {}
    if "allowed" in extra:
        return str(extra["allowed"])
    item = list_item(fi.annotation)
    if item is not None:
        text = f"a list (or one value), each {_describe_type(item)}"
    else:  # a constrained scalar's bounds sit on the field itself
        text = _describe_type(fi.annotation, fi.metadata)
    if fi.description:
        text += f" ({fi.description})"
    return text


def _bare_of(fi: FieldInfo) -> Any:
    item = list_item(fi.annotation)
    bare, _ = strip_annotation(item if item is not None else fi.annotation)
    return bare


def is_float_field(fi: FieldInfo) -> bool:
    return _bare_of(fi) is float


# --------------------------------------------------------------------------------- one pydantic error


def _position(data: Any, loc: Sequence[Any]) -> tuple[int, ...]:
    """Where an error's field sits in the file (the order of its keys), so the first problem reported is
    the first one in the file."""
    out: list[int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(list(node).index(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = _lookup(node, part)
        else:
            out.append(len(node) if isinstance(node, dict | list) else 0)
            node = None
    return tuple(out)


def _lookup(data: Any, key: Any) -> Any:
    if isinstance(data, dict):
        return data.get(key)
    if isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
        return data[key]
    return None


def _problem(err: Any, data: Any, root: type[BaseModel], prefix: tuple[str, ...]) -> tuple[str, Any, str]:
    """(field path, value, allowed) of one pydantic error."""
    loc: tuple[Any, ...] = tuple(err["loc"])
    kind: str = err["type"]
    value: Any = err.get("input")
    names: list[str] = list(prefix)
    model: type[BaseModel] | None = root
    fi: FieldInfo | None = None
    node: Any = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(part, int):
            items = node if isinstance(node, list) else []
            if len(items) > 1:
                names[-1] += f"[{part}]"
            node = _lookup(node, part)
            continue
        if kind == "extra_forbidden" and last and model is not None:
            keys = field_keys(model)
            hint = suggest(part, keys)
            if not prefix and names and field_named(root, part) is not None:
                hint = f"'{part}' is a top-level key: put it before the first [section]; "
            return ".".join([*names, part]), UNKNOWN_KEY, f"{hint}allowed: {', '.join(keys)}"
        found = field_named(model, part) if model is not None else None
        if found is None:  # a union's tag (e.g. the template's "name" or "table") or a key in a free table
            if part not in _union_tags(fi):
                names.append(part)
                node = _lookup(node, part)
            continue
        fi, model = found, model_in(found.annotation)
        names.append(part)
        node = _lookup(node, part)
    where = ".".join(names) or "(top level)"
    if kind == RULE_ERROR:
        ctx = err.get("ctx") or {}
        rel = str(ctx.get("field", ""))
        full = rel if not names else (f"{where}{rel}" if rel.startswith("[") else f"{where}.{rel}")
        return (full if rel else where), ctx.get("value"), str(ctx.get("allowed", ""))
    if fi is None:
        return where, value, "a table"
    allowed = describe(fi)
    if is_float_field(fi) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # shown as the number it was read as
    elif _bare_of(fi) is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    choices = _choices(fi.annotation)
    if isinstance(value, str) and choices and value not in choices:
        allowed = suggest(value, choices) + allowed
    if kind == "too_short" and list_item(fi.annotation) is not None:
        allowed += ", not empty"
    elif isinstance(value, list) and list_item(fi.annotation) is None and model_in(fi.annotation) is None:
        allowed += " (one value, not a list)"
    return where, value, allowed


def _choices(tp: Any) -> list[str]:
    """The string choices of a Literal anywhere in this annotation (for a did-you-mean)."""
    bare, _ = strip_annotation(tp)
    if get_origin(bare) is Literal:
        return [c for c in get_args(bare) if isinstance(c, str)]
    return [c for arg in get_args(bare) for c in _choices(arg)]


def _union_tags(fi: FieldInfo | None) -> set[str]:
    if fi is None:
        return set()
    from pydantic import Tag

    tags: set[str] = set()

    def walk(tp: Any) -> None:
        if get_origin(tp) is typing.Annotated:
            args = get_args(tp)
            tags.update(a.tag for a in args[1:] if isinstance(a, Tag))
            walk(args[0])
        for arg in get_args(tp) if get_origin(tp) in (Union, types.UnionType) else ():
            walk(arg)

    walk(fi.annotation)
    for m in fi.metadata:
        if isinstance(m, Tag):
            tags.add(m.tag)
    return tags
