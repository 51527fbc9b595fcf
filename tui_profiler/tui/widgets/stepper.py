"""Keyboard steppers: a value that moves in fixed steps between bounds.

`ValueSetStepper` picks a *set* of values (a sweep axis such as CPUs {0.5, 1, 2}): ←/→ move the cursor
one step, space toggles the value under the cursor. Mouse: click the arrows or the value.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


def _fmt(value: float) -> str:
    return f"{value:g}"


class ValueSetStepper(Widget, can_focus=True):
    """A set of values on a grid `minimum + k*step` up to `maximum`."""

    DEFAULT_CSS = """
    ValueSetStepper { height: auto; width: 1fr; }
    ValueSetStepper:focus { background: $boost; text-style: bold; }
    ValueSetStepper:disabled { color: $text-disabled; }
    """

    BINDINGS: ClassVar = [
        Binding("left,minus", "step(-1)", "−step", show=False),
        Binding("right,plus,equals_sign", "step(1)", "+step", show=False),
        Binding("space,enter", "toggle_value", "Toggle value", show=False),
        Binding("home", "edge(0)", show=False),
        Binding("end", "edge(1)", show=False),
    ]

    cursor: reactive[float] = reactive(0.0)

    class Changed(Message):
        def __init__(self, stepper: ValueSetStepper) -> None:
            super().__init__()
            self.stepper = stepper

        @property
        def control(self) -> ValueSetStepper:
            return self.stepper

    def __init__(
        self,
        label: str,
        *,
        minimum: float,
        maximum: float,
        step: float,
        values: list[float] | None = None,
        unit: str = "",
        multi: bool = True,
        id: str | None = None,
        disabled: bool = False,
        note: str = "",
        empty_label: str = "",
    ) -> None:
        super().__init__(id=id, disabled=disabled)
        self.label = label
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
        self.step_size = step
        self.unit = unit
        self.multi = multi
        self.note = note
        self.empty_label = empty_label  # what an empty set means ("uncapped"); "" = a value is required
        # Preset values are kept as given (not snapped): validation reports a bad one, nothing is changed.
        self.values: list[float] = sorted({float(v) for v in (values or [])})
        self.set_reactive(ValueSetStepper.cursor, self.values[0] if self.values else minimum)

    def _snap(self, value: float) -> float:
        k = round((value - self.minimum) / self.step_size)
        return round(min(self.maximum, max(self.minimum, self.minimum + k * self.step_size)), 6)

    def set_values(self, values: list[float]) -> None:
        self.values = sorted({float(v) for v in values})
        if self.values:
            self.cursor = self.values[0]
        self.refresh()

    def action_step(self, direction: int) -> None:
        self.cursor = self._snap(self.cursor + direction * self.step_size)
        if not self.multi:
            self.values = [self.cursor]
            self.post_message(self.Changed(self))

    def action_edge(self, end: int) -> None:
        self.cursor = self.maximum if end else self.minimum
        if not self.multi:
            self.values = [self.cursor]
            self.post_message(self.Changed(self))

    def action_toggle_value(self) -> None:
        if not self.multi:
            return
        value = self._snap(self.cursor)
        if value in self.values:
            if len(self.values) > 1 or self.empty_label:  # an axis needs a value unless empty means something
                self.values.remove(value)
        else:
            self.values = sorted([*self.values, value])
        self.refresh()
        self.post_message(self.Changed(self))

    def watch_cursor(self) -> None:
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        # The arrows step (label is 10 wide, then " ◂ ", the value, " ▸ "); elsewhere toggles.
        x = event.x
        value_end = 13 + 5 + len(self.unit)
        if 10 <= x < 13:
            self.action_step(-1)
        elif value_end <= x < value_end + 3:
            self.action_step(1)
        elif x >= 13:
            self.action_toggle_value()

    def render(self) -> Text:
        text = Text()
        text.append(f"{self.label:<10}", style="bold")
        if self.disabled and self.note:
            text.append(self.note, style="italic")
            return text
        chosen = self._snap(self.cursor) in self.values
        text.append(" ◂ ")
        text.append(f"{_fmt(self.cursor):>5}{self.unit}", style="reverse" if chosen else "underline")
        text.append(" ▸ ")
        if self.multi:
            chosen_text = ", ".join(_fmt(v) for v in self.values) or self.empty_label
            text.append("  {" + chosen_text + "}")
            text.append(f"  max {_fmt(self.maximum)}", style="dim")
        return text
