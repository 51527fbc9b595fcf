"""Repetitions in `fit`'s report: a session's cells.csv read for `session.repetitions.repetition_rows`
(the spread between repetitions of each configuration; the session writer writes the same rows as
repetitions.csv when a session finishes)."""

from __future__ import annotations

import csv
from pathlib import Path

from tui_profiler.session.repetitions import repetition_rows as repetition_rows


def session_cells(path: str | Path) -> list[dict[str, str]]:
    """The cells.csv rows of a session folder, of a cells.csv, or of the cells.csv beside a requests.csv;
    [] when there is none (an AC-Prof file, say)."""
    path = Path(path)
    if path.is_dir():
        path = path / "cells.csv"
    elif path.name == "requests.csv":
        path = path.parent / "cells.csv"
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            if not {"p50_s", "repeat_idx"} <= set(header):
                return []
            return [dict(zip(header, r, strict=True)) for r in reader if len(r) == len(header)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
