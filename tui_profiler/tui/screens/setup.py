"""Setup screen: pick a preset, adjust resources, inputs and load, see the matrix, run or save.

Every change is applied to the preset's table with the engine's own override parser and validated with
the engine's own `preset_from_dict`, so the message shown inline is exactly the one `tui-profiler run`
would print.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Header, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from tui_profiler import formatting
from tui_profiler.config.model import LOAD_DEFAULTS, Preset, ResourcesConfig, sized_by_tokens
from tui_profiler.tui.widgets.stepper import ValueSetStepper

# Form controls -> the preset field each one sets (dotted, as `--set` takes it).
TEXT_FIELDS = {
    "f-model": "model",
    "f-image": "image",
    "f-scales": "input.scales",
    "f-tokens": "input.token_lens",
    "f-concurrency": "load.concurrency",
    "f-rates": "load.rates",
    "f-requests": "load.requests",
    "f-warmup": "load.warmup",
    "f-repetitions": "repetitions",
}
SELECT_FIELDS = {
    "f-weights": "weights",
    "f-threads": "resources.threads",
    "f-pairing": "resources.pairing",
    "f-mode": "load.mode",
}
STEPPER_FIELDS = {"f-cpus": "resources.cpus", "f-memory": "resources.memory_gb", "f-gpus": "resources.gpus"}


_RESOURCES = ResourcesConfig.model_fields
SELECT_DEFAULTS = {
    "weights": Preset.model_fields["weights"].default,
    "resources.threads": _RESOURCES["threads"].default,
    "resources.pairing": _RESOURCES["pairing"].default,
    "load.mode": LOAD_DEFAULTS.mode,
}


def _get_path(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _join(values: Any) -> str:
    if values is None:
        return ""
    if isinstance(values, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    return str(values)


class SetupScreen(Screen[None]):
    BINDINGS: ClassVar = [
        Binding("ctrl+r", "run", "Run"),
        Binding("ctrl+s", "save", "Save preset"),
        Binding("ctrl+l", "focus_presets", "Presets"),
        Binding("ctrl+o", "pick_inputs", "Input files", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.infos: list[Any] = []
        self.current: Any = None  # the selected PresetInfo
        self.data: dict[str, Any] = {}  # the preset table being edited
        self.error: str | None = None
        self.n_cells = 0
        self._loading = False
        self._sources_checked: dict[str, str | None] = {}  # input section -> its files' error (or None)

    def compose(self) -> ComposeResult:
        host = self.app.host()  # type: ignore[attr-defined]
        yield Header()
        with Horizontal(id="setup"):
            with Vertical(id="preset-pane"):
                yield Label("Presets", classes="pane-title")
                yield OptionList(id="preset-list")
                yield Static("", id="preset-description")
            with VerticalScroll(id="form"):
                yield Label("Model", classes="section-title")
                with Horizontal(classes="row"):
                    yield Label("model", classes="field-label")
                    yield Input(compact=True, id="f-model", placeholder="catalog model name")
                with Horizontal(classes="row"):
                    yield Label("weights", classes="field-label")
                    yield Select(
                        compact=True,
                        options=[("random", "random"), ("pretrained", "pretrained")],
                        id="f-weights",
                        allow_blank=False,
                        value="random",
                    )
                with Horizontal(classes="row"):
                    yield Label("image", classes="field-label")
                    yield Input(compact=True, id="f-image", placeholder="built-in model-server image")
                yield Label(
                    f"Resources (host: {host.cpus:g} cores, {formatting.size(host.memory_gb * 2**30)}, {host.gpus} GPU)",
                    classes="section-title",
                )
                yield ValueSetStepper(
                    "CPUs", minimum=0.5, maximum=host.cpus, step=0.5, id="f-cpus", empty_label="uncapped"
                )
                yield ValueSetStepper(
                    "memory",
                    minimum=0.5,
                    maximum=max(0.5, host.memory_gb // 0.5 * 0.5),
                    step=0.5,
                    unit=" G",
                    id="f-memory",
                    empty_label="uncapped",
                )
                yield ValueSetStepper(
                    "GPUs",
                    minimum=0,
                    maximum=max(host.gpus, 0),
                    step=1,
                    values=[0],
                    id="f-gpus",
                    disabled=host.gpus == 0,
                    note=str(host.gpu_reason),
                )
                with Horizontal(classes="row"):
                    yield Label("threads", classes="field-label")
                    yield Select(
                        compact=True,
                        options=[("auto (the CPU quota)", "auto"), ("host cores", "host")],
                        id="f-threads",
                        allow_blank=False,
                        value="auto",
                    )
                with Horizontal(classes="row"):
                    yield Label("pairing", classes="field-label")
                    yield Select(
                        compact=True,
                        options=[
                            ("grid (every CPU × every memory)", "grid"),
                            ("zip (pairs in order)", "zip"),
                        ],
                        id="f-pairing",
                        allow_blank=False,
                        value="grid",
                    )
                yield Label("Input", classes="section-title")
                with Horizontal(classes="row", id="row-scales"):
                    yield Label("scales", classes="field-label")
                    yield Input(compact=True, id="f-scales", placeholder="1 (default); e.g. 0.5,1,2")
                with Horizontal(classes="row", id="row-tokens"):
                    yield Label("tokens", classes="field-label")
                    yield Input(compact=True, id="f-tokens", placeholder="e.g. 16,64,256")
                with Horizontal(classes="row", id="row-files"):  # shown for a preset's own files (ctrl+o)
                    yield Label("files", classes="field-label")
                    yield Input(compact=True, id="f-files", placeholder="a folder, a file or files (a,b)")
                    yield Button("Browse", compact=True, id="browse-files")
                yield Label("Load", classes="section-title")
                with Horizontal(classes="row"):
                    yield Label("mode", classes="field-label")
                    yield Select(
                        compact=True,
                        options=[("closed loop (N workers)", "closed"), ("open loop (arrival rate)", "open")],
                        id="f-mode",
                        allow_blank=False,
                        value="closed",
                    )
                with Horizontal(classes="row", id="row-concurrency"):
                    yield Label("concurrency", classes="field-label")
                    yield Input(compact=True, id="f-concurrency", placeholder="1 (default); e.g. 1,4")
                with Horizontal(classes="row", id="row-rates"):
                    yield Label("rates /s", classes="field-label")
                    yield Input(compact=True, id="f-rates", placeholder="e.g. 0.5,2")
                with Horizontal(classes="row"):
                    yield Label("requests", classes="field-label")
                    yield Input(
                        compact=True,
                        id="f-requests",
                        type="integer",
                        placeholder=f"{LOAD_DEFAULTS.requests} (default)",
                    )
                with Horizontal(classes="row"):
                    yield Label("warm-up", classes="field-label")
                    yield Input(
                        compact=True,
                        id="f-warmup",
                        type="integer",
                        placeholder=f"{LOAD_DEFAULTS.warmup} (default)",
                    )
                with Horizontal(classes="row"):
                    yield Label("repetitions", classes="field-label")
                    yield Input(
                        compact=True,
                        id="f-repetitions",
                        type="integer",
                        placeholder=f"{Preset.model_fields['repetitions'].default} (default)",
                    )
        yield Static("", id="matrix")
        yield Footer()

    # ---------------------------------------------------------------- presets

    def on_mount(self) -> None:
        self.reload_presets(select=getattr(self.app, "initial_preset", None))

    def reload_presets(self, select: str | None = None) -> None:
        from tui_profiler.config import discover_presets

        self.infos = discover_presets()
        options = []
        for info in self.infos:
            label = Text(info.name, style="bold")
            if not info.builtin:
                label.append("  user", style="italic")
            options.append(Option(label, id=info.name))
        olist = self.query_one("#preset-list", OptionList)
        olist.clear_options()
        olist.add_options(options)
        names = [i.name for i in self.infos]
        wanted = (
            select if select in names else ("smoke" if "smoke" in names else (names[0] if names else None))
        )
        if wanted is not None:
            olist.highlighted = names.index(wanted)
            self.select_preset(
                self.infos[names.index(wanted)],
                overrides=getattr(self.app, "overrides", []) if wanted == select else [],
            )
        olist.focus()

    @on(OptionList.OptionHighlighted, "#preset-list")
    def _preset_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        info = self.infos[event.option_index] if event.option_index < len(self.infos) else None
        if info is not None and info is not self.current:
            self.select_preset(info)

    def select_preset(self, info: Any, overrides: list[str] | None = None) -> None:
        from tui_profiler.config import PresetError, apply_overrides, read_toml

        self.current = info
        self.query_one("#preset-description", Static).update(
            Text(info.description or "(no description)")
            + Text("\nbuilt-in" if info.builtin else "\nuser preset", style="dim")
        )
        try:
            data = read_toml(Path(info.path))
            if overrides:
                data = apply_overrides(data, overrides)
            if data.get("task"):  # hf: / tf: models: name the model and what it does
                self.query_one("#preset-description", Static).update(
                    Text(info.description or "(no description)")
                    + Text(f"\n{data.get('model', '')} · task {data['task']}", style="bold")
                    + Text("\nbuilt-in" if info.builtin else "\nuser preset", style="dim")
                )
        except PresetError as exc:
            self.data = {}
            self.show_matrix(str(exc))
            return
        self.data = data
        self.fill_form()
        self.validate()

    def fill_form(self) -> None:
        d = self.data
        inp, res, load = d.get("input", {}), d.get("resources", {}), d.get("load", {})
        self._loading = True
        try:
            self.query_one("#f-model", Input).value = str(d.get("model", ""))
            self._set_select("#f-weights", d.get("weights", SELECT_DEFAULTS["weights"]))
            self.query_one("#f-image", Input).value = str(d.get("image", ""))
            self.query_one("#f-cpus", ValueSetStepper).set_values(
                [v for v in res.get("cpus", []) if v is not None]
            )
            self.query_one("#f-memory", ValueSetStepper).set_values(
                [v for v in res.get("memory_gb", []) if v is not None]
            )
            self.query_one("#f-gpus", ValueSetStepper).set_values(list(res.get("gpus", [0])))
            self._set_select("#f-threads", str(res.get("threads", SELECT_DEFAULTS["resources.threads"])))
            self._set_select("#f-pairing", res.get("pairing", SELECT_DEFAULTS["resources.pairing"]))
            self.query_one("#f-scales", Input).value = _join(inp.get("scales"))
            self.query_one("#f-tokens", Input).value = _join(inp.get("token_lens"))
            self.query_one("#f-files", Input).value = _join(inp.get("files") or inp.get("folder"))
            self._set_select("#f-mode", load.get("mode", SELECT_DEFAULTS["load.mode"]))
            self.query_one("#f-concurrency", Input).value = _join(load.get("concurrency"))
            self.query_one("#f-rates", Input).value = _join(load.get("rates"))
            self.query_one("#f-requests", Input).value = _join(load.get("requests"))
            self.query_one("#f-warmup", Input).value = _join(load.get("warmup"))
            self.query_one("#f-repetitions", Input).value = _join(d.get("repetitions"))
        finally:
            self.call_after_refresh(self._done_loading)
        self._show_relevant_rows()

    def _done_loading(self) -> None:
        self._loading = False

    def _set_select(self, selector: str, value: str) -> None:
        select = self.query_one(selector, Select)
        values = [v for _, v in select._options]
        if value not in values:  # e.g. threads = "3": keep what the preset says
            select.set_options([*select._options, (value, value)])
        select.value = value

    def _show_relevant_rows(self) -> None:
        tokens = sized_by_tokens(self.data.get("input", {}).get("kind", ""))
        self.query_one("#row-scales").display = not tokens
        self.query_one("#row-tokens").display = tokens
        inp = self.data.get("input", {})
        self.query_one("#row-files").display = bool(inp.get("files") or inp.get("folder"))
        open_loop = self.data.get("load", {}).get("mode") == "open"
        self.query_one("#row-concurrency").display = not open_loop
        self.query_one("#row-rates").display = open_loop

    # ---------------------------------------------------------------- edits

    def _set_field(self, key: str, text: str) -> None:
        from tui_profiler.config import PresetError, apply_overrides

        try:
            if text.strip() == "":
                self._drop_field(key)
            else:
                self.data = apply_overrides(self.data, [f"{key}={text}"])
        except PresetError as exc:
            self.show_matrix(str(exc))
            return
        self._show_relevant_rows()
        self.validate()

    def _drop_field(self, key: str) -> None:
        node = self.data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.get(p, {})
        if isinstance(node, dict):
            node.pop(parts[-1], None)

    def _set_inputs(self, text: str) -> None:
        """`input.folder` for a folder, else `input.files` (comma-separated); empty: generated inputs."""
        inp = self.data.setdefault("input", {})
        inp.pop("files", None)
        inp.pop("folder", None)
        paths = [t.strip() for t in text.split(",") if t.strip()]
        here = Path(self.current.path).parent if self.current is not None else Path.cwd()
        if len(paths) == 1 and (here / Path(paths[0]).expanduser()).is_dir():
            inp["folder"] = paths[0]
        elif paths:
            inp["files"] = paths
        self._show_relevant_rows()
        self.validate()

    def action_pick_inputs(self) -> None:
        from tui_profiler.tui.screens.input_picker import InputPickerScreen

        def picked(path: str | None) -> None:
            if path:
                self.query_one("#row-files").display = True
                self.query_one("#f-files", Input).value = path  # its Changed event sets the preset

        current = self.query_one("#f-files", Input).value
        self.app.push_screen(InputPickerScreen(Path("."), current), picked)

    @on(Button.Pressed, "#browse-files")
    def _browse(self) -> None:
        self.action_pick_inputs()

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "f-files":
            inp = self.data.get("input", {})
            if not self._loading and event.value != _join(inp.get("files") or inp.get("folder")):
                self._set_inputs(event.value)
            return
        key = TEXT_FIELDS.get(event.input.id or "")
        # Only a real edit changes the preset (filling the form must not add keys it never had).
        if key and not self._loading and event.value != _join(_get_path(self.data, key)):
            self._set_field(key, event.value)

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        key = SELECT_FIELDS.get(event.select.id or "")
        current = _get_path(self.data, key or "")
        if current is None:
            current = SELECT_DEFAULTS.get(key or "")
        if key and not self._loading and event.value is not Select.BLANK and str(event.value) != str(current):
            if key == "load.mode":  # the engine wants rates for open loop, concurrency for closed
                load = self.data.setdefault("load", {})
                load["mode"] = event.value
                if event.value == "open":
                    load.pop("concurrency", None)
                    load.setdefault("rates", [1.0])
                    self.query_one("#f-rates", Input).value = _join(load["rates"])
                else:
                    load.pop("rates", None)
                    load.setdefault("concurrency", [1])
                self._show_relevant_rows()
                self.validate()
                return
            self._set_field(key, str(event.value))

    @on(ValueSetStepper.Changed)
    def _stepper_changed(self, event: ValueSetStepper.Changed) -> None:
        key = STEPPER_FIELDS.get(event.stepper.id or "")
        if key and not self._loading:
            values = event.stepper.values
            self._set_field(key, ",".join(f"{v:g}" for v in values) if values else "")

    # ---------------------------------------------------------------- validation and matrix

    def build_preset(self) -> Any:
        """The edited preset, validated by the engine (raises PresetError)."""
        from tui_profiler.config import preset_from_dict

        source = str(self.current.path) if self.current is not None else "<setup>"
        preset = preset_from_dict(copy.deepcopy(self.data), source)
        if self.current is not None:
            preset.path = Path(self.current.path)
        return preset

    def validate(self) -> None:
        from tui_profiler.config import PresetError
        from tui_profiler.plan import build_plan

        try:
            preset = self.build_preset()
            cells = build_plan(preset)  # a plan with no cell is a PresetError too
        except PresetError as exc:
            self.show_matrix(str(exc))
            return
        problem = self._sources_problem(preset)
        if problem is not None:
            self.show_matrix(problem)
            return
        self.n_cells = len(cells)
        containers = len({c.container_group for c in cells})
        text = Text()
        text.append("Matrix: ", style="bold")
        text.append(f"{len(cells)} cells in {containers} containers")
        text.append(f" · {_axes(preset)}", style="dim")
        text.append(" · ")
        text.append(self._eta_text(preset.name, len(cells)))
        self.error = None
        self.query_one("#matrix", Static).update(text)
        self.query_one("#matrix").remove_class("-error")

    def _sources_problem(self, preset: Any) -> str | None:
        """The preset's own input files checked as a run would check them (once per input section)."""
        if not preset.input.has_sources:
            return None
        import json

        key = json.dumps(preset.input.model_dump(), sort_keys=True, default=str) + str(preset.path)
        if key not in self._sources_checked:
            from tui_profiler.config import PresetError
            from tui_profiler.load.sources import open_sources

            try:
                open_sources(preset)
                self._sources_checked[key] = None
            except PresetError as exc:
                self._sources_checked[key] = str(exc)
        return self._sources_checked[key]

    def _eta_text(self, preset_name: str, n_cells: int) -> str:
        from tui_profiler.session.reader import seconds_per_cell

        per_cell = seconds_per_cell(self.app.output_dir, preset_name)  # type: ignore[attr-defined]
        if per_cell is None:
            return "ETA: no past sessions to estimate from"
        return f"ETA ≈ {formatting.duration(per_cell * n_cells)} (past sessions)"

    def show_matrix(self, error: str) -> None:
        self.error = error
        widget = self.query_one("#matrix", Static)
        widget.update(Text("✗ " + error, style="bold"))
        widget.add_class("-error")

    # ---------------------------------------------------------------- actions

    def action_focus_presets(self) -> None:
        self.query_one("#preset-list", OptionList).focus()

    def action_run(self) -> None:
        from tui_profiler.config import PresetError
        from tui_profiler.plan import build_plan

        try:
            preset = self.build_preset()
            build_plan(preset)
        except PresetError as exc:
            self.show_matrix(str(exc))
            self.notify(str(exc), severity="error")
            return
        self.app.start_run(preset)  # type: ignore[attr-defined]

    def action_save(self) -> None:
        default = (
            self.current.name
            if self.current is not None and not self.current.builtin
            else (f"my_{self.current.name}" if self.current is not None else "my_preset")
        )
        default = default.replace("/", "_")

        def save(name: str | None) -> None:
            if not name:
                return
            from tui_profiler.config import PresetError, save_user_preset

            data = copy.deepcopy(self.data)
            data.pop("name", None)
            try:
                path = save_user_preset(data, name)
            except PresetError as exc:
                self.show_matrix(str(exc))
                self.notify(str(exc), severity="error")
                return
            self.notify(f"saved {path}")
            self.reload_presets(select=name)

        self.app.push_screen(NameScreen(default), save)


