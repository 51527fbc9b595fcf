"""Presets: TOML files that say what to profile (model or image), under which caps, with which inputs and load.

Built-in presets live in the repository's `presets/` folder (shipped in the wheel as
`tui_profiler/builtin_presets`); user presets live in `$TUI_PROFILER_PRESETS` or
`~/.config/tui-profiler/presets`, and a user preset shadows a built-in one of the same name.

Every validation error is ONE line: `<file>: <field>: <value> — <what is allowed>`. Unknown keys are errors
(with the closest known key suggested) and caps above this host's are errors that give the host's.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tui_profiler.host import host_limits

USER_PRESETS_ENV = "TUI_PROFILER_PRESETS"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PresetError(ValueError):
    """A preset that cannot be used. The message is one line naming the file, the field, the value and
    what is allowed."""

    def __init__(self, source: str, fieldname: str, value: Any, allowed: str) -> None:
        self.source = source
        self.field = fieldname
        self.value = value
        self.allowed = allowed
        shown = _show(value)
        super().__init__(_printable(f"{source}: {fieldname}: {shown} — {allowed}"))

    @classmethod
    def verbatim(cls, source: str, fieldname: str, message: str) -> PresetError:
        """Wrap a one-line message that already names the file and the field (e.g. the template parser's)."""
        err = cls(source, fieldname, "", "")
        err.allowed = message
        err.args = (_printable(message),)
        return err

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _printable(text: str) -> str:
    """Escape control characters (a key like "a\\u001e" or "\\u001b[2J" from a preset file): the message
    stays one line and never drives the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _show(value: Any) -> str:
    if value == "unknown key" or value == "unknown section":
        return str(value)
    text = repr(value) if isinstance(value, str) else str(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class _Field:
    kind: str  # "str" | "int" | "float" | "bool" | "enum" | "table" | "strtable" | "any"
    default: Any = None
    is_list: bool = False
    choices: tuple[str, ...] = ()
    lo: float | None = None  # inclusive lower bound
    lo_open: bool = False  # lower bound exclusive
    hi: float | None = None
    help: str = ""


def _num(
    kind: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    is_list: bool = False,
    default: Any = None,
    help: str = "",
) -> _Field:
    return _Field(kind, default=default, is_list=is_list, lo=lo, hi=hi, lo_open=lo_open, help=help)


_READINESS: dict[str, _Field] = {
    "kind": _Field("enum", "http", choices=("http", "log", "tcp")),
    "path": _Field("str", "/healthz"),
    "status": _num("int", 100, 599, default=200),
    "log_pattern": _Field("str", ""),
    "timeout_s": _num("float", 0, 86400, lo_open=True, default=600.0),
    "interval_s": _num("float", 0, 0.01, lo_open=True, default=0.01, help="polling resolution (<= 10 ms)"),
}

_TARGET: dict[str, _Field] = {
    "image": _Field("str", ""),
    "dockerfile": _Field("str", ""),
    "context": _Field("str", ""),
    "build_args": _Field("strtable", None),
    "port": _num("int", 1, 65535, default=8000),
    "command": _Field("str", None, is_list=True),
    "env": _Field("strtable", None),
    "mounts": _Field("str", None, is_list=True, help="'HOST_PATH:CONTAINER_PATH' (mounted read-only)"),
    "gpu_env": _Field("strtable", None),
    "readiness": _Field("table", None),
}

_INPUT: dict[str, _Field] = {
    "kind": _Field("enum", "image", choices=("image", "tokens", "tensor", "text")),
    "base_size": _num(
        "int",
        1,
        16384,
        is_list=True,
        default=None,
        help="[height, width] for images; the shape without batch for tensors",
    ),
    "scales": _num("float", 0, 16, lo_open=True, is_list=True, default=None),
    "token_lens": _num("int", 1, 1_000_000, is_list=True, default=None),
    "encoding": _Field(
        "enum", "raw", choices=("raw", "png", "jpeg", "json", "base64", "json-instances", "text")
    ),
    "dtype": _Field("enum", "float32", choices=("float32", "float16", "float64", "uint8", "int64", "int32")),
    "layout": _Field("enum", "chw", choices=("chw", "hwc")),
    "channels": _num("int", 1, 64, default=3),
    "batch_size": _num("int", 1, 4096, default=1),
    "seed": _num("int", 0, 2**32 - 1, default=0),
    "jpeg_quality": _num("int", 1, 100, default=90),
    "vocab_size": _num("int", 1001, 10_000_000, default=30522),
}

_RESOURCES: dict[str, _Field] = {
    "cpus": _num("float", 0, None, lo_open=True, is_list=True, default=None),
    "memory_gb": _num("float", 0, None, lo_open=True, is_list=True, default=None),
    "gpus": _num("int", 0, None, is_list=True, default=None),
    "cpuset": _Field("bool", False),
    "threads": _Field("str", "auto", help="a number of threads, 'auto' (the CPU quota) or 'host'"),
    "pairing": _Field("enum", "grid", choices=("grid", "zip")),
}

_STABLE_CI: dict[str, _Field] = {
    "rel_halfwidth": _num(
        "float",
        0,
        1,
        lo_open=True,
        default=0.05,
        help="stop when the 95% CI half-width / mean falls below this",
    ),
    "min_requests": _num("int", 2, None, default=10),
}

_LOAD: dict[str, _Field] = {
    "mode": _Field("enum", "closed", choices=("closed", "open")),
    "concurrency": _num("int", 1, 4096, is_list=True, default=None),
    "rates": _num("float", 0, 100_000, lo_open=True, is_list=True, default=None, help="requests per second"),
    "arrival": _Field("enum", "poisson", choices=("constant", "poisson")),
    "connections": _num("int", 1, 4096, default=32, help="open loop: most requests in flight"),
    "requests": _num("int", 1, 10_000_000, default=None),
    "duration_s": _num("float", 0, 7 * 86400, lo_open=True, default=None),
    "warmup": _num("int", 0, 100_000, default=2),
    "timeout_s": _num("float", 0, 86400, lo_open=True, default=60.0),
    "stable_ci": _Field("table", None),
}

_TOP: dict[str, _Field] = {
    "name": _Field("str", ""),
    "description": _Field("str", ""),
    "model": _Field("str", ""),
    "weights": _Field("enum", "random", choices=("random", "pretrained")),
    "image": _Field("str", ""),
    "server_args": _Field("str", None, is_list=True, help="extra model-server flags, e.g. the hub entry's"),
    "repetitions": _num("int", 1, 10_000, default=1),
    "target": _Field("table", None),
    "input": _Field("table", None),
    "request": _Field("table", None),
    "resources": _Field("table", None),
    "load": _Field("table", None),
}

_SECTIONS: dict[str, dict[str, _Field]] = {
    "": _TOP,
    "target": _TARGET,
    "target.readiness": _READINESS,
    "input": _INPUT,
    "resources": _RESOURCES,
    "load": _LOAD,
    "load.stable_ci": _STABLE_CI,
}


def _describe(f: _Field) -> str:
    if f.kind == "enum":
        base = "one of " + ", ".join(repr(c) for c in f.choices)
    elif f.kind in ("int", "float"):
        what = "an integer" if f.kind == "int" else "a number"
        bounds = []
        if f.lo is not None:
            bounds.append(f"{'>' if f.lo_open else '>='} {_fmt(f.lo)}")
        if f.hi is not None:
            bounds.append(f"<= {_fmt(f.hi)}")
        base = what + (" " + " and ".join(bounds) if bounds else "")
    elif f.kind == "bool":
        base = "true or false"
    elif f.kind in ("table", "strtable"):
        base = "a table" + (" of strings" if f.kind == "strtable" else "")
    else:
        base = "a string"
    if f.is_list:
        base = f"a list (or one value), each {base}"
    if f.help:
        base += f" ({f.help})"
    return base


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _check_scalar(source: str, path: str, f: _Field, value: Any) -> Any:
    allowed = _describe(f)
    if f.kind == "str":
        if f.help.startswith("a number of threads"):
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return str(value)
            if isinstance(value, str) and (
                value in ("auto", "host") or (value.isdigit() and int(value) >= 1)
            ):
                return value
            raise PresetError(source, path, value, allowed)
        if not isinstance(value, str):
            raise PresetError(source, path, value, allowed)
        return value
    if f.kind == "enum":
        if not isinstance(value, str) or value not in f.choices:
            raise PresetError(source, path, value, allowed)
        return value
    if f.kind == "bool":
        if not isinstance(value, bool):
            raise PresetError(source, path, value, allowed)
        return value
    if f.kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PresetError(source, path, value, allowed)
        if f.kind == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    raise PresetError(source, path, value, allowed)
                value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise PresetError(source, path, value, allowed)
        if f.lo is not None and (value < f.lo or (f.lo_open and value == f.lo)):
            raise PresetError(source, path, value, allowed)
        if f.hi is not None and value > f.hi:
            raise PresetError(source, path, value, allowed)
        return value
    return value


def _check_value(source: str, path: str, f: _Field, value: Any) -> Any:
    if f.kind == "strtable":
        if not isinstance(value, dict) or not all(isinstance(v, str | int | float) for v in value.values()):
            raise PresetError(source, path, value, 'a table of NAME = "value" strings')
        return {str(k): str(v) for k, v in value.items()}
    if f.is_list:
        if not isinstance(value, list):
            value = [value]  # a single value is a list of one
        if not value:
            raise PresetError(source, path, value, _describe(f) + ", not empty")
        return [
            _check_scalar(source, f"{path}[{i}]" if len(value) > 1 else path, f, v)
            for i, v in enumerate(value)
        ]
    if isinstance(value, list):
        raise PresetError(source, path, value, _describe(f) + " (one value, not a list)")
    return _check_scalar(source, path, f, value)


def _check_table(source: str, section: str, schema: dict[str, _Field], table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise PresetError(source, section or "(top level)", table, "a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{section}.{key}" if section else key
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            if section and key in _TOP:
                hint = f"'{key}' is a top-level key: put it before the first [section]; "
            raise PresetError(source, path, "unknown key", f"{hint}allowed: {', '.join(schema)}")
        f = schema[key]
        if f.kind == "table":
            sub = f"{section}.{key}" if section else key
            if key == "request":  # a request template: validated by the template parser (load/template.py)
                if not isinstance(value, dict):
                    raise PresetError(source, path, value, "a table (a request template)")
                out[key] = value
            else:
                out[key] = _check_table(source, sub, _SECTIONS[sub], value)
        else:
            out[key] = _check_value(source, path, f, value)
    return out


# ------------------------------------------------------------------------------------------------ preset


@dataclass(slots=True)
class StableCI:
    rel_halfwidth: float = 0.05
    min_requests: int = 10


@dataclass(slots=True)
class InputSection:
    kind: str = "image"  # "image" | "tokens"
    base_size: list[int] = field(default_factory=lambda: [224, 224])  # [height, width]
    scales: list[float] = field(default_factory=lambda: [1.0])
    token_lens: list[int] = field(default_factory=lambda: [16])
    encoding: str = "raw"
    dtype: str = "float32"
    layout: str = "chw"
    channels: int = 3
    batch_size: int = 1
    seed: int = 0
    jpeg_quality: int = 90
    vocab_size: int = 30522

    @property
    def sized_by_tokens(self) -> bool:
        return self.kind in ("tokens", "text")


@dataclass(slots=True)
class ResourcesSection:
    cpus: list[float | None] = field(default_factory=lambda: [None])  # None: not capped
    memory_gb: list[float | None] = field(default_factory=lambda: [None])
    gpus: list[int] = field(default_factory=lambda: [0])
    cpuset: bool = False
    threads: str = "auto"
    pairing: str = "grid"  # "grid" | "zip"


@dataclass(slots=True)
class LoadSection:
    mode: str = "closed"  # "closed" | "open"
    concurrency: list[int] = field(default_factory=lambda: [1])
    rates: list[float] = field(default_factory=list)
    arrival: str = "poisson"
    connections: int = 32
    requests: int | None = 20
    duration_s: float | None = None
    warmup: int = 2
    timeout_s: float = 60.0
    stable_ci: StableCI | None = None


@dataclass(slots=True)
class Preset:
    name: str
    description: str
    path: Path | None
    model: str
    weights: str
    image: str  # server image tag; "" = the built-in model-server image
    server_args: list[str]  # extra flags for our model server (after --model/--weights)
    target: dict[str, Any] | None  # a foreign image (issue 8): image/dockerfile, port, command, env, ...
    input: InputSection
    request: Any  # a load.template.RequestTemplate when the template parser is present, else the raw table
    resources: ResourcesSection
    load: LoadSection
    repetitions: int = 1
    raw: dict[str, Any] = field(default_factory=dict)  # the validated table (for meta.json and saving)

    @property
    def source(self) -> str:
        return str(self.path) if self.path else self.name

    def to_dict(self) -> dict[str, Any]:
        """The preset as TOML-able data (None left out), e.g. for meta.json and `save_user_preset`."""
        return _drop_none(self.raw)


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [_drop_none(v) for v in d if v is not None]
    return d


def _parse_request(section: dict[str, Any], source: str, model: str) -> Any:
    try:
        from tui_profiler.load.template import parse_request_section  # owned by the LOAD helper
    except ImportError:
        return dict(section)  # template support not present: keep the raw table
    try:
        return parse_request_section(section, f"{source}: request", model)
    except ValueError as exc:  # the parser's one-line message names the file and the field already
        lines = str(exc).splitlines() or ["invalid request template"]
        raise PresetError.verbatim(source, "request", lines[0]) from None


def preset_from_dict(d: dict[str, Any], source: str, *, check_host: bool = True) -> Preset:
    """Validate a preset table. `source` names it in errors (a file path, or e.g. '<tui>')."""
    t = _check_table(source, "", _TOP, d)
    name = t.get("name") or Path(source).stem
    if not _NAME_RE.match(name):
        raise PresetError(source, "name", name, "letters, digits, '_', '-', '.'")
    target = t.get("target")
    model = t.get("model", "")
    if not model and not (target and (target.get("image") or target.get("dockerfile"))):
        raise PresetError(
            source, "model", model, "a catalog model name, or a [target] with image or dockerfile"
        )
    if target is not None and target.get("image") and target.get("dockerfile"):
        raise PresetError(
            source,
            "target.dockerfile",
            target["dockerfile"],
            "give target.image or target.dockerfile, not both",
        )
    if target is not None:
        for i, m in enumerate(target.get("mounts") or []):
            if m.count(":") < 1 or not m.split(":", 1)[0] or not m.split(":", 1)[1].startswith("/"):
                raise PresetError(source, f"target.mounts[{i}]", m, "'HOST_PATH:/container/path'")

    inp_t = t.get("input", {})
    inp = InputSection(**dict(inp_t.items()))
    if not inp.sized_by_tokens:
        if "token_lens" in inp_t:
            raise PresetError(
                source,
                "input.token_lens",
                inp_t["token_lens"],
                f"only for input.kind 'tokens' or 'text' (use input.scales for '{inp.kind}')",
            )
        if inp.kind == "image" and len(inp.base_size) != 2:
            raise PresetError(source, "input.base_size", inp.base_size, "[height, width] (two integers)")
        inp.token_lens = []
    else:
        if "scales" in inp_t:
            raise PresetError(
                source,
                "input.scales",
                inp_t["scales"],
                f"only for input.kind 'image' or 'tensor' (use input.token_lens for '{inp.kind}')",
            )
        inp.scales = []
        if "base_size" not in inp_t:
            inp.base_size = [inp.token_lens[0]]
    _check_input_spec(source, inp)

    res_t = t.get("resources", {})
    res = ResourcesSection(**res_t)
    if (
        res.pairing == "zip"
        and len(res.cpus) != len(res.memory_gb)
        and 1 not in (len(res.cpus), len(res.memory_gb))
    ):
        raise PresetError(
            source,
            "resources.memory_gb",
            res.memory_gb,
            f"pairing 'zip' needs as many values as resources.cpus ({len(res.cpus)}) or one",
        )
    if check_host:
        host = host_limits()
        for c in res.cpus:
            if c is not None and c > host.cpus + 1e-9:
                raise PresetError(
                    source, "resources.cpus", c, f"at most {_fmt(host.cpus)} (this host's usable cores)"
                )
        for m in res.memory_gb:
            if m is not None and m > host.memory_gb:
                raise PresetError(
                    source,
                    "resources.memory_gb",
                    m,
                    f"at most {_fmt(host.memory_gb)} (this host's memory, GiB)",
                )
        for g in res.gpus:
            if g > host.gpus:
                raise PresetError(
                    source, "resources.gpus", g, f"at most {host.gpus} (this host's GPUs: {host.gpu_reason})"
                )

    load_t = dict(t.get("load", {}))
    if load_t.get("requests") is not None and load_t.get("duration_s") is not None:
        raise PresetError(
            source, "load.duration_s", load_t["duration_s"], "give load.requests or load.duration_s, not both"
        )
    stable = load_t.pop("stable_ci", None)
    load = LoadSection(**load_t)
    if "requests" not in load_t and "duration_s" in load_t:
        load.requests = None
    load.stable_ci = StableCI(**stable) if stable is not None else None
    if load.mode == "open":
        if not load.rates:
            raise PresetError(
                source, "load.rates", None, "load.mode = 'open' needs arrival rates (requests/s)"
            )
        if "concurrency" in load_t:
            raise PresetError(
                source,
                "load.concurrency",
                load_t["concurrency"],
                "only for load.mode = 'closed' (use load.rates)",
            )
    elif "rates" in load_t:
        raise PresetError(
            source, "load.rates", load_t["rates"], "only for load.mode = 'open' (use load.concurrency)"
        )

    request = _parse_request(t["request"], source, model) if "request" in t else None
    raw = dict(t)
    raw["name"] = name
    return Preset(
        name=name,
        description=t.get("description", ""),
        path=Path(source) if _looks_like_path(source) else None,
        model=model,
        weights=t.get("weights", "random"),
        image=t.get("image", ""),
        server_args=list(t.get("server_args") or []),
        target=target,
        input=inp,
        request=request,
        resources=res,
        load=load,
        repetitions=t.get("repetitions", 1),
        raw=raw,
    )


def input_spec(inp: InputSection, *, scale: float | None = None, token_len: int | None = None) -> Any:
    """The load generator's `InputSpec` for one cell of this input section."""
    from tui_profiler.load.inputs import InputSpec

    return InputSpec(
        kind=inp.kind,
        base_size=tuple(inp.base_size),
        scale=scale if scale is not None else 1.0,
        token_len=token_len,
        channels=inp.channels,
        dtype=inp.dtype,
        encoding=inp.encoding,
        batch=inp.batch_size,
        seed=inp.seed,
        jpeg_quality=inp.jpeg_quality,
        vocab_size=inp.vocab_size,
        layout=inp.layout,
    )


def _check_input_spec(source: str, inp: InputSection) -> None:
    """Cross-field rules (e.g. which encodings a kind can travel in) are the input generator's."""
    try:
        from tui_profiler.load.inputs import InputSpec  # noqa: F401
    except ImportError:
        return
    try:
        input_spec(inp, scale=(inp.scales or [1.0])[0], token_len=(inp.token_lens or [None])[0])
    except ValueError as exc:
        text = str(exc).splitlines()[0]
        fieldname, _, rest = text.partition(": ")
        value, _, allowed = rest.partition(" — ")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        raise PresetError(source, fieldname or "input", value or text, allowed or text) from None


def _looks_like_path(source: str) -> bool:
    return source.endswith(".toml") or os.sep in source


# --------------------------------------------------------------------------------------------- overrides


def _field_for(path: list[str]) -> _Field | None:
    section = ".".join(path[:-1])
    schema = _SECTIONS.get(section)
    return schema.get(path[-1]) if schema is not None else None


def _coerce(text: str, f: _Field | None) -> Any:
    """Turn an override's text into the field's type; validation proper happens afterwards."""

    def one(s: str) -> Any:
        s = s.strip()
        kind = f.kind if f else "any"
        if kind in ("int", "float"):
            try:
                return int(s) if kind == "int" and re.fullmatch(r"[+-]?\d+", s) else float(s)
            except ValueError:
                return s
        if kind == "bool":
            low = s.lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
            return s
        if kind in ("str", "enum"):
            return s
        try:  # unknown field (e.g. inside [request]): read it as a TOML value, else as a string
            return tomllib.loads(f"v = {s}")["v"]
        except tomllib.TOMLDecodeError:
            return s

    if f is not None and f.is_list:
        return [one(p) for p in text.split(",") if p.strip() != ""]
    return one(text)


def apply_overrides(d: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (lists by comma) to a copy of a preset table."""
    import copy

    out = copy.deepcopy(d)
    for item in overrides:
        if "=" not in item:
            raise PresetError("--set", item, item, "section.key=value, e.g. resources.cpus=0.5,2")
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise PresetError("--set", item, item, "section.key=value, e.g. resources.cpus=0.5,2")
        f = _field_for(parts)
        if f is None and parts[0] != "request":
            section = ".".join(parts[:-1])
            schema = _SECTIONS.get(section)
            if schema is None:
                close = difflib.get_close_matches(section, [s for s in _SECTIONS if s], n=1, cutoff=0.5)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise PresetError(
                    "--set",
                    key,
                    "unknown section",
                    f"{hint}sections: target, input, request, resources, load",
                )
            close = difflib.get_close_matches(parts[-1], list(schema), n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise PresetError("--set", key, "unknown key", f"{hint}allowed: {', '.join(schema)}")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {}
                node[p] = nxt
            node = nxt
        node[parts[-1]] = _coerce(text, f)
        # requests and duration_s are alternatives: setting one drops the other
        if parts[:1] == ["load"] and parts[-1] in ("requests", "duration_s"):
            node.pop("duration_s" if parts[-1] == "requests" else "requests", None)
        if parts[:1] == ["load"] and parts[-1] == "rates":
            node.pop("concurrency", None)
            node.setdefault("mode", "open")
        if parts[:1] == ["load"] and parts[-1] == "concurrency":
            node.pop("rates", None)
            node["mode"] = "closed"
    return out


# --------------------------------------------------------------------------------------------- discovery


@dataclass(frozen=True, slots=True)
class PresetInfo:
    name: str
    description: str
    path: Path
    builtin: bool


def builtin_presets_dir() -> Path:
    packaged = Path(__file__).resolve().parent / "builtin_presets"
    if packaged.is_dir():
        return packaged.resolve()  # in a checkout: a link to the repository's presets/
    return Path(__file__).resolve().parent.parent / "presets"


def user_presets_dir() -> Path:
    env = os.environ.get(USER_PRESETS_ENV)
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "tui-profiler" / "presets"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        where = f"line {m.group(1)}, column {m.group(2)}" if m else "?"
        text = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg).strip()
        raise PresetError.verbatim(str(path), "toml", f"{path}: {where}: not valid TOML — {text}") from None
    except UnicodeDecodeError:
        raise PresetError(str(path), "toml", "binary data", "a UTF-8 TOML text file") from None
    except OSError as exc:
        raise PresetError(str(path), "file", str(path), f"a readable file ({exc.strerror or exc})") from None


def _scan(folder: Path, builtin: bool, prefix: str = "") -> list[PresetInfo]:
    infos: list[PresetInfo] = []
    if not folder.is_dir():
        return infos
    for path in sorted(folder.glob("*.toml")):
        try:
            data = _read_toml(path)
            description = str(data.get("description", ""))
            name = str(data.get("name") or path.stem)
        except PresetError as exc:
            description, name = f"(invalid: {exc.allowed})", path.stem
        infos.append(PresetInfo(prefix + name, description, path, builtin))
    return infos


def discover_presets() -> list[PresetInfo]:
    """Built-in presets (incl. `examples/…`), then user presets; a user preset shadows a built-in one."""
    builtin = builtin_presets_dir()
    found = _scan(builtin, True) + _scan(builtin / "examples", True, "examples/")
    user = _scan(user_presets_dir(), False)
    user_names = {i.name for i in user}
    return [i for i in found if i.name not in user_names] + user


def resolve_preset(name_or_path: str) -> Path:
    p = Path(name_or_path).expanduser()
    if p.suffix == ".toml" or (os.sep in name_or_path and not name_or_path.startswith("examples/")):
        if not p.is_file():
            raise PresetError(name_or_path, "file", name_or_path, "an existing preset file")
        return p
    for info in reversed(discover_presets()):  # user presets last in the list, so they win
        if info.name == name_or_path:
            return info.path
    names = [i.name for i in discover_presets()]
    close = difflib.get_close_matches(name_or_path, names, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise PresetError(
        name_or_path, "preset", name_or_path, f"{hint}known presets: {', '.join(names) or '(none)'}"
    )


def load_preset(name_or_path: str, overrides: Iterable[str] = (), *, check_host: bool = True) -> Preset:
    """Load a preset by name (user folder, then built-ins) or by path, apply `--set` overrides, validate."""
    path = resolve_preset(name_or_path)
    data = _read_toml(path)
    overrides = list(overrides)
    if overrides:
        data = apply_overrides(data, overrides)
    preset = preset_from_dict(data, str(path), check_host=check_host)
    preset.path = path
    if "name" not in data:
        preset.name = path.stem
        preset.raw["name"] = path.stem
    return preset


def save_user_preset(d: dict[str, Any], name: str) -> Path:
    """Validate `d` and write it as `<user folder>/<name>.toml`; returns the path."""
    if not _NAME_RE.match(name):
        raise PresetError("<save>", "name", name, "letters, digits, '_', '-', '.'")
    import tomli_w

    data = _drop_none(dict(d))
    data["name"] = name
    folder = user_presets_dir()
    path = folder / f"{name}.toml"
    preset_from_dict(data, str(path))  # raises a PresetError before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(data))
    tmp.replace(path)
    return path


def validate_files(paths: Iterable[str], on_error: Callable[[str], None] | None = None) -> int:
    """Validate preset files; returns the number of invalid ones (each reported in one line)."""
    bad = 0
    for p in paths:
        try:
            load_preset(p)
        except PresetError as exc:
            bad += 1
            if on_error:
                on_error(str(exc))
    return bad


def preset_summary(preset: Preset) -> dict[str, Any]:
    """A flat, JSON-able description (for `presets show` and meta.json)."""
    return {
        "name": preset.name,
        "path": str(preset.path) if preset.path else None,
        "model": preset.model,
        "weights": preset.weights,
        "image": preset.image,
        "target": preset.target,
        "input": asdict(preset.input),
        "request": preset.raw.get("request"),
        "resources": asdict(preset.resources),
        "load": asdict(preset.load),
        "repetitions": preset.repetitions,
    }
