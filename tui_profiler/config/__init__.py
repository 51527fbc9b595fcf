"""Configuration: the one typed declaration of a preset (input, resources, load, target, readiness,
request), its defaults, its one-line errors, its files and `--set` overrides. Built on pydantic v2."""

from __future__ import annotations

from tui_profiler.config.errors import PresetError
from tui_profiler.config.files import (
    USER_PRESETS_ENV,
    PresetInfo,
    builtin_presets_dir,
    check_host_caps,
    discover_presets,
    load_preset,
    preset_from_dict,
    preset_summary,
    read_toml,
    resolve_preset,
    save_user_preset,
    user_presets_dir,
    validate_files,
)
from tui_profiler.config.model import (
    LOAD_DEFAULTS,
    FleetConfig,
    HostConfig,
    InputConfig,
    LoadConfig,
    Preset,
    ReadinessConfig,
    ResourcesConfig,
    SloConfig,
    StableCI,
    TargetConfig,
    sized_by_tokens,
)
from tui_profiler.config.overrides import apply_overrides
from tui_profiler.config.request import RequestConfig, ResponseCheck, TemplateSpec

__all__ = [
    "LOAD_DEFAULTS",
    "USER_PRESETS_ENV",
    "FleetConfig",
    "HostConfig",
    "InputConfig",
    "LoadConfig",
    "Preset",
    "PresetError",
    "PresetInfo",
    "ReadinessConfig",
    "RequestConfig",
    "ResourcesConfig",
    "ResponseCheck",
    "SloConfig",
    "StableCI",
    "TargetConfig",
    "TemplateSpec",
    "apply_overrides",
    "builtin_presets_dir",
    "check_host_caps",
    "discover_presets",
    "load_preset",
    "preset_from_dict",
    "preset_summary",
    "read_toml",
    "resolve_preset",
    "save_user_preset",
    "sized_by_tokens",
    "user_presets_dir",
    "validate_files",
]