def _axes(preset: Any) -> str:
    res, load = preset.resources, preset.load
    sizes, levels = preset.input.sizes, load.levels
    parts = [f"{len(res.cpus)} CPU × {len(res.memory_gb)} mem ({res.pairing})"]
    if len(res.gpus) > 1 or any(res.gpus):
        parts.append(f"{len(res.gpus)} GPU")
    if preset.input.sized_by_plan:
        parts.append(f"{len(sizes)} {'token lengths' if preset.input.sized_by_tokens else 'scales'}")
    else:
        parts.append("inputs as given")
    parts.append(f"{len(levels)} {'rates' if load.mode == 'open' else 'concurrency'}")
    if preset.repetitions > 1:
        parts.append(f"{preset.repetitions} reps")
    return " × ".join(parts)


class NameScreen(ModalScreen[str | None]):
    """Ask for the user preset's name."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: str) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="name-box"):
            yield Label("Save as user preset — name (letters, digits, _ - .):")
            yield Input(value=self.default, id="name-input")
            with Horizontal(id="confirm-buttons"):
                yield Button("Save (enter)", variant="primary", id="save")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#name-input", Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(
            self.query_one("#name-input", Input).value.strip() if event.button.id == "save" else None
        )

    def action_cancel(self) -> None:
        self.dismiss(None)
