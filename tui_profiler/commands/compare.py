"""`tui-profiler compare BASELINE OTHER [OTHER ...]`: the cells the sessions have in common, each metric's
ratio to the baseline (the first session) with its 95% interval, and a verdict: faster, slower, no
detectable change, or not comparable (and why). Worst changes first; `--csv` writes every row; `--fail-on
"p99_s>+5%"` exits 1 when a detected change passes the threshold (a gate for CI). See docs/compare.md."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tui_profiler.errors import ExitCode

if TYPE_CHECKING:
    from tui_profiler.analysis.compare import Comparison


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compare",
        help="compare sessions cell by cell: ratios to the baseline with 95%% intervals and verdicts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "sessions", nargs="+", metavar="SESSION", help="session folders; the first is the baseline"
    )
    p.add_argument("--csv", metavar="FILE", help="write one row per matched cell and metric")
    p.add_argument(
        "--fail-on",
        metavar="RULE",
        action="append",
        default=[],
        help="exit 1 when a detected change passes RULE, e.g. 'p99_s>+5%%' or 'throughput_rps<-5%%' "
        "(repeatable)",
    )
    p.add_argument(
        "--metric",
        action="append",
        default=None,
        help="compare only this metric, e.g. p99_s (repeatable; default: every metric the sessions measured)",
    )
    p.add_argument(
        "--min-change",
        metavar="PCT",
        type=float,
        default=2.0,
        help="the smallest change a verdict reports, in %% (default 2: the 95%% interval must lie beyond "
        "±2%%; 0: any change the interval shows)",
    )
    p.add_argument("--all", action="store_true", help="show every row (default: changes and the first 30)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tui_profiler.analysis.compare import METRIC_NAMES, CompareError, parse_gate, tripped

    try:
        unknown = [m for m in args.metric or () if m not in METRIC_NAMES]
        if unknown:
            raise CompareError(f"--metric {unknown[0]}: one of {', '.join(METRIC_NAMES)}")
        gates = [parse_gate(text) for text in args.fail_on]
        rows = run_compare(
            [Path(s) for s in args.sessions], metrics=args.metric, min_change=args.min_change / 100
        )
    except CompareError as exc:
        print(f"tui-profiler compare: {exc.one_line()}", file=sys.stderr)
        return ExitCode.USAGE
    print_table(rows, show_all=args.all)
    from tui_profiler.analysis.compare import summary_line

    print(summary_line(rows))
    if args.csv:
        write_csv(rows, Path(args.csv), several=len(args.sessions) > 2)
        print(f"wrote {args.csv}")
    hits = tripped(gates, rows)
    if hits:
        for gate, row in hits[:10]:
            from tui_profiler.analysis.compare import change_text, key_label

            print(
                f"FAIL {gate.text}: {row.session} {row.metric} {change_text(row)} at {key_label(row.keys)}",
                file=sys.stderr,
            )
        if len(hits) > 10:
            print(f"FAIL … and {len(hits) - 10} more", file=sys.stderr)
        return ExitCode.CELL_FAILED
    return ExitCode.OK


def run_compare(
    paths: Sequence[Path], *, metrics: Sequence[str] | None = None, min_change: float = 0.02
) -> list[Comparison]:
    """Read the sessions and compare each later one with the first."""
    from tui_profiler.analysis.compare import CompareError, SessionData, compare_sessions
    from tui_profiler.session import reader

    if len(paths) < 2:
        raise CompareError("compare needs at least two session folders: the baseline first")
    for path in paths:
        if not reader.is_session_dir(path):
            raise CompareError(f"{path}: not a session folder (no meta.json, cells.csv or requests.csv)")
    sessions = [SessionData(*reader.compare_inputs(p)) for p in paths]
    names = [s.name for s in sessions]
    for i, s in enumerate(sessions):  # two folders of the same name from different places: tell them apart
        if names.count(s.name) > 1:
            s.name = f"{s.name}#{i + 1}"
    return compare_sessions(sessions[0], sessions[1:], metrics=metrics, min_change=min_change)


def write_csv(rows: Sequence[Comparison], path: Path, *, several: bool) -> None:
    from tui_profiler.analysis.compare import CSV_COLUMNS

    columns = [c for c in CSV_COLUMNS if several or c != "session"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.as_row().items()})


def print_table(rows: Sequence[Comparison], *, show_all: bool = False, limit: int = 30) -> None:
    from rich.console import Console
    from rich.table import Table

    from tui_profiler import formatting
    from tui_profiler.analysis.compare import change_text, key_label

    several = len({r.session for r in rows}) > 1
    shown = list(rows) if show_all else [r for i, r in enumerate(rows) if r.detected or i < limit]
    table = Table(title=f"compare: {rows[0].baseline} is the baseline" if rows else "compare", expand=False)
    if several:
        table.add_column("session")
    for name in ("cell", "metric", "baseline", "value", "change [95%]", "verdict", "reason"):
        table.add_column(name, overflow="fold")
    for r in shown:
        fmt = formatting.size if r.metric == "peak_mem_bytes" else (
            (lambda v: formatting.rate(v)) if r.metric == "throughput_rps" else formatting.latency
        )  # fmt: skip
        cells = [
            key_label(r.keys),
            r.metric,
            fmt(r.baseline_value),
            fmt(r.value),
            change_text(r) if r.ratio is not None else "",
            f"[{formatting.VERDICT_STYLES.get(r.verdict, '')}]{r.verdict}[/]",
            r.reason,
        ]
        table.add_row(*([r.session] if several else []), *cells)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if len(shown) < len(rows):
        print(f"({len(rows) - len(shown)} more rows with no detected change: --all or --csv shows them)")
