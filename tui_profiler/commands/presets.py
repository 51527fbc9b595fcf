"""`tui-profiler presets list|show NAME|validate PATH...`."""

from __future__ import annotations

import argparse
import json
import sys

from tui_profiler.errors import ExitCode


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "presets",
        help="list, show and validate presets",
        description="Built-in presets and the user folder ($TUI_PROFILER_PRESETS or "
        "~/.config/tui-profiler/presets; a user preset shadows a built-in one).",
    )
    psub = p.add_subparsers(dest="presets_command", metavar="ACTION")
    psub.add_parser("list", help="list the presets")
    show = psub.add_parser("show", help="show a preset (validated, with its plan size)")
    show.add_argument("name", help="preset name or .toml path")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    show.add_argument("--json", action="store_true", help="print the validated preset as JSON")
    val = psub.add_parser("validate", help="validate preset files (one line per problem)")
    val.add_argument("paths", nargs="+", help="preset names or .toml paths")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    action = getattr(args, "presets_command", None) or "list"
    if action == "list":
        return _list()
    if action == "show":
        return _show(args.name, args.overrides, args.json)
    return _validate(args.paths)


def _list() -> int:
    from rich.console import Console
    from rich.table import Table

    from tui_profiler.config import discover_presets, user_presets_dir

    infos = discover_presets()
    table = Table(title=f"presets (user folder: {user_presets_dir()})")
    table.add_column("name")
    table.add_column("where")
    table.add_column("description")
    for i in infos:
        table.add_row(i.name, "built-in" if i.builtin else "user", i.description)
    Console().print(table)
    return ExitCode.OK


def _show(name: str, overrides: list[str], as_json: bool) -> int:
    from tui_profiler.config import PresetError, load_preset, preset_summary
    from tui_profiler.plan import build_plan, resource_configs

    try:
        preset = load_preset(name, overrides)
        cells = build_plan(preset)
    except PresetError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    summary = preset_summary(preset)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return ExitCode.OK
    import tomli_w

    print(f"# {preset.path}")
    if preset.task:  # hf: / tf: models: the model and what it does, first
        print(f"# model: {preset.model} (task {preset.task}, weights {preset.weights})")
    print(tomli_w.dumps(preset.to_dict()).rstrip())
    configs = resource_configs(preset)
    print(
        f"\n# plan: {len(cells)} cells, {len(configs) * preset.repetitions} containers "
        f"(one cold start each; a container serves its config's sizes and load levels)"
    )
    return ExitCode.OK


def _validate(paths: list[str]) -> int:
    from tui_profiler.config import validate_files

    bad = validate_files(paths, on_error=lambda msg: print(msg, file=sys.stderr))
    ok = len(paths) - bad
    print(f"{ok} valid, {bad} invalid")
    return ExitCode.CELL_FAILED if bad else ExitCode.OK
