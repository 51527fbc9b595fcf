"""`tui-profiler report SESSION [SESSION ...] --html OUT.html [--md OUT.md]`: a session (or several) as one
file anyone can open: what was run and where, the cold-start breakdown, latency against input size with
its 95% interval bands, throughput and capacity, resource peaks and throttling, generative metrics, the
fitted model and the recommendation, and with several sessions the comparison (the first is the baseline).

The HTML is self-contained: its plots are plotly figures with plotly.js embedded in the file (no network
when it is opened; ~4.7 MB). `--md` writes a Markdown summary with PNG figures (matplotlib) in a folder
beside it, for a pull request. See docs/compare.md."""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui_profiler.errors import ExitCode, ProfilerError
from tui_profiler.session.schema import csv_number

if TYPE_CHECKING:
    import pandas as pd

    from tui_profiler.analysis.compare import Comparison

from tui_profiler.commands.plot import SESSION_COLOURS  # one colour per session in every plot

DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
X_NAMES = {"input_scale": "input scale (× base size)", "pixels": "pixels", "token_len": "prompt tokens"}


class ReportError(ProfilerError):
    """One-line reason the report cannot be written."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="write sessions as one self-contained HTML file (interactive plots) and/or a Markdown summary",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "sessions", nargs="+", metavar="SESSION", help="session folders; the first is the baseline"
    )
    p.add_argument("--html", metavar="OUT.html", help="the self-contained HTML report")
    p.add_argument("--md", metavar="OUT.md", help="a Markdown summary with PNG figures (in OUT_files/)")
    p.add_argument(
        "--slo-p99",
        metavar="SECONDS",
        type=float,
        default=None,
        help="add the recommendation: the cheapest configuration whose fitted p99 meets this bound",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.html and not args.md:
        print("tui-profiler report: give --html OUT.html and/or --md OUT.md", file=sys.stderr)
        return ExitCode.USAGE
    try:
        data = build_report([Path(s) for s in args.sessions], slo_p99=args.slo_p99)
        if args.html:
            print(write_html(data, Path(args.html)))
        if args.md:
            print(write_markdown(data, Path(args.md)))
    except ReportError as exc:
        print(f"tui-profiler report: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    return ExitCode.OK


# ------------------------------------------------------------------------------------------------ data


@dataclass(slots=True)
class Point:
    x: float
    y: float
    lo: float | None = None
    hi: float | None = None


@dataclass(slots=True)
class SessionReport:
    """What the report shows of one session."""

    path: Path
    name: str
    colour: str
    meta: dict[str, Any]
    cells: pd.DataFrame
    x_column: str
    latency: dict[str, dict[str, list[Point]]]  # stat -> config label -> points (p50/p99 with intervals)
    throughput: dict[str, list[Point]]
    tokens: dict[str, dict[str, list[Point]]]  # ttft/tpot -> config -> points (over prompt tokens)
    cold_labels: list[str]
    cold_phases: dict[str, list[float]]
    capacity: list[dict[str, str]]
    fit_lines: list[str] = field(default_factory=list)
    recommendation: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ReportData:
    sessions: list[SessionReport]
    comparisons: list[Comparison] = field(default_factory=list)
    compare_error: str = ""


def _series(
    cells: pd.DataFrame,
    requests: pd.DataFrame,
    x_col: str,
    y_col: str,
    *,
    request_column: str | None = None,
    q: float | None = None,
) -> dict[str, list[Point]]:
    """One series per resource configuration: (x, y) per cell with its 95% interval: cells.csv's
    `<stat>_lo_s`/`_hi_s` when present, else `stats.quantile_interval` over the cell's requests."""
    from tui_profiler.session import reader
    from tui_profiler.stats import median, quantile_interval

    if cells.empty or not x_col or y_col not in cells:
        return {}
    stem = y_col[: -len("_s")] if y_col.endswith("_s") else y_col
    groups: dict[str, dict[float, list[Point]]] = {}
    by_cell: dict[Any, Any] = {}
    if request_column and not requests.empty and "cell_index" in requests and request_column in requests:
        by_cell = dict(tuple(requests.groupby("cell_index")[request_column]))
    for row in cells.to_dict("records"):
        if str(row.get("status", "ok")) not in ("ok", "nan"):
            continue
        x, y = csv_number(row.get(x_col)), csv_number(row.get(y_col))
        if x is None or y is None:
            continue
        lo, hi = csv_number(row.get(f"{stem}_lo_s")), csv_number(row.get(f"{stem}_hi_s"))
        values = by_cell.get(row.get("cell_index"))
        if (lo is None or hi is None) and q is not None and values is not None:
            qi = quantile_interval([float(v) for v in values.dropna()], q)
            lo, hi = qi.lo, qi.hi
        label = reader.config_label(row)
        groups.setdefault(label, {}).setdefault(x, []).append(Point(x, y, lo, hi))
    out: dict[str, list[Point]] = {}
    for label in sorted(groups, key=reader._config_sort_key):
        points = []
        for x, ps in sorted(groups[label].items()):
            los = [p.lo for p in ps if p.lo is not None]
            his = [p.hi for p in ps if p.hi is not None]
            points.append(
                Point(x, median(p.y for p in ps), median(los) if los else None, median(his) if his else None)
            )
        out[label] = points
    return out


