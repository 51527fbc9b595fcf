"""Pick the preset's own input files: a folder tree to choose a file or a folder from, and the path itself
(typed, or filled in by the tree). Dismissed with the chosen path, or None."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Input, Label


class InputPickerScreen(ModalScreen[str | None]):
    """A file (an image, a text/JSONL file, a request body) or a folder of them, for `[input] files` /
    `folder`. Enter on a file in the tree picks it; Enter in the path field picks what it says."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, root: Path, current: str = "") -> None:
        super().__init__()
        self.root = root
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-box"):
            yield Label("Input files: a file or a folder (images, text/JSONL, request bodies)")
            yield Label("from the working folder (.)", classes="dim")
            yield DirectoryTree(self.root, id="picker-tree")
            yield Input(value=self.current, id="picker-path", placeholder="a path, or pick one above")
            with Horizontal(id="confirm-buttons"):
                yield Button("Use (enter)", variant="primary", id="use")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#picker-tree", DirectoryTree).focus()

    # Picked paths are absolute: a relative path in a preset is relative to the preset file, not to here.
    @on(DirectoryTree.FileSelected)
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(str(Path(event.path).resolve()))

    @on(DirectoryTree.DirectorySelected)
    def _folder_selected(self, event: DirectoryTree.DirectorySelected) -> None:
        # a folder is used with the button (Enter on a folder opens it)
        self.query_one("#picker-path", Input).value = str(Path(event.path).resolve())

    @on(Input.Submitted, "#picker-path")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        path = self.query_one("#picker-path", Input).value.strip()
        self.dismiss((path or None) if event.button.id == "use" else None)

    def action_cancel(self) -> None:
        self.dismiss(None)
