"""`tui-profiler plot SESSION_DIR [--out FILE.png|.svg]`: the AC-Prof-style figure (latency against input
size, one line per resource configuration) and the cold-start breakdown, as an image for reports.
`plot A B [C ...] --overlay`: the sessions' latency lines in one figure, one colour per session and one line
style per resource configuration (the first session is the baseline; `tui-profiler compare` judges them).

matplotlib is an optional extra (`pip install 'tui-profiler[plot]'`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tui_profiler.errors import ExitCode, ProfilerError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plot",
        help="write a session's latency-vs-input figure and cold-start breakdown as an image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "session_dir",
        metavar="SESSION_DIR",
        nargs="+",
        help="a session folder (output/<timestamp>-<preset>); several with --overlay",
    )
    p.add_argument(
        "--overlay",
        action="store_true",
        help="several sessions in one figure: one colour per session, one line style per configuration",
    )
    p.add_argument("--out", default=None, help="image file, .png or .svg (default: SESSION_DIR/figure.png)")
    p.add_argument(
        "--percentile",
        choices=("p50", "p90", "p95", "p99", "mean"),
        default="p50",
        help="which latency statistic to plot (default p50)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    sessions = [Path(s) for s in args.session_dir]
    session = sessions[0]
    try:
        if len(sessions) > 1 and not args.overlay:
            raise PlotError("several sessions: add --overlay to draw them in one figure")
        if args.overlay:
            out = Path(args.out) if args.out else session / "overlay.png"
            path = write_overlay(sessions, out, stat=args.percentile)
        else:
            out = Path(args.out) if args.out else session / "figure.png"
            path = write_figure(session, out, stat=args.percentile)
    except PlotError as exc:
        print(f"tui-profiler plot: {exc}", file=sys.stderr)
        return exc.exit_code
    print(path)
    return ExitCode.OK


class PlotError(ProfilerError):
    """One-line reason the figure cannot be drawn."""


def _check_out(out: Path) -> None:
    if out.suffix.lower() not in (".png", ".svg"):
        raise PlotError(f"--out: {out.name} — a .png or .svg file name")


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (a one-line PlotError when it is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("needs matplotlib — install it with: pip install 'tui-profiler[plot]'") from None
    return plt


def write_figure(session: Path, out: Path, stat: str = "p50") -> Path:
    """Draw the figure for `session` into `out` (.png or .svg); returns the path."""
    from tui_profiler.session import reader

    _check_out(out)
    if not reader.is_session_dir(session):
        raise PlotError(f"{session}: not a session folder (no meta.json, cells.csv or requests.csv)")
    plt = _pyplot()

    cells = reader.read_cells(session)
    y_col = "mean_s" if stat == "mean" else f"{stat}_s"
    x_col, series = reader.scaling_series(cells, y_col)
    labels, phases = reader.cold_start_breakdown(cells)
    if not series and not labels:
        raise PlotError(f"{session}: no finished cells with latency and input size to plot")
    info = reader.read_session_info(session)

    ncols = 2 if labels else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.6), squeeze=False)
    ax = axes[0][0]
    for s in series:
        ax.plot(s.x, s.y, marker="o", label=s.label)
    x_names = {"input_scale": "input scale (× base size)", "pixels": "pixels", "token_len": "tokens"}
    ax.set_xlabel(x_names.get(x_col, x_col))
    ax.set_ylabel(f"{stat} latency (s)")
    ax.set_title(f"{info.preset or session.name}: latency vs input, per resource config")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize="small")
    if labels:
        ax2 = axes[0][1]
        left = [0.0] * len(labels)
        for phase, values in phases.items():
            ax2.barh(labels, values, left=left, label=phase)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax2.set_xlabel("seconds (median over the config's cells)")
        ax2.set_title("cold start by phase")
        ax2.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4)
        ax2.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# One colour per session (matplotlib's default cycle: the same hues as the HTML report's), one line style per
# resource configuration.
SESSION_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
LINE_STYLES = ("-", "--", ":", "-.")


def write_overlay(sessions: list[Path], out: Path, stat: str = "p50") -> Path:
    """The sessions' latency-vs-input lines in one figure (`plot A B --overlay`); returns the path."""
    from tui_profiler.session import reader

    _check_out(out)
    for session in sessions:
        if not reader.is_session_dir(session):
            raise PlotError(f"{session}: not a session folder (no meta.json, cells.csv or requests.csv)")
    plt = _pyplot()
    y_col = "mean_s" if stat == "mean" else f"{stat}_s"
    fig, ax = plt.subplots(figsize=(8, 5))
    x_names = {"input_scale": "input scale (× base size)", "pixels": "pixels", "token_len": "tokens"}
    x_label = ""
    drawn = 0
    for i, session in enumerate(sessions):
        x_col, series = reader.scaling_series(reader.read_cells(session), y_col)
        x_label = x_label or x_names.get(x_col, x_col)
        for j, s in enumerate(series):
            colour = SESSION_COLOURS[i % len(SESSION_COLOURS)]
            style = LINE_STYLES[j % len(LINE_STYLES)]
            ax.plot(s.x, s.y, style, marker="o", color=colour, label=f"{session.name}: {s.label}")
            drawn += 1
    if not drawn:
        plt.close(fig)
        raise PlotError("no finished cells with latency and input size to plot in these sessions")
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"{stat} latency (s)")
    ax.set_title(f"{stat} latency vs input: {len(sessions)} sessions (baseline {sessions[0].name})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