def _session_report(path: Path, index: int, slo_p99: float | None) -> SessionReport:
    from tui_profiler.session import reader
    from tui_profiler.session.schema import GenColumn

    if not reader.is_session_dir(path):
        raise ReportError(f"{path}: not a session folder (no meta.json, cells.csv or requests.csv)")
    info = reader.read_session_info(path)
    cells = reader.read_cells(path)
    requests = reader.timed_ok(reader.read_requests(path))
    x_col = next((c for c in reader.X_COLUMNS if c in cells and cells[c].notna().any()), "")
    latency = {
        "p50": _series(cells, requests, x_col, "p50_s", request_column="latency_s", q=0.5),
        "p99": _series(cells, requests, x_col, "p99_s", request_column="latency_s", q=0.99),
    }
    throughput = _series(cells, requests, x_col, "throughput_rps")
    tokens: dict[str, dict[str, list[Point]]] = {}
    if GenColumn.TTFT_P50_S in cells and cells[GenColumn.TTFT_P50_S].notna().any() and "token_len" in cells:
        by_prompt = cells.drop(columns=[c for c in reader.X_COLUMNS if c != "token_len"], errors="ignore")
        tokens = {
            "TTFT p50": _series(
                by_prompt, requests, "token_len", "ttft_p50_s", request_column="ttft_s", q=0.5
            ),
            "TPOT p50": _series(
                by_prompt, requests, "token_len", "tpot_p50_s", request_column="tpot_s", q=0.5
            ),
        }
    labels, phases = reader.cold_start_breakdown(cells)
    report = SessionReport(
        path=path,
        name=path.name,
        colour=SESSION_COLOURS[index % len(SESSION_COLOURS)],
        meta=info.meta,
        cells=cells,
        x_column=x_col,
        latency=latency,
        throughput=throughput,
        tokens=tokens,
        cold_labels=labels,
        cold_phases=phases,
        capacity=reader.read_capacity(path),
    )
    report.fit_lines, report.recommendation = _fit(path, x_col, cells, slo_p99)
    return report


def _fit(path: Path, x_col: str, cells: pd.DataFrame, slo_p99: float | None) -> tuple[list[str], list[str]]:
    """The fitted latency model's summary (analysis.fit) and, with an SLO, the recommendation."""
    from tui_profiler.analysis import fit, recommend

    try:
        lines = fit.fit_paths([path]).summary_lines()
    except Exception as exc:  # too few cells, no latency ...: the report says why and goes on
        lines = [f"no model fitted: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"]
    if slo_p99 is None:
        return lines, [
            "no SLO given: `report --slo-p99 SECONDS` adds the cheapest configuration that meets it"
        ]
    sizes = [v for v in (csv_number(x) for x in cells.get(x_col, [])) if v is not None] if x_col else []
    if not sizes:
        return lines, ["no input size to recommend at"]
    try:
        rec = recommend.recommend_paths([str(path)], slo_s=slo_p99, size=max(sizes))
        return lines, rec.summary_lines()
    except Exception as exc:
        return lines, [f"no recommendation: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"]


def build_report(paths: Sequence[Path], *, slo_p99: float | None = None) -> ReportData:
    if not paths:
        raise ReportError("give at least one session folder")
    data = ReportData([_session_report(p, i, slo_p99) for i, p in enumerate(paths)])
    if len(paths) > 1:
        from tui_profiler.analysis.compare import CompareError
        from tui_profiler.commands.compare import run_compare

        try:
            data.comparisons = run_compare(paths)
        except CompareError as exc:
            data.compare_error = exc.one_line()
    return data


