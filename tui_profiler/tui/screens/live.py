"""Live screen: progress, cold start, live plots, finished cells and the log, redrawn on a timer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, ProgressBar, RichLog, Static

from tui_profiler import formatting
from tui_profiler.session.schema import CellStatus, GenColumn, SessionStatus
from tui_profiler.tui.live_state import LiveState
from tui_profiler.tui.widgets.heatmap import GridHeatMap
from tui_profiler.tui.widgets.phasebar import ColdStartBar
from tui_profiler.tui.widgets.plots import Line, LinePlot

REDRAW_HZ = 6  # independent of the event rate: 4-10 Hz keeps plots fluid and the loop free
# Plots are the expensive part (plotext builds every cell in Python). When they cost more than this share
# of the wall clock (a slow or busy machine, a huge terminal), they refresh less often than the rest of
# the screen, so the event loop keeps absorbing events and keys.
PLOT_BUDGET = 0.35
MIB = 1024 * 1024
CELLS_TABLE_HEADERS = (
    "#",
    "config",
    "input",
    "load",
    "p50",
    "p99",
    "req/s",
    "peak CPU",
    "peak mem",
    "throttled",
    "saturated",
    "status",
)
LEVEL_STYLES = {"debug": "dim", "info": "", "warning": "yellow", "error": "bold red"}


class LiveScreen(Screen[None]):
    BINDINGS: ClassVar = [
        Binding("s", "stop", "Stop"),
        Binding("v", "toggle_view", "Plots/tables"),
        Binding("c", "clear_log", "Clear log", show=False),
        Binding("m", "next_metric", "Server metric", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._seen_version = -1
        self._seen_log = 0
        self._seen_cells = 0
        self._state_id = 0
        self.redraws = 0  # timer ticks that redrew (read by the ingest benchmark)
        self.redraw_times: list[float] = []
        self.redraw_cpu_s = 0.0  # time spent preparing redraws (the plots' own rendering comes after)
        self.plot_refreshes = 0
        self._last_plot_refresh = 0.0
        self._plot_render_mark = 0.0
        self._last_plot_cost = 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="live-top"):
            with Horizontal(id="progress-row"):
                yield ProgressBar(total=1, show_eta=False, id="cells-progress")
                yield Static("", id="progress-label")
            yield Static(
                "no sweep running — F2 opens Setup, choose a preset and press Ctrl+R", id="cell-label"
            )
            yield ColdStartBar(id="cold-bar")
            yield GridHeatMap(id="heatmap")  # an adaptive plan's grid: measured and predicted cells
        with Grid(id="plots"):
            yield LinePlot("latency per request", xlabel="s", ylabel="ms", id="plot-latency")
            # shown for generative cells only (the screen's -generative class)
            yield LinePlot("time to first token", xlabel="s", ylabel="ms", id="plot-ttft")
            yield LinePlot("inter-token latency", xlabel="s", ylabel="ms", id="plot-itl")
            yield LinePlot("CPU cores used", xlabel="s", ylabel="cores", id="plot-cpu")
            yield LinePlot("memory", xlabel="s", ylabel="MiB", id="plot-mem")
            yield LinePlot("GPU", xlabel="s", id="plot-gpu")
        with Horizontal(id="live-bottom"):
            yield DataTable(id="cells-table", cursor_type="row", zebra_stripes=True)
            yield RichLog(id="live-log", max_lines=500, wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#cells-table", DataTable)
        table.add_columns(*CELLS_TABLE_HEADERS)
        self._apply_size_class()
        self.set_interval(1 / REDRAW_HZ, self.redraw)
        self.redraw()

    def on_resize(self) -> None:
        self._apply_size_class()

    def _apply_size_class(self) -> None:
        # Below 32 rows plots and tables take turns (key v) instead of sharing a cramped screen.
        self.set_class(self.app.size.height < 32, "-compact")

    @property
    def state(self) -> LiveState:
        state: LiveState = self.app.live_state  # type: ignore[attr-defined]
        return state

    def action_toggle_view(self) -> None:
        self.toggle_class("-tables")

    def action_next_metric(self) -> None:
        """Plot the next scraped server metric (without a GPU the GPU plot shows the server's /metrics)."""
        name = self.state.next_server_metric()
        if not name:
            self.notify("no server metrics scraped ([target] metrics)", severity="warning")
            return
        self.redraw(force=True)

    def action_clear_log(self) -> None:
        self.query_one("#live-log", RichLog).clear()

    def action_stop(self) -> None:
        if not self.app.is_running_sweep():  # type: ignore[attr-defined]
            self.notify("no sweep is running", severity="warning")
            return
        from tui_profiler.tui.screens.confirm import ConfirmScreen

        def answered(stop: bool | None) -> None:
            if stop:
                self.app.run_worker(self.app.stop_run(), group="stop")  # type: ignore[attr-defined]

        self.app.push_screen(
            ConfirmScreen(
                "Stop the sweep?",
                "The container is removed and finished cells are kept; the session can be resumed later.",
                yes="Stop",
            ),
            answered,
        )

    def redraw(self, force: bool = False) -> None:
        """One timer tick. `force` redraws everything now (tests and screenshots: no timing involved)."""
        if not self.is_current:  # another screen is showing: nothing to draw
            return
        state = self.state
        if id(state) != self._state_id:  # a new run: start the tables afresh
            self._state_id = id(state)
            self._seen_version = -1
            self._seen_log = 0
            self._seen_cells = 0
            self.query_one("#cells-table", DataTable).clear()
            self.query_one("#live-log", RichLog).clear()
        self._draw_progress(state)  # every tick: the ETA moves even when no event arrives
        if state.version == self._seen_version and not force:
            return
        self._seen_version = state.version
        if state.generative != self.has_class("-generative"):
            # the plot grid changes shape: titles are sized to the new widths once it is laid out
            self.set_class(state.generative, "-generative")
            self.call_after_refresh(self.redraw, True)
        self.redraws += 1
        started = time.perf_counter()
        self.redraw_times.append(started)
        if len(self.redraw_times) > 1000:
            del self.redraw_times[:500]
        self.query_one("#cold-bar", ColdStartBar).show(state.cold_phases, state.cold_total_s)
        self.set_class(bool(state.adaptive), "-adaptive")
        self.query_one("#heatmap", GridHeatMap).show(state.adaptive)
        if force or self._plots_due(started):
            self._draw_plots(state)
        self._draw_cells(state)
        self._draw_log(state)
        self.redraw_cpu_s += time.perf_counter() - started

    def _plots_due(self, now: float) -> bool:
        """Whether the plots may refresh now: at the timer's rate while rendering them costs less than
        PLOT_BUDGET of the time, proportionally less often when it costs more."""
        if self.has_class("-compact") and self.has_class("-tables"):
            return False  # hidden
        rendered = sum(p.render_s for p in self.query(LinePlot))
        if rendered != self._plot_render_mark:  # the previous refresh has been rendered since
            self._last_plot_cost = rendered - self._plot_render_mark
            self._plot_render_mark = rendered
        interval = max(1 / REDRAW_HZ, self._last_plot_cost / PLOT_BUDGET)
        if now - self._last_plot_refresh < interval - 0.5 / REDRAW_HZ:  # half a tick of timer jitter
            return False
        self._last_plot_refresh = now
        self.plot_refreshes += 1
        return True

    def _draw_progress(self, state: LiveState) -> None:
        bar = self.query_one("#cells-progress", ProgressBar)
        searching = state.searching and state.finished is None  # cells made as it goes: a bound only
        bar.update(total=None if searching else max(state.n_cells, 1), progress=state.cells_done)
        failed = f", {state.cells_failed} failed" if state.cells_failed else ""
        status = (
            state.finished.status if state.finished else (SessionStatus.RUNNING if state.n_cells else "idle")
        )
        label = f"{state.cells_done}/{state.n_cells} cells{failed} · ETA {formatting.duration(state.eta())}"
        if searching:
            word = "adaptive" if state.adaptive else "searching"
            label = f"{state.cells_done} cells{failed} · {word} (at most {state.n_cells})"
        self.query_one("#progress-label", Static).update(f"{label} · {status}")
        if state.current_index is not None:
            p50, p99 = _running_percentiles(state)
            err = f" · {state.cell_errors} errors" if state.cell_errors else ""
            tokens = ""
            if state.generative:
                ttft_p50, _ = state.ttft_stats()
                itl_p50, _ = state.itl_stats()
                tokens = f" · TTFT p50 {formatting.latency(ttft_p50)} · ITL p50 {formatting.latency(itl_p50)}"
            self.query_one("#cell-label", Static).update(
                f"cell {state.current_index + 1}: {formatting.cell_label(state.current_cell)} · "
                f"{state.cell_requests} requests{err} · p50 {p50} · p99 {p99}{tokens}"
            )
        elif state.preset_name:
            self.query_one("#cell-label", Static).update(f"{state.preset_name}: starting on {state.runtime}")

    def _draw_plots(self, state: LiveState) -> None:
        p50, p99 = state.latency_stats()
        intervals = state.latency_intervals()
        bounds: list[tuple[float, str]] = []
        if intervals is not None:  # each percentile's 95% interval: lines beside its own, a lighter hue
            p50, p99 = intervals[0].estimate, intervals[1].estimate
            for iv, color in zip(intervals, ("green+", "red+"), strict=True):
                bounds += [(v * 1e3, color) for v in (iv.lo, iv.hi) if v is not None]
        p50_text, p99_text = _running_percentiles(state)
        self._per_request_plot(
            "#plot-latency",
            "latency",
            list(state.latencies),
            p50,
            p99,
            wide=(72, f"latency (ms) · p50 {p50_text} · p99 {p99_text}"),
            narrow=f"p50 {formatting.latency(p50)} p99 {formatting.latency(p99)}",
            waiting=("waiting for requests", "latency per request"),
            bounds=bounds,
        )
        if state.generative:
            self._draw_token_plots(state)
        sample = state.last_sample
        cpu_cap = sample.cpu_cap if sample and sample.cpu_cap else state.current_cell.get("cpus")
        self._series_plot(
            "#plot-cpu",
            state.cpu,
            1.0,
            "CPU cores used",
            f" · cap {formatting.number(cpu_cap)}" if cpu_cap else " · uncapped",
            cpu_cap,
        )
        mem_cap: float | None = sample.mem_cap_bytes if sample and sample.mem_cap_bytes else None
        if mem_cap is None and state.current_cell.get("memory_gb"):
            mem_cap = float(state.current_cell["memory_gb"]) * 1024**3
        peak = sample.mem_peak_bytes if sample else None
        self._series_plot(
            "#plot-mem",
            state.mem,
            1 / MIB,
            "memory (MiB)",
            (f" · peak {formatting.size(peak)}" if peak else "")
            + (f" · cap {formatting.size(mem_cap)}" if mem_cap else " · uncapped"),
            mem_cap / MIB if mem_cap else None,
        )
        gpu = self.query_one("#plot-gpu", LinePlot)
        vram = [(t, v / MIB) for t, v in state.vram if v is not None]
        util = [(t, v) for t, v in state.gpu_util if v is not None]
        if vram or util:
            lines = []
            if vram:
                lines.append(Line("VRAM MiB", [p[0] for p in vram], [p[1] for p in vram], color="magenta"))
            if util:
                lines.append(Line("util %", [p[0] for p in util], [p[1] for p in util], color="orange"))
            gpu.show_lines(lines, title="GPU: VRAM (MiB) and utilisation (%)")
        elif state.server_values:  # no GPU: a scraped server metric ([target] metrics) instead
            points = list(state.server_values)
            names = list(state.server_series)
            which = f"{names.index(state.server_metric) + 1}/{len(names)}, m: next" if len(names) > 1 else ""
            gpu.show_lines(
                [Line(state.server_metric, [p[0] for p in points], [p[1] for p in points], color="cyan")],
                title=f"server: {state.server_metric} (its /metrics{'; ' + which if which else ''})",
            )
        else:
            gpu.show_unavailable(
                "VRAM and GPU utilisation: not available" if state.cpu else "waiting for samples", title="GPU"
            )

    def _per_request_plot(
        self,
        selector: str,
        label: str,
        points: list[tuple[float, float]],
        p50: float | None,
        p99: float | None,
        *,
        wide: tuple[int, str],
        narrow: str,
        waiting: tuple[str, str],
        bounds: Sequence[tuple[float, str]] = (),
    ) -> None:
        """One value per request (seconds, drawn in ms) with its running p50 and p99 as lines (and `bounds`:
        further lines, ms and colour: their intervals); the `wide` title from its minimum width up, else
        the `narrow` one; `waiting` (message, title) before any."""
        plot = self.query_one(selector, LinePlot)
        if points and p50 is not None and p99 is not None:
            min_width, wide_title = wide
            plot.show_lines(
                [
                    Line(
                        label,
                        [p[0] for p in points],
                        [p[1] * 1e3 for p in points],
                        color="cyan",
                        marker="dot",
                    )
                ],
                hlines=[*bounds, (p50 * 1e3, "green"), (p99 * 1e3, "red")],
                # plotext drops a title wider than the plot: keep it short on narrow terminals
                title=wide_title if plot.size.width >= min_width else narrow,
            )
        else:
            message, title = waiting
            plot.show_unavailable(message, title=title)

    def _draw_token_plots(self, state: LiveState) -> None:
        """TTFT per request with its running p50/p99, and each request's inter-token-gap p50 and p99."""
        points = list(state.ttfts)
        p50, p99 = state.ttft_stats()
        self._per_request_plot(
            "#plot-ttft",
            "TTFT",
            points,
            p50,
            p99,
            wide=(40, f"TTFT (ms) · p50 {formatting.latency(p50)} · p99 {formatting.latency(p99)}"),
            narrow=f"TTFT p50 {formatting.latency(p50)}",
            waiting=("waiting for tokens", "time to first token"),
        )
        itl = self.query_one("#plot-itl", LinePlot)
        lines = []
        for label, column, color in (("p50", 1, "green"), ("p99", 2, "red")):
            values = [(p[0], v) for p in state.itls if (v := p[column]) is not None]
            if values:
                lines.append(
                    Line(
                        f"ITL {label}",
                        [t for t, _ in values],
                        [v * 1e3 for _, v in values],
                        color=color,
                        marker="dot",
                    )
                )
        if lines:
            i50, i99 = state.itl_stats()
            itl.show_lines(
                lines,
                title=(
                    f"ITL per request (ms) · median p50 {formatting.latency(i50)} · p99 {formatting.latency(i99)}"
                    if itl.size.width >= 56
                    else f"ITL p50 {formatting.latency(i50)}"
                ),
            )
        elif points:
            itl.show_unavailable("not available (one token per answer, or not streamed)", title="ITL")
        else:
            itl.show_unavailable("waiting for tokens", title="inter-token latency")

    def _series_plot(
        self,
        selector: str,
        series: Sequence[tuple[float, float | None]],
        scale: float,
        title: str,
        suffix: str,
        cap: float | None,
    ) -> None:
        plot = self.query_one(selector, LinePlot)
        points = [(t, v * scale) for t, v in series if v is not None]
        if points:
            plot.show_lines(
                [Line(title, [p[0] for p in points], [p[1] for p in points], color="cyan")],
                hlines=[(float(cap), "red")] if cap else [],
                title=title + suffix,
            )
        elif series:
            plot.show_unavailable("not available", title=title)
        else:
            plot.show_unavailable("waiting for samples", title=title)

    def _draw_cells(self, state: LiveState) -> None:
        new = state.cells_seq - self._seen_cells
        if new <= 0:
            return
        rows = (
            list(state.finished_cells)[-new:]
            if new <= len(state.finished_cells)
            else list(state.finished_cells)
        )
        self._seen_cells = state.cells_seq
        table = self.query_one("#cells-table", DataTable)
        for row in rows:
            table.add_row(*cell_row(row))
        table.scroll_end(animate=False)

    def _draw_log(self, state: LiveState) -> None:
        log = self.query_one("#live-log", RichLog)
        for seq, level, text in list(state.logs):
            if seq > self._seen_log:
                log.write(Text(text, style=LEVEL_STYLES.get(level, "")))
        self._seen_log = state.log_seq


def _running_percentiles(state: LiveState) -> tuple[str, str]:
    """The running cell's p50 and p99 as text, with their 95% intervals once computed."""
    intervals = state.latency_intervals()
    if intervals is None:
        p50, p99 = state.latency_stats()
        return formatting.latency(p50), formatting.latency(p99)
    mid, tail = intervals
    return (
        formatting.latency_interval(mid.estimate, mid.lo, mid.hi),
        formatting.latency_interval(tail.estimate, tail.lo, tail.hi),
    )


def _get(row: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = row.get(key)
        if value is not None and value == value and value != "":
            return value
    return None


def cell_row(row: dict[str, Any]) -> list[str | Text]:
    """A finished-cells table row from a cells.csv row (live summary or read from disk)."""
    index = _get(row, "cell_index")
    config = formatting.cell_label(
        {
            "cpus": _get(row, "cpu_cores", "cpus"),
            "memory_gb": _get(row, "mem_cap_gb", "memory_gb"),
            "gpus": 1
            if str(_get(row, "gpu_mode", "gpus") or "off") not in ("off", "0", "none", "False")
            else 0,
        }
    )
    inputs = formatting.input_size(
        _get(row, "input_scale"), _get(row, "token_len", "pixels"), _get(row, GenColumn.OUTPUT_LEN)
    )
    load = formatting.load(_get(row, "concurrency"), _get(row, "rate"))
    throttled = _get(row, "throttled_s")
    throttled = (
        formatting.seconds(_float(throttled))
        if throttled is not None
        else formatting.number(_get(row, "throttled_periods"))
    )
    status = str(_get(row, "status") or "")
    style = "green" if status == CellStatus.OK else "bold red"
    flags = formatting.saturation(_get(row, "saturation"))
    return [
        "—" if index is None else str(int(float(index)) + 1),
        config,
        inputs,
        load,
        formatting.row_percentile(row, "p50", needs=False),
        formatting.row_percentile(row, "p99", needs=False),
        formatting.rate(_float(_get(row, "throughput_rps")), unit=""),
        formatting.number(_round(_get(row, "peak_cpu_cores"))),
        formatting.size(_float(_get(row, "peak_mem_bytes"))),
        throttled,
        Text(flags, style="bold yellow"),  # saturated: the latency is not the target's (cells.csv says why)
        Text(status, style=style),
    ]


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _round(value: Any) -> float | None:
    f = _float(value)
    return None if f is None else round(f, 2)
