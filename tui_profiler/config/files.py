"""Preset files: where they are, reading and validating them, saving a user's.

Built-in presets live in the repository's `presets/` folder (shipped in the wheel as
`tui_profiler/builtin_presets`), examples in `presets/examples/` (named `examples/<stem>`); user presets
live in `$TUI_PROFILER_PRESETS` or `~/.config/tui-profiler/presets`, and a user preset shadows a built-in
one of the same name. Caps above this host's are errors that give the host's value.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tui_profiler.config.errors import PresetError, fmt_number, suggest
from tui_profiler.config.model import NAME_ALLOWED, NAME_RE, Preset
from tui_profiler.config.overrides import apply_overrides
from tui_profiler.host import (
    HostLimits,
    host_limits,
)  # a module attribute, so tests can fix the host's limits

USER_PRESETS_ENV = "TUI_PROFILER_PRESETS"
_PACKAGE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class PresetInfo:
    name: str
    description: str
    path: Path
    builtin: bool


def builtin_presets_dir() -> Path:
    packaged = _PACKAGE / "builtin_presets"
    if packaged.is_dir():
        return packaged.resolve()  # in a checkout: a link to the repository's presets/
    return _PACKAGE.parent / "presets"


def user_presets_dir() -> Path:
    env = os.environ.get(USER_PRESETS_ENV)
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "tui-profiler" / "presets"


def read_toml(path: Path) -> dict[str, Any]:
    """A preset file's table; a PresetError (one line, with the line and column) when it is not TOML."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        # tomllib gives the position only inside its message text
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        where = f"line {m.group(1)}, column {m.group(2)}" if m else "?"
        text = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg).strip()
        raise PresetError.verbatim(str(path), "toml", f"{path}: {where}: not valid TOML — {text}") from None
    except UnicodeDecodeError:
        raise PresetError(str(path), "toml", "binary data", "a UTF-8 TOML text file") from None
    except OSError as exc:
        raise PresetError(str(path), "file", str(path), f"a readable file ({exc.strerror or exc})") from None


def check_host_caps(preset: Preset, source: str, host: HostLimits, where: str = "this host") -> None:
    """Refuse, naming the host, a cap that `host` cannot give (more cores, memory or GPUs than it has)."""
    for c in preset.resources.cpus:
        if c is not None and c > host.cpus + 1e-9:
            raise PresetError(
                source, "resources.cpus", c, f"at most {fmt_number(host.cpus)} ({where}'s usable cores)"
            )
    for m in preset.resources.memory_gb:
        if m is not None and m > host.memory_gb:
            raise PresetError(
                source,
                "resources.memory_gb",
                m,
                f"at most {fmt_number(host.memory_gb)} ({where}'s memory, GiB)",
            )
    for g in preset.resources.gpus:
        if g > host.gpus:
            raise PresetError(
                source, "resources.gpus", g, f"at most {host.gpus} ({where}'s GPUs: {host.gpu_reason})"
            )


def _looks_like_path(source: str) -> bool:
    return source.endswith(".toml") or os.sep in source


def preset_from_dict(d: Any, source: str, *, check_host: bool = True, for_url: bool = False) -> Preset:
    """Validate a preset table. `source` names it in errors (a file path, or e.g. '<tui>'). `for_url`: the
    preset profiles a running server (`run --url`), so it needs neither `model` nor a [target]."""
    try:
        preset = Preset.model_validate(d, context={"source": source, "for_url": for_url})
    except ValidationError as exc:
        raise PresetError.from_validation(exc, source, d, Preset) from None
    if check_host:
        check_host_caps(preset, source, host_limits())
    if _looks_like_path(source):
        preset.path = Path(source)
    return preset


def _scan(folder: Path, builtin: bool, prefix: str = "") -> list[PresetInfo]:
    infos: list[PresetInfo] = []
    if not folder.is_dir():
        return infos
    for path in sorted(folder.glob("*.toml")):
        try:
            data = read_toml(path)
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
    infos = discover_presets()
    for info in reversed(infos):  # user presets last in the list, so they win
        if info.name == name_or_path:
            return info.path
    names = [i.name for i in infos]
    raise PresetError(
        name_or_path,
        "preset",
        name_or_path,
        f"{suggest(name_or_path, names)}known presets: {', '.join(names) or '(none)'}",
    )


def load_preset(
    name_or_path: str, overrides: Iterable[str] = (), *, check_host: bool = True, for_url: bool = False
) -> Preset:
    """Load a preset by name (user folder, then built-ins) or by path, apply `--set` overrides, validate.
    `for_url`: for `run --url` (see `preset_from_dict`)."""
    path = resolve_preset(name_or_path)
    data = read_toml(path)
    overrides = list(overrides)
    if overrides:
        data = apply_overrides(data, overrides)
    preset = preset_from_dict(data, str(path), check_host=check_host, for_url=for_url)
    preset.path = path
    return preset


def save_user_preset(d: dict[str, Any], name: str) -> Path:
    """Validate `d` and write it as `<user folder>/<name>.toml`; returns the path."""
    if not NAME_RE.match(name):
        raise PresetError("<save>", "name", name, NAME_ALLOWED)
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


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [_drop_none(v) for v in d if v is not None]
    return d


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
    dumped = preset.to_dict()
    return {
        "name": preset.name,
        "path": str(preset.path) if preset.path else None,
        "model": preset.model,
        "weights": preset.weights,
        "task": preset.task or None,  # hf: / tf: models
        "image": preset.image,
        "target": preset.target.model_dump() if preset.target is not None else None,
        "input": preset.input.model_dump(),
        "request": dumped.get("request"),
        "resources": preset.resources.model_dump(),
        "load": preset.load.model_dump(),
        "repetitions": preset.repetitions,
    }