# ------------------------------------------------------------------------------------------------ HTML


def _figures(data: ReportData) -> list[tuple[str, str, Any]]:
    """(section, caption, plotly figure) for every plot of the report."""
    import plotly.graph_objects as go

    figs: list[tuple[str, str, Any]] = []
    several = len(data.sessions) > 1

    def layout(fig: Any, title: str, x: str, y: str, log_y: bool = False) -> Any:
        fig.update_layout(
            title=title, xaxis_title=x, yaxis_title=y, template="plotly_white", height=430, margin={"t": 60}
        )
        if log_y:
            fig.update_yaxes(type="log")
        return fig

    def lines(
        fig: Any, series: dict[str, list[Point]], s: SessionReport, scale: float = 1.0, band: bool = True
    ) -> None:
        for i, (label, points) in enumerate(series.items()):
            name = f"{s.name}: {label}" if several else label
            colour = s.colour if several else SESSION_COLOURS[i % len(SESSION_COLOURS)]
            dash = DASHES[i % len(DASHES)] if several else "solid"
            xs = [p.x for p in points]
            bounded = [p for p in points if p.lo is not None and p.hi is not None]
            if band and bounded:
                fig.add_trace(
                    go.Scatter(
                        x=[p.x for p in bounded] + [p.x for p in reversed(bounded)],
                        y=[p.hi * scale for p in bounded] + [p.lo * scale for p in reversed(bounded)],  # type: ignore[operator]
                        fill="toself", fillcolor=colour, opacity=0.18, line={"width": 0},
                        hoverinfo="skip", showlegend=False, name=f"{name} 95%",
                    )
                )  # fmt: skip
            fig.add_trace(
                go.Scatter(
                    x=xs, y=[p.y * scale for p in points], mode="lines+markers", name=name,
                    line={"color": colour, "dash": dash},
                )
            )  # fmt: skip

    first = data.sessions[0]
    x_name = X_NAMES.get(first.x_column, first.x_column)
    for stat in ("p50", "p99"):
        fig = go.Figure()
        for s in data.sessions:
            lines(fig, s.latency[stat], s)
        if fig.data:
            caption = f"{stat} latency against input size, one line per resource configuration"
            caption += ", one colour per session" if several else ""
            figs.append(
                (
                    "latency",
                    caption + "; bands: 95% intervals",
                    layout(fig, f"{stat} latency", x_name, "seconds"),
                )
            )
    fig = go.Figure()
    for s in data.sessions:
        lines(fig, s.throughput, s, band=False)
    if fig.data:
        figs.append(
            (
                "throughput",
                "throughput (answered requests/s) against input size",
                layout(fig, "throughput", x_name, "requests/s"),
            )
        )
    for what, unit, scale in (("TTFT p50", "seconds", 1.0), ("TPOT p50", "ms", 1e3)):
        fig = go.Figure()
        for s in data.sessions:
            lines(fig, s.tokens.get(what, {}), s, scale)
        if fig.data:
            figs.append(
                (
                    "generative",
                    f"{what} against prompt length; bands: 95% intervals",
                    layout(fig, what, "prompt tokens", unit),
                )
            )
    for s in data.sessions:
        if not s.cold_labels:
            continue
        fig = go.Figure()
        for phase, values in s.cold_phases.items():
            fig.add_trace(go.Bar(y=s.cold_labels, x=values, name=phase, orientation="h"))
        fig.update_layout(barmode="stack")
        figs.append(("cold start", f"{s.name}: cold start by phase (median over the configuration's containers)",
                     layout(fig, f"cold start: {s.name}", "seconds", "")))  # fmt: skip
    for s in data.sessions:
        fig = _resource_figure(s, go)
        if fig is not None:
            figs.append(
                (
                    "resources",
                    f"{s.name}: peak CPU and memory per cell; throttled seconds",
                    layout(fig, f"resources: {s.name}", "cell", ""),
                )
            )
    for s in data.sessions:
        if s.capacity:
            fig = go.Figure()
            from tui_profiler.session.reader import config_label

            for row in s.capacity:
                fig.add_trace(
                    go.Bar(x=[f"{config_label(row)} {row.get('input_scale') or row.get('token_len') or ''}"],
                           y=[csv_number(row.get("max_load")) or 0], name=config_label(row), showlegend=False,
                           marker_color=s.colour)
                )  # fmt: skip
            figs.append(
                (
                    "capacity",
                    f"{s.name}: the largest load that met the SLO (capacity.csv)",
                    layout(fig, "capacity", "configuration and input", "max load"),
                )
            )
    if data.comparisons:
        figs.append(
            (
                "comparison",
                "change against the baseline with 95% intervals, per cell (p50, p99, throughput)",
                _compare_figure(data, go),
            )
        )
    return figs


