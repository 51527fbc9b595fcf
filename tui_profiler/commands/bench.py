"""`tui-profiler bench` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="(not implemented yet)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print("tui-profiler bench: not implemented yet")
    return 2
