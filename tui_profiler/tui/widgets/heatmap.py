"""An adaptive plan's grid as a heat map: resource configurations × input sizes, each cell's latency as a
colour, measured cells told apart from predicted ones (`■` measured, `~` predicted, `✗` failed), live as
the plan goes. It draws meta.json's `adaptive` state (`MetaUpdated`)."""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.widget import Widget

from tui_profiler import formatting

# slow to fast: the colour of a cell's log-latency between the grid's fastest and slowest
RAMP = ("on #1a4d2e", "on #2e7d32", "on #9e9d24", "on #f9a825", "on #ef6c00", "on #c62828")


def _style(value: float | None, lo: float, hi: float) -> str:
    if value is None or not (value > 0) or not math.isfinite(value):
        return ""
    if hi <= lo:
        return RAMP[0]
    x = (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return RAMP[min(len(RAMP) - 1, max(0, int(x * len(RAMP))))]


def _config_label(p: dict[str, Any]) -> str:
    cpu = "—" if p.get("cpu_cores") is None else formatting.number(p["cpu_cores"])
    mem = "—" if p.get("mem_cap_gb") is None else formatting.number(p["mem_cap_gb"])
    return f"{cpu} CPU {mem} GB"


def heatmap_text(state: dict[str, Any]) -> Text:
    """The grid of `state` (meta.json's `adaptive`) as text: one row per resource configuration, one column
    per input size, then a legend and the plan's line."""
    points = state.get("grid") or []
    if not points:
        return Text("adaptive plan: no grid yet", style="dim")
    sizes = sorted({p["size"] for p in points if p.get("size") is not None})
    configs: dict[Any, str] = {}
    for p in points:
        configs.setdefault(p.get("config"), _config_label(p))
    at = {(p.get("config"), p.get("size")): p for p in points}
    values = [
        v
        for p in points
        for v in (p.get("measured_s"), p.get("predicted_s"))
        if isinstance(v, int | float) and v > 0
    ]
    lo, hi = (min(values), max(values)) if values else (1.0, 1.0)
    label_w = max(len(s) for s in configs.values())
    out = Text()
    out.append(
        " " * (label_w + 1) + "".join(f"{formatting.number(s):>8}" for s in sizes) + "  (size)\n", style="dim"
    )
    for config, label in configs.items():
        out.append(f"{label:>{label_w}} ")
        for s in sizes:
            p = at.get((config, s), {})
            measured, predicted = p.get("measured_s"), p.get("predicted_s")
            if p.get("failed"):
                out.append(f"{'✗':>7} ", style="bold red")
            elif measured is not None:
                out.append(f"■{_ms(measured):>6} ", style=f"bold white {_style(measured, lo, hi)}")
            elif predicted is not None:
                out.append(f"~{_ms(predicted):>6} ", style=f"italic {_style(predicted, lo, hi)}")
            else:
                out.append(f"{'·':>7} ", style="dim")
        out.append("\n")
    measured_n = state.get("cells_measured", 0)
    err = state.get("estimated_median_error_pct")
    line = f"■ measured  ~ predicted (ms)  ✗ failed · {measured_n} of {len(points)} measured"
    if err is not None:
        line += f" · estimated median error {err:.1f}%"
    if state.get("stop_reason"):
        line += f" · stopped: {state['stop_reason']}"
    slo = state.get("slo") or {}
    if state.get("goal") == "slo" and slo.get("cpu_cores") is not None:
        line += f" · cheapest meeting: {formatting.number(slo['cpu_cores'])} CPU"
    out.append(line, style="dim")
    return out


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 1 else f"{ms:.2f}"


class GridHeatMap(Widget):
    """The heat map of an adaptive plan (hidden when the session has none)."""

    DEFAULT_CSS = """
    GridHeatMap { height: auto; width: 1fr; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state: dict[str, Any] = {}

    def show(self, state: dict[str, Any]) -> None:
        if state is self.state:
            return
        self.state = state
        self.refresh(layout=True)

    def render(self) -> Text:
        return heatmap_text(self.state)