def _resource_figure(s: SessionReport, go: Any) -> Any:
    cells = s.cells
    if cells.empty or "peak_mem_bytes" not in cells:
        return None
    from plotly.subplots import make_subplots

    from tui_profiler.session.reader import config_label

    labels = [f"{int(r['cell_index']) + 1}: {config_label(r)}" if csv_number(r.get("cell_index")) is not None else config_label(r)
              for r in cells.to_dict("records")]  # fmt: skip
    fig = make_subplots(rows=1, cols=3, subplot_titles=("peak CPU cores", "peak memory (GiB)", "throttled s"))
    cols = (("peak_cpu_cores", 1.0), ("peak_mem_bytes", 1 / 1024**3), ("throttled_s", 1.0))
    drawn = False
    for i, (column, scale) in enumerate(cols, start=1):
        if column not in cells:
            continue
        ys = [(csv_number(v) or 0.0) * scale for v in cells[column]]
        drawn = drawn or any(ys)
        fig.add_trace(
            go.Bar(x=labels, y=ys, name=column, marker_color=s.colour, showlegend=False), row=1, col=i
        )
    return fig if drawn else None


def _compare_figure(data: ReportData, go: Any) -> Any:
    from tui_profiler.analysis.compare import key_label

    fig = go.Figure()
    colours = {s.name: s.colour for s in data.sessions}
    for metric, symbol in (("p50_s", "circle"), ("p99_s", "diamond"), ("throughput_rps", "square")):
        for session in dict.fromkeys(r.session for r in data.comparisons):
            rows = [
                r
                for r in data.comparisons
                if r.metric == metric and r.session == session and r.ratio is not None
            ]
            if not rows:
                continue
            rows.sort(key=lambda r: key_label(r.keys))
            y = [(r.ratio - 1) * 100 for r in rows]  # type: ignore[operator]
            up = [((r.ratio_hi or r.ratio) - r.ratio) * 100 for r in rows]  # type: ignore[operator]
            down = [(r.ratio - (r.ratio_lo or r.ratio)) * 100 for r in rows]  # type: ignore[operator]
            fig.add_trace(
                go.Scatter(
                    x=[key_label(r.keys) for r in rows], y=y, mode="markers", name=f"{session}: {metric}",
                    marker={"color": colours.get(session.split("#")[0], "#333"), "symbol": symbol, "size": 9},
                    error_y={"type": "data", "array": up, "arrayminus": down, "visible": True},
                    text=[r.verdict for r in rows],
                )
            )  # fmt: skip
    fig.add_hline(y=0, line={"color": "#888", "width": 1})
    fig.update_layout(
        title=f"change against {data.sessions[0].name} (%)", template="plotly_white", height=480,
        yaxis_title="% change", margin={"t": 60, "b": 140},
    )  # fmt: skip
    return fig


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _where_rows(s: SessionReport) -> list[tuple[str, str]]:
    """meta.json's plain facts (preset, runtime, host, engine ...), leaving out the long ones."""
    rows: list[tuple[str, str]] = []
    for key, value in s.meta.items():
        if key in ("plan", "preset_toml", "preset", "search", "hosts", "fleet") or isinstance(
            value, (dict, list)
        ):
            continue
        rows.append((key, str(value)))
    preset = s.meta.get("preset")
    if isinstance(preset, dict):
        for key, value in preset.items():
            if not isinstance(value, (dict, list)):
                rows.append((f"preset.{key}", str(value)))
    return rows


def caps_rows(cells: pd.DataFrame) -> list[list[str]]:
    """Per resource configuration: the caps asked (cpu_cores, mem_cap_gb, gpus) and whether enforced."""
    from tui_profiler.session.reader import config_label

    seen: dict[str, list[str]] = {}
    for row in cells.to_dict("records") if not cells.empty else []:
        label = config_label(row)
        if label in seen:
            continue
        seen[label] = [
            label,
            *(str(row.get(c, "")) if str(row.get(c, "")) != "nan" else "—" for c in
              ("model_name", "cpu_cores", "mem_cap_gb", "gpus", "cpus_enforced", "mem_enforced", "gpus_enforced", "cpuset")),
        ]  # fmt: skip
    return list(seen.values())


