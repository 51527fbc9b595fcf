"""The current container's cold start as one stacked bar, phase by phase."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from tui_profiler import formatting
from tui_profiler.session.schema import COLD_START_PHASES, ColdStartPhaseName

PHASE_STYLES: dict[str, str] = {
    ColdStartPhaseName.IMAGE_PULL: "on blue",
    ColdStartPhaseName.CREATE: "on magenta",
    ColdStartPhaseName.START: "on cyan",
    ColdStartPhaseName.SERVER_BOOT: "on green",
    ColdStartPhaseName.MODEL_LOAD: "on yellow",
    ColdStartPhaseName.READY: "on red",
    ColdStartPhaseName.FIRST_REQUEST: "on bright_black",
}
SHORT: dict[str, str] = {
    ColdStartPhaseName.IMAGE_PULL: "pull",
    ColdStartPhaseName.SERVER_BOOT: "boot",
    ColdStartPhaseName.MODEL_LOAD: "load",
    ColdStartPhaseName.FIRST_REQUEST: "1st req",
}


class ColdStartBar(Widget):
    DEFAULT_CSS = """
    ColdStartBar { height: 2; width: 1fr; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.phases: dict[str, float | None] = {}
        self.total: float | None = None

    def show(self, phases: dict[str, float | None], total: float | None) -> None:
        if phases == self.phases and total == self.total:
            return
        self.phases = dict(phases)
        self.total = total
        self.refresh()

    def render(self) -> Text:
        width = max(10, self.size.width)
        text = Text()
        known = {p: s for p, s in self.phases.items() if s is not None and s > 0}
        if not self.phases:
            return Text("cold start: waiting for the container", style="dim italic")
        total = sum(known.values()) or 1.0
        order = [p for p in COLD_START_PHASES if p in self.phases] + [
            p for p in self.phases if p not in COLD_START_PHASES
        ]
        used = 0
        for phase in order:
            seconds = known.get(phase)
            if seconds is None:
                continue
            cells = max(1, round(width * seconds / total))
            cells = min(cells, width - used)
            if cells <= 0:
                break
            text.append(" " * cells, style=PHASE_STYLES.get(phase, "on white"))
            used += cells
        text.append("\n")
        total_s = self.total if self.total is not None else sum(known.values())
        text.append(f"cold start {formatting.seconds(total_s)}  ", style="bold")
        for phase in order:
            seconds = self.phases[phase]
            swatch = PHASE_STYLES.get(phase, "on white")
            text.append("  ", style=swatch)
            value = "n/a" if seconds is None else f"{seconds:.2f}"
            text.append(f" {SHORT.get(phase, phase)} {value}  ")
        return text
