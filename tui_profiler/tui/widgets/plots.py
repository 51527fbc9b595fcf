"""Plot widgets: each owns its plotext figure and redraws only when given new data."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

# Colours that read on dark and light backgrounds alike.
PALETTE = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow", "gray")


@dataclass(slots=True)
class Line:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    color: str | None = None
    marker: str = "hd"  # 2x2 blocks: half the cost of braille in plotext, still smooth


class LinePlot(PlotextPlot):
    """Lines (and optional horizontal reference lines) with a 'not available' state."""

    DEFAULT_CSS = """
    LinePlot { width: 1fr; height: 1fr; min-height: 6; }
    """

    def __init__(
        self,
        title: str,
        *,
        xlabel: str = "",
        ylabel: str = "",
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.xlabel = xlabel
        self.ylabel = ylabel
        self._lines: list[Line] = []
        self._hlines: list[tuple[float, str]] = []
        self._unavailable: str | None = "waiting for data"
        self._xlog = False
        self.redraws = 0
        self.render_s = 0.0  # time spent building the plot (plotext), for the ingest benchmark

    def show_lines(
        self,
        lines: list[Line],
        *,
        hlines: Sequence[tuple[float, str]] = (),
        title: str | None = None,
        xlog: bool = False,
    ) -> None:
        self._lines = [ln for ln in lines if len(ln.x)]
        self._hlines = list(hlines)
        self._xlog = xlog
        if title is not None:
            self.title = title
        self._unavailable = None if self._lines else "waiting for data"
        self.refresh()

    def show_unavailable(self, reason: str = "not available", title: str | None = None) -> None:
        self._lines = []
        self._unavailable = reason
        if title is not None:
            self.title = title
        self.refresh()

    def render(self) -> RenderResult:
        started = time.perf_counter()
        try:
            return self._build_plot()
        finally:
            self.redraws += 1
            self.render_s += time.perf_counter() - started

    def _build_plot(self) -> RenderResult:
        if self._unavailable is not None:
            return Text.assemble((self.title, "bold"), "\n", (self._unavailable, "dim italic"))
        plt = self.plt
        plt.clear_figure()
        plt.title(self.title)
        if self.xlabel:
            plt.xlabel(self.xlabel)
        if self.ylabel:
            plt.ylabel(self.ylabel)
        width = max(self.size.width, 10)
        for i, line in enumerate(self._lines):
            xs, ys = _thin(line.x, line.y, width * 2)
            plt.plot(
                xs,
                ys,
                label=line.label if len(self._lines) > 1 else None,
                color=line.color or PALETTE[i % len(PALETTE)],
                marker=line.marker,
            )
        for value, color in self._hlines:
            plt.horizontal_line(value, color=color)
        if self._xlog:
            plt.xscale("log")
        return super().render()


class HistogramPlot(PlotextPlot):
    DEFAULT_CSS = """
    HistogramPlot { width: 1fr; height: 1fr; min-height: 6; }
    """

    def __init__(self, title: str = "latency histogram", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title
        self._values: list[float] = []
        self._unit = "ms"

    def show_values(self, values: list[float], title: str | None = None) -> None:
        self._values = values
        if title is not None:
            self.title = title
        self.refresh()

    def render(self) -> RenderResult:
        if not self._values:
            return Text.assemble((self.title, "bold"), "\n", ("no timed requests", "dim italic"))
        plt = self.plt
        plt.clear_figure()
        plt.title(self.title)
        scale, unit = (1e3, "ms") if max(self._values) < 2 else (1.0, "s")
        plt.hist([v * scale for v in self._values], bins=min(40, max(5, self.size.width // 3)), color="cyan")
        plt.xlabel(f"latency ({unit})")
        return super().render()


def _thin(xs: Sequence[float], ys: Sequence[float], limit: int) -> tuple[list[float], list[float]]:
    """At most ~`limit` points: a plot can't show more than its cells anyway."""
    n = len(xs)
    if n <= limit:
        return list(xs), list(ys)
    step = n / limit
    idx = [int(i * step) for i in range(limit)]
    idx[-1] = n - 1
    return [xs[i] for i in idx], [ys[i] for i in idx]
