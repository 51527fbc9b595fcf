"""`tui-profiler` command line: no subcommand opens the TUI; subcommands run the engine headless.

Each subcommand lives in `tui_profiler/commands/<name>.py` and exposes `add_parser(subparsers)`, which
registers its arguments and sets `func(args) -> int` (an `ExitCode`). Imports stay lazy so `--help` is quick
and the engine commands never import Textual. A `ProfilerError` that reaches this level is printed as its one
line (no traceback), and the command exits with its code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tui_profiler import __version__
from tui_profiler.errors import ExitCode, ProfilerError

COMMANDS = ["run", "presets", "images", "clean", "doctor", "fit", "plot", "compare", "report", "bench"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tui-profiler",
        description="Profile AI-model inference containers under resource caps. "
        "Without a subcommand, opens the terminal UI.",
    )
    parser.add_argument("--version", action="version", version=f"tui-profiler {__version__}")
    parser.add_argument("--output", default=None, help="session folder root for the TUI (default: ./output)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"tui_profiler.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:
            from tui_profiler.tui.app import make_app

            app = make_app(output_dir=args.output)
            app.run()
            return int(app.return_code or ExitCode.OK)
        return int(args.func(args) or ExitCode.OK)
    except ProfilerError as exc:
        print(f"{parser.prog}{' ' + args.command if args.command else ''}: {exc.one_line()}", file=sys.stderr)
        return int(exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
