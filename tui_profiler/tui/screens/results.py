"""Results screen: sessions in the output folder, their cells, the AC-Prof-style figure, a latency
histogram per cell, the fitted latency model (when `tui_profiler.analysis.fit` exists), a capacity search's
answer (capacity.csv, when the session has one) and export. Space marks sessions: with two or more marked,
the Compare tab overlays them (one colour per session) with `tui-profiler compare`'s verdicts; `/` filters
the list (preset, date, host class)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    OptionList,
    Static,
    TabbedContent,
    TabPane,
)
from textual.widgets.option_list import Option

from tui_profiler import formatting
from tui_profiler.session import reader
from tui_profiler.session.schema import GenColumn, SessionStatus
from tui_profiler.tui.screens.live import CELLS_TABLE_HEADERS, cell_row
from tui_profiler.tui.widgets.plots import HistogramPlot, Line, LinePlot

X_LABELS = {"input_scale": "input scale", "pixels": "pixels", "token_len": "tokens"}
# One colour per marked session, in the overlay and on its mark in the list.
PLOT_COLOURS = ("cyan", "orange", "green", "magenta", "blue", "red")
SESSION_STYLES = ("cyan", "dark_orange", "green", "magenta", "blue", "red")
COMPARE_HEADERS = ("session", "cell", "metric", "change [95%]", "verdict", "reason")


def session_matches(info: reader.SessionInfo, text: str) -> bool:
    """The list's filter: every word of `text` in the session's name (its date and preset), preset, status
    or host class (meta.json's, or the host it ran on)."""
    if not text:
        return True
    hosts = [info.meta.get(k) for k in ("host_class", "hostname", "host")]
    haystack = " ".join(str(v) for v in (info.name, info.preset, info.status, *hosts) if v).lower()
    return all(word in haystack for word in text.lower().split())


class ResultsScreen(Screen[None]):
    AUTO_FOCUS = "#session-list"  # not the filter box above it, hidden until `/`
    BINDINGS: ClassVar = [
        Binding("r", "reload", "Reload"),
        Binding("e", "export", "Export CSV"),
        Binding("c", "tab('tab-cells')", "Cells"),
        Binding("f", "tab('tab-figure')", "Figure"),
        Binding("h", "tab('tab-histogram')", "Histogram"),
        Binding("m", "tab('tab-fit')", "Model fit"),
        Binding("a", "tab('tab-capacity')", "Capacity", show=False),
        Binding("p", "toggle_percentile", "p50/p99", show=False),
        Binding("t", "tab('tab-tokens')", "Tokens", show=False),
        Binding("space", "mark", "Mark to compare", show=False),
        Binding("v", "tab('tab-compare')", "Compare", show=False),
        Binding("slash", "filter", "Filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.session_infos: list[reader.SessionInfo] = []  # the listed ones (the filter's)
        self.all_sessions: list[reader.SessionInfo] = []
        self.session: reader.SessionInfo | None = None
        self.cells: Any = None
        self._requests: Any = None
        self.y_column = "p50_s"
        self.marked: list[str] = []  # session names marked to compare, in the order marked (first: baseline)
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="results"):
            with Vertical(id="session-pane"):
                yield Label("Sessions", classes="pane-title")
                search = Input(placeholder="filter: preset, date, host class", id="session-filter")
                search.display = False  # `/` shows it
                yield search
                yield OptionList(id="session-list")
                yield Static("", id="session-meta")
            with TabbedContent(id="result-tabs", initial="tab-cells"):
                with TabPane("Cells", id="tab-cells"):
                    yield DataTable(id="result-cells", cursor_type="row", zebra_stripes=True)
                with TabPane("Figure", id="tab-figure"):
                    yield LinePlot("latency vs input", ylabel="s", id="scaling-plot")
                with TabPane("Tokens", id="tab-tokens"):  # generative sessions only
                    with Vertical():
                        yield LinePlot("TTFT vs prompt length", ylabel="s", id="ttft-plot")
                        yield LinePlot("TPOT vs prompt length", ylabel="ms", id="tpot-plot")
                with TabPane("Histogram", id="tab-histogram"):
                    yield HistogramPlot(id="cell-histogram")
                with TabPane("Model fit", id="tab-fit"):
                    with VerticalScroll():
                        yield Static("", id="fit-text")
                with TabPane("Capacity", id="tab-capacity"):  # capacity searches only
                    with Vertical():
                        yield Static("", id="capacity-text")
                        yield DataTable(id="capacity-table", cursor_type="row", zebra_stripes=True)
                with TabPane("Compare", id="tab-compare"):  # two or more sessions marked
                    with Vertical():
                        yield LinePlot("sessions overlaid", ylabel="s", id="compare-plot")
                        yield Static("", id="compare-text")
                        yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
                with TabPane("Export", id="tab-export"):
                    yield Static(
                        "Press e to write one merged CSV (and Parquet when pyarrow is installed) "
                        "into the session's export/ folder.",
                        id="export-text",
                    )
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#result-cells", DataTable).add_columns(*CELLS_TABLE_HEADERS)
        self.query_one("#capacity-table", DataTable).add_columns(*formatting.CAPACITY_HEADERS)
        self.query_one("#compare-table", DataTable).add_columns(*COMPARE_HEADERS)
        self.query_one("#result-tabs", TabbedContent).hide_tab("tab-compare")
        self.action_reload()

    def on_screen_resume(self) -> None:
        self.action_reload()

    # ---------------------------------------------------------------- sessions

    def action_reload(self) -> None:
        output_dir = self.app.output_dir  # type: ignore[attr-defined]
        self.all_sessions = reader.list_sessions(output_dir)
        self.session_infos = [i for i in self.all_sessions if session_matches(i, self.filter_text)]
        olist = self.query_one("#session-list", OptionList)
        keep = self.session.name if self.session else None
        olist.clear_options()
        for info in self.session_infos:
            olist.add_option(Option(self._session_label(info), id=info.name))
        if not self.session_infos:
            self.session = None
            what = f"no session matches '{self.filter_text}'" if self.all_sessions else "no sessions"
            self.query_one("#session-meta", Static).update(
                f"{what} in {output_dir}/ yet — run a preset from Setup (F2)"
                if not self.all_sessions
                else f"{what} (/ changes the filter)"
            )
            return
        names = [i.name for i in self.session_infos]
        index = names.index(keep) if keep in names else 0
        olist.highlighted = index
        self.show_session(self.session_infos[index])

    def _session_label(self, info: reader.SessionInfo) -> Text:
        label = Text()
        if info.name in self.marked:
            n = self.marked.index(info.name)
            label.append("● ", style=SESSION_STYLES[n % len(SESSION_STYLES)])
        label.append(info.name, style="bold")
        if info.status and info.status != SessionStatus.OK:
            label.append(f" {info.status}", style="yellow")
        return label

    def action_mark(self) -> None:
        """Mark or unmark the highlighted session for the Compare tab (the first marked is the baseline)."""
        if self.session is None:
            return
        name = self.session.name
        if name in self.marked:
            self.marked.remove(name)
        else:
            self.marked.append(name)
        olist = self.query_one("#session-list", OptionList)
        highlighted = olist.highlighted
        for i, info in enumerate(self.session_infos):
            olist.replace_option_prompt_at_index(i, self._session_label(info))
        olist.highlighted = highlighted
        self.draw_compare()

    def action_filter(self) -> None:
        box = self.query_one("#session-filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#session-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.action_reload()

    @on(Input.Submitted, "#session-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        box = self.query_one("#session-filter", Input)
        box.display = bool(event.value.strip())
        self.query_one("#session-list", OptionList).focus()

    def draw_compare(self) -> None:
        """The marked sessions overlaid (p50 vs input, one colour per session, one line per session and
        configuration) and the compare verdicts, in a thread (the verdicts read every request)."""
        tabs = self.query_one("#result-tabs", TabbedContent)
        paths = {i.name: i.path for i in self.all_sessions}
        marked = [paths[n] for n in self.marked if n in paths]
        if len(marked) < 2:
            if tabs.active == "tab-compare":
                tabs.active = "tab-cells"
            tabs.hide_tab("tab-compare")
            return
        tabs.show_tab("tab-compare")
        plot = self.query_one("#compare-plot", LinePlot)
        lines: list[Line] = []
        x_col = ""
        for n, path in enumerate(marked):
            x, series = reader.scaling_series(reader.read_cells(path), self.y_column)
            x_col = x_col or x
            colour = PLOT_COLOURS[n % len(PLOT_COLOURS)]
            lines += [
                Line(f"{path.name}: {s.label}", s.x, s.y, color=colour, marker="braille") for s in series
            ]
        name = "p50" if self.y_column == "p50_s" else "p99"
        if lines:
            plot.xlabel = X_LABELS.get(x_col, x_col)
            plot.show_lines(lines, title=f"{name} latency (s): {len(marked)} sessions, one colour each")
        else:
            plot.show_unavailable("no finished cells with latency and input size", title="sessions overlaid")
        self.query_one("#compare-text", Static).update(Text("comparing…", style="dim italic"))
        self._compare_worker(marked)

    @work(thread=True, exclusive=True, group="compare")
    def _compare_worker(self, paths: list[Path]) -> None:
        from tui_profiler.analysis.compare import CompareError, SessionData, compare_sessions, summary_line

        try:
            data = [SessionData(*reader.compare_inputs(p)) for p in paths]
            rows = compare_sessions(data[0], data[1:])
            text: Text | str = Text(summary_line(rows))
        except CompareError as exc:
            rows, text = [], Text(exc.one_line(), style="yellow")
        self.app.call_from_thread(self._show_compare, rows, text)

    def _show_compare(self, rows: list[Any], text: Text | str) -> None:
        from tui_profiler.analysis.compare import change_text, key_label

        self.query_one("#compare-text", Static).update(text)
        table = self.query_one("#compare-table", DataTable)
        table.clear()
        for r in rows:
            style = formatting.VERDICT_STYLES.get(r.verdict, "")
            table.add_row(
                r.session,
                key_label(r.keys),
                r.metric,
                change_text(r) if r.ratio is not None else "",
                Text(r.verdict, style=style),
                r.reason,
            )

    @on(OptionList.OptionHighlighted, "#session-list")
    def _session_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_index < len(self.session_infos):
            info = self.session_infos[event.option_index]
            if self.session is None or info.name != self.session.name:
                self.show_session(info)

    def show_session(self, info: reader.SessionInfo) -> None:
        self.session = info
        self._requests = None
        self.cells = reader.read_cells(info.path)
        meta = Text()
        meta.append(f"{info.preset or '?'}\n", style="bold")
        runtime = info.meta.get("runtime")
        if runtime:
            meta.append(f"runtime {runtime}\n")
        if info.n_cells is not None:
            meta.append(f"{info.n_cells} cells")
        if info.wall_s is not None:
            meta.append(f" · {formatting.duration(info.wall_s)}")
        if info.status:
            meta.append(f" · {info.status}")
        self.query_one("#session-meta", Static).update(meta)
        table = self.query_one("#result-cells", DataTable)
        table.clear()
        for row in self.cells.to_dict("records") if not self.cells.empty else []:
            table.add_row(*cell_row(row))
        self.draw_figure()
        self.draw_token_figures()
        self.draw_histogram()
        self.query_one("#export-text", Static).update(
            "Press e to write one merged CSV (and Parquet when pyarrow is installed) into "
            f"{info.name}/export/."
        )
        self.draw_fit()
        self.draw_capacity()

    def draw_capacity(self) -> None:
        """capacity.csv of a capacity search (`run --find-max-load`): the tab shows only when there is one."""
        tabs = self.query_one("#result-tabs", TabbedContent)
        rows = reader.read_capacity(self.session.path) if self.session is not None else []
        if not rows:
            if tabs.active == "tab-capacity":
                tabs.active = "tab-cells"
            tabs.hide_tab("tab-capacity")
            return
        tabs.show_tab("tab-capacity")
        search = (self.session.meta.get("search") or {}) if self.session is not None else {}
        kind = search.get("load_kind", "load")
        self.query_one("#capacity-text", Static).update(
            Text(
                f"The largest {kind} that meets the SLO, per resource configuration and input size "
                f"({len(rows)} searched). 'decided': every step's interval lay clear of the bound; "
                "'within noise': a step stopped at its request cap. `tui-profiler fit SESSION --recommend "
                "--rps R` picks the cheapest configuration for R requests/s.",
                style="dim",
            )
        )
        table = self.query_one("#capacity-table", DataTable)
        table.clear()
        for row in rows:
            table.add_row(*formatting.capacity_cells(row))

    # ---------------------------------------------------------------- figure, histogram, fit

    def draw_figure(self) -> None:
        plot = self.query_one("#scaling-plot", LinePlot)
        x_col, series = reader.scaling_series(self.cells, self.y_column)
        name = "p50" if self.y_column == "p50_s" else "p99"
        if not series:
            plot.show_unavailable("no finished cells with latency and input size", title="latency vs input")
            return
        plot.xlabel = X_LABELS.get(x_col, x_col)
        plot.show_lines(
            [Line(s.label, s.x, s.y, marker="braille") for s in series],
            title=f"{name} latency (s) vs {X_LABELS.get(x_col, x_col)}, one line per config "
            "(p toggles p50/p99)",
        )

    def action_toggle_percentile(self) -> None:
        self.y_column = "p99_s" if self.y_column == "p50_s" else "p50_s"
        self.draw_figure()
        self.draw_token_figures()
        if len(self.marked) >= 2:
            self.draw_compare()

    def draw_token_figures(self) -> None:
        """TTFT and TPOT against prompt length, one line per resource config (generative sessions)."""
        tabs = self.query_one("#result-tabs", TabbedContent)
        cells = self.cells
        generative = (
            cells is not None
            and not cells.empty
            and all(c in cells and cells[c].notna().any() for c in (GenColumn.TTFT_P50_S, "token_len"))
        )  # the store writes every column: an image session's token columns are there, all empty
        if cells is None or not generative:
            if tabs.active == "tab-tokens":
                tabs.active = "tab-cells"
            tabs.hide_tab("tab-tokens")
            return
        tabs.show_tab("tab-tokens")
        # prompt length is the x axis even when the session swept another input too
        by_prompt = cells.drop(columns=[c for c in reader.X_COLUMNS if c != "token_len"], errors="ignore")
        p99 = self.y_column == "p99_s"
        name = "p99" if p99 else "p50"
        for selector, column, what, scale, unit in (
            ("#ttft-plot", GenColumn.TTFT_P99_S if p99 else GenColumn.TTFT_P50_S, "TTFT", 1.0, "s"),
            ("#tpot-plot", GenColumn.TPOT_P99_S if p99 else GenColumn.TPOT_P50_S, "TPOT", 1e3, "ms"),
        ):
            plot = self.query_one(selector, LinePlot)
            _, series = reader.scaling_series(by_prompt, str(column))
            title = f"{name} {what} ({unit}) vs prompt tokens, one line per config (p toggles p50/p99)"
            if not series:
                plot.show_unavailable(f"no finished cells with {what} and a prompt length", title=title)
                continue
            plot.xlabel = X_LABELS["token_len"]
            plot.show_lines(
                [Line(s.label, s.x, [v * scale for v in s.y], marker="braille") for s in series],
                title=title,
            )

    def _requests_frame(self) -> Any:
        if self._requests is None and self.session is not None:
            self._requests = reader.read_requests(self.session.path)
        return self._requests

    @on(DataTable.RowHighlighted, "#result-cells")
    def _cell_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.draw_histogram(event.cursor_row)

    def draw_histogram(self, row: int = 0) -> None:
        plot = self.query_one("#cell-histogram", HistogramPlot)
        if self.cells is None or self.cells.empty or row >= len(self.cells):
            plot.show_values([], title="latency histogram")
            return
        record = self.cells.iloc[row].to_dict()
        index = record.get("cell_index", row)
        values = reader.cell_latencies(self._requests_frame(), int(index))
        label = " ".join(str(x) for x in cell_row(record)[1:4])
        flags = formatting.saturation(record.get("saturation"))
        reason = record.get("saturation_reason")
        saturated = f" · saturated ({flags}): {reason}" if flags and isinstance(reason, str) else ""
        saturated = saturated or (f" · saturated ({flags})" if flags else "")
        explained = formatting.tail_line(record)  # CPU per request and the tail's verdict
        tail = f" · {explained}" if explained else ""
        plot.show_values(
            values,
            title=f"cell {int(index) + 1}: {label} · {len(values)} timed requests{saturated}{tail} "
            "(↑/↓ in Cells picks the cell)",
        )

    def draw_fit(self) -> None:
        widget = self.query_one("#fit-text", Static)
        if self.session is None:
            widget.update("")
            return
        widget.update(Text("fitting…", style="dim italic"))
        self._fit_worker(self.session.path)

    @work(thread=True, exclusive=True, group="fit")
    def _fit_worker(self, path: Path) -> None:
        text = fit_summary(path)
        self.app.call_from_thread(self.query_one("#fit-text", Static).update, text)

    # ---------------------------------------------------------------- export and tabs

    def action_export(self) -> None:
        if self.session is None:
            self.notify("no session selected", severity="warning")
            return
        try:
            paths = reader.export_session(self.session.path)
        except OSError as exc:
            self.notify(f"export failed: {exc}", severity="error")
            return
        lines = "\n".join(str(p) for p in paths)
        parquet = "" if any(p.suffix == ".parquet" for p in paths) else "\n(Parquet: install pyarrow)"
        self.query_one("#export-text", Static).update(f"Written:\n{lines}{parquet}")
        self.query_one("#result-tabs", TabbedContent).active = "tab-export"
        self.notify(f"exported {paths[0]}")

    def action_tab(self, tab: str) -> None:
        self.query_one("#result-tabs", TabbedContent).active = tab


def fit_summary(session_dir: Path) -> Text | str:
    """The fitted latency model (`tui_profiler.analysis.fit`) and a few predictions: the measured CPU
    values, the midpoints between them and one step beyond, at the largest measured input."""
    from tui_profiler.analysis import fit  # lazy: scipy and pandas load when a model is asked for

    try:
        report = fit.fit_paths([session_dir])
    except Exception as exc:  # too few cells, no latency...: say why, the screen lives on
        return Text(
            f"no model fitted: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", style="yellow"
        )
    text = Text()
    text.append("Latency model (tui-profiler fit)\n", style="bold")
    text.append("\n".join(report.summary_lines()) + "\n")
    for group in report.groups:
        text.append(f"\nPredictions: {group.label}\n", style="bold")
        cpu_lo, cpu_hi = group.ranges.get("cpu_cores", (None, None))
        if cpu_lo is None or cpu_hi is None:
            continue
        size = group.ranges.get(group.size_column, (None, None))[1] if group.size_column else None
        candidates = sorted({cpu_lo, (cpu_lo + cpu_hi) / 2, cpu_hi, cpu_hi * 2})
        for cpus in candidates:
            point = {"cpu_cores": cpus, "gpu_mode": group.key.get("gpu_mode", "off")}
            if group.size_column:
                point[group.size_column] = size
            try:
                value, warning = fit.predict_point(group, point)
            except ValueError as exc:
                text.append(f"  {cpus:g} CPU: {exc}\n", style="yellow")
                continue
            where = f" at {group.size_column}={size:g}" if group.size_column else ""
            unit = "req/s" if group.target == "throughput" else "s"
            text.append(f"  {cpus:g} CPU{where}: {value:.4g} {unit}")
            text.append(f"  ({warning})\n" if warning else "\n", style="yellow" if warning else "")
    for target, what in (("ttft", "Time to first token"), ("tpot", "Time per output token")):
        try:
            token_report = fit.fit_paths([session_dir], target=target)
        except ValueError:  # not a generative session: nothing to add
            continue
        text.append(f"\n{what} model (tui-profiler fit --target {target})\n", style="bold")
        text.append("\n".join(token_report.summary_lines()) + "\n")
    return text