CAPS_HEADERS = (
    "config",
    "model",
    "CPUs asked",
    "memory GiB asked",
    "GPUs",
    "CPUs enforced",
    "memory enforced",
    "GPUs enforced",
    "cpuset",
)
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;font-size:.88em;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}pre{background:#f8f8f8;padding:10px;overflow-x:auto;font-size:.85em}
.tp-plot{min-height:430px}.verdict-slower,.verdict-higher{color:#b00;font-weight:bold}
.verdict-faster,.verdict-lower{color:#070;font-weight:bold}.verdict-not{color:#a60}.dim{color:#777}
"""


def _comparison_html(data: ReportData) -> str:
    from tui_profiler.analysis.compare import change_text, key_label, summary_line

    if data.compare_error:
        return f"<p>{html.escape(data.compare_error)}</p>"
    rows = data.comparisons
    out = [f"<p><b>{html.escape(summary_line(rows))}</b></p>"]
    several = len({r.session for r in rows}) > 1
    body = []
    for r in rows:
        if (
            not r.detected
            and r.verdict != "not comparable"
            and r.metric not in ("p50_s", "p99_s", "throughput_rps")
        ):
            continue
        css = "verdict-" + r.verdict.split()[0]
        cells = ([r.session] if several else []) + [key_label(r.keys), r.metric, _fmt(r.metric, r.baseline_value),
                                                     _fmt(r.metric, r.value), change_text(r) if r.ratio else ""]  # fmt: skip
        tds = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
        body.append(
            f"<tr>{tds}<td class='{css}'>{html.escape(r.verdict)}</td><td>{html.escape(r.reason)}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            (["session"] if several else [])
            + ["cell", "metric", "baseline", "value", "change [95%]", "verdict", "reason"]
        )
    )
    out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    out.append("<p class='dim'>Rows: p50, p99 and throughput of every matched cell, and every detected change or "
               "not comparable cell of the other metrics (`tui-profiler compare --csv` writes them all).</p>")  # fmt: skip
    return "\n".join(out)


def _fmt(metric: str, value: float | None) -> str:
    from tui_profiler import formatting

    if metric == "peak_mem_bytes":
        return formatting.size(value)
    if metric == "throughput_rps":
        return formatting.rate(value)
    return formatting.latency(value)


def write_html(data: ReportData, out: Path) -> Path:
    try:
        import plotly
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise ReportError("needs plotly — install it with: pip install plotly") from None
    figs = _figures(data)
    names = ", ".join(s.name for s in data.sessions)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>tui-profiler report: {html.escape(names)}</title><style>{STYLE}</style>",
        f"<script type='text/javascript'>/* plotly.js {plotly.__version__} */{get_plotlyjs()}</script></head><body>",
        f"<h1>tui-profiler report: {html.escape(names)}</h1>",
    ]
    if len(data.sessions) > 1:
        parts.append(
            f"<p>Baseline: <b>{html.escape(data.sessions[0].name)}</b>. Each session has one colour in every plot.</p>"
        )
    parts.append("<h2>What was run, and where</h2>")
    for s in data.sessions:
        parts.append(f"<h3 style='color:{s.colour}'>{html.escape(s.name)}</h3>")
        parts.append(_table(("fact", "value"), _where_rows(s)))
        parts.append("<p>Caps asked and enforced, per resource configuration:</p>")
        parts.append(_table(CAPS_HEADERS, caps_rows(s.cells)))
    if data.comparisons or data.compare_error:
        parts.append("<h2>Comparison</h2>")
        parts.append(_comparison_html(data))
    sections: dict[str, list[tuple[str, Any]]] = {}
    for section, caption, fig in figs:
        sections.setdefault(section, []).append((caption, fig))
    titles = {"latency": "Latency against input size", "throughput": "Throughput", "generative": "Generative metrics",
              "cold start": "Cold start", "resources": "Resource peaks and throttling", "capacity": "Capacity",
              "comparison": "Changes against the baseline"}  # fmt: skip
    n = 0
    for section, items in sections.items():
        parts.append(f"<h2>{html.escape(titles.get(section, section))}</h2>")
        for caption, fig in items:
            n += 1
            div = fig.to_html(
                full_html=False, include_plotlyjs=False, div_id=f"plot-{n}", config={"responsive": True}
            )
            parts.append(
                f"<p class='dim'>{html.escape(caption)}</p><div class='tp-plot' data-caption='{html.escape(caption)}'>{div}</div>"
            )
        if section == "capacity":
            from tui_profiler import formatting

            for s in data.sessions:
                if s.capacity:
                    parts.append(
                        _table(
                            formatting.CAPACITY_HEADERS, [formatting.capacity_cells(r) for r in s.capacity]
                        )
                    )
    parts.append("<h2>Fitted model and recommendation</h2>")
    for s in data.sessions:
        parts.append(f"<h3 style='color:{s.colour}'>{html.escape(s.name)}</h3>")
        parts.append(f"<pre>{html.escape(chr(10).join(s.fit_lines))}</pre>")
        parts.append(f"<pre>{html.escape(chr(10).join(s.recommendation))}</pre>")
    parts.append(
        "<p class='dim'>Written by tui-profiler report; plots by plotly.js, embedded (no network needed).</p>"
    )
    parts.append("</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


# -------------------------------------------------------------------------------------------- Markdown


def write_markdown(data: ReportData, out: Path) -> Path:
    """A Markdown summary with PNG figures (matplotlib) in `<OUT stem>_files/` beside it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError(
            "--md needs matplotlib — install it with: pip install 'tui-profiler[plot]'"
        ) from None
    from tui_profiler.analysis.compare import change_text, key_label, summary_line

    images = out.parent / f"{out.stem}_files"
    images.mkdir(parents=True, exist_ok=True)
    lines = [f"# tui-profiler report: {', '.join(s.name for s in data.sessions)}", ""]
    for s in data.sessions:
        preset = (
            s.meta.get("preset_name") or (s.meta.get("preset") or {}).get("name", "")
            if isinstance(s.meta.get("preset"), dict)
            else s.meta.get("preset_name", "")
        )
        lines.append(
            f"- **{s.name}**: preset {preset or '?'}, runtime {s.meta.get('runtime', '?')}, {len(s.cells)} cells"
        )
    lines.append("")
    fig, ax = plt.subplots(figsize=(8, 4.8))
    several = len(data.sessions) > 1
    for s in data.sessions:
        for i, (label, points) in enumerate(s.latency["p50"].items()):
            colour = s.colour if several else SESSION_COLOURS[i % len(SESSION_COLOURS)]
            style = ("-", "--", ":", "-.")[i % 4] if several else "-"
            xs = [p.x for p in points]
            ax.plot(
                xs,
                [p.y for p in points],
                style,
                marker="o",
                color=colour,
                label=f"{s.name}: {label}" if several else label,
            )
            bounded = [p for p in points if p.lo is not None and p.hi is not None]
            if bounded:
                ax.fill_between(
                    [p.x for p in bounded],
                    [p.lo or 0.0 for p in bounded],
                    [p.hi or 0.0 for p in bounded],
                    color=colour,
                    alpha=0.15,
                )
    ax.set_xlabel(X_NAMES.get(data.sessions[0].x_column, data.sessions[0].x_column))
    ax.set_ylabel("p50 latency (s)")
    ax.set_title("p50 latency against input size (bands: 95% intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    latency_png = images / "latency.png"
    fig.savefig(latency_png, dpi=110)
    plt.close(fig)
    lines += ["## Latency against input size", "", f"![p50 latency]({images.name}/latency.png)", ""]
    if data.comparisons:
        lines += ["## Comparison", "", summary_line(data.comparisons), ""]
        several_sessions = len({r.session for r in data.comparisons}) > 1
        head = (["session"] if several_sessions else []) + [
            "cell",
            "metric",
            "change [95%]",
            "verdict",
            "reason",
        ]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        shown = [r for r in data.comparisons if r.detected or r.verdict == "not comparable"][:40]
        for r in shown:
            cells = ([r.session] if several_sessions else []) + [
                key_label(r.keys),
                r.metric,
                change_text(r) if r.ratio else "",
                r.verdict,
                r.reason,
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if not shown:
            lines.append("| " + " | ".join(["no detected change"] + [""] * (len(head) - 1)) + " |")
        lines.append("")
    elif data.compare_error:
        lines += ["## Comparison", "", data.compare_error, ""]
    for s in data.sessions:
        lines += [f"## Fitted model: {s.name}", "", "```", *s.fit_lines, *s.recommendation, "```", ""]
    out.write_text("\n".join(lines), encoding="utf-8")
    return out
