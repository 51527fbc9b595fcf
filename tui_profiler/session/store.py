"""The session folder: `OUTPUT/<YYYYmmdd-HHMMSS>-<preset>/` with requests.csv, cells.csv, samples.csv and
meta.json.

Rows are appended and flushed one by one, so a killed run keeps every finished request on disk. A cell's
row goes to cells.csv only when the cell has finished (whatever its status: a failed cell is data too);
a cell interrupted half-way gets no cells.csv row.

Resume (`--resume SESSION_DIR`): the cells listed in cells.csv are done and are skipped. The request and
sample rows of any other cell (a cell cut short by the interruption) are MOVED to `requests.partial.csv`
and `samples.partial.csv` — kept for inspection, never lost — and that cell is run again from the start,
so each cell appears exactly once in the main files.

CSV conventions: an empty field means 'not available' (or 'not capped' for a cap), never 0; booleans are
1/0 (as the AC-Prof long format writes `warmup`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tui_profiler.session.schema import CELL_COLUMNS, REQUEST_COLUMNS, SAMPLE_COLUMNS


def fmt(value: Any) -> str:
    """One CSV field: None / NaN -> '' (not available), bool -> 1/0."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return repr(value)
    return str(value)


def csv_field(text: str) -> str:
    """One field as `csv.writer` (QUOTE_MINIMAL) writes it inside a row of several: quoted only when it holds
    the delimiter, a quote or a line break. Formatting rows by hand costs a fraction of a csv.writer per row,
    which matters on the per-request path of a fast server."""
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    if "," in text or "\n" in text or "\r" in text:
        return '"' + text + '"'
    return text


def csv_line(fields: list[str]) -> bytes:
    """A whole CSV row, as `csv.writer` writes it (CRLF line end)."""
    if len(fields) == 1 and not fields[0]:
        return b'""\r\n'  # a lone empty field is quoted, or the row would read back as no row at all
    return (",".join(fields) + "\r\n").encode("utf-8")


class AppendCsv:
    """An append-only CSV file with a fixed header; every row is written whole with one unbuffered write
    (a killed run keeps every finished row). A row that does not fit (disk full) is cut back off the file
    and the OSError raised, so the file never ends in a half-written row."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        new = not path.exists() or path.stat().st_size == 0
        self._fh = path.open("ab", buffering=0)
        self._size = path.stat().st_size
        if new:
            self._append(columns)
        self.rows_written = 0

    def _append(self, fields: list[str]) -> None:
        self._append_bytes(csv_line([csv_field(f) for f in fields]))

    def _append_bytes(self, data: bytes) -> None:
        try:
            done = 0
            while done < len(data):
                done += self._fh.write(data[done:]) or 0
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fh.fileno(), self._size)
            raise
        self._size += len(data)

    def write(self, row: dict[str, Any]) -> None:
        self._append([fmt(row.get(c)) for c in self.columns])
        self.rows_written += 1

    def with_constant(self, constant: dict[str, Any]) -> BoundRows:
        """A writer for rows whose `constant` columns never change (a cell's settings): those fields are
        formatted once, each row only its own."""
        return BoundRows(self, constant)

    def sync(self) -> None:
        if not self._fh.closed:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            try:
                self.sync()
            finally:
                self._fh.close()


class BoundRows:
    """Rows of one `AppendCsv` that share their constant columns; `write(varying)` fills in the rest
    (a column in neither is empty). Each row is still one whole write, on disk when `write` returns."""

    def __init__(self, target: AppendCsv, constant: dict[str, Any]) -> None:
        self.target = target
        self._fields = [csv_field(fmt(constant.get(c))) for c in target.columns]
        self._varying = [(i, c) for i, c in enumerate(target.columns) if c not in constant]

    def write(self, varying: dict[str, Any]) -> None:
        fields = self._fields.copy()
        get = varying.get
        for i, column in self._varying:
            value = get(column)
            if value is None:
                continue
            kind = type(value)  # the common types inline (what `fmt` does), the rest through it
            if kind is float:
                fields[i] = repr(value) if value - value == 0.0 else ""  # inf - inf and nan - nan are nan
            elif kind is int:
                fields[i] = str(value)
            else:
                fields[i] = csv_field(fmt(value))
        self.target._append_bytes(csv_line(fields))
        self.target.rows_written += 1


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the complete rows of a CSV (a last line cut by a kill is left out)."""
    if not path.exists():
        return [], []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        rows = [dict(zip(header, r, strict=True)) for r in reader if len(r) == len(header)]
    return header, rows


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def new_session_dir(output_dir: str | os.PathLike[str], preset_name: str) -> Path:
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", preset_name) or "session"
    path = root / f"{stamp}-{safe}"
    n = 2
    while path.exists():
        path = root / f"{stamp}-{safe}-{n}"
        n += 1
    path.mkdir()
    return path


class SessionStore:
    """Writes one session folder. Use `SessionStore.create(...)` or `SessionStore.resume(session_dir)`."""

    def __init__(self, session_dir: Path, meta: dict[str, Any], finished: set[int]) -> None:
        self.dir = session_dir
        # The container label value: the folder name plus a random token (kept in meta.json so a resume
        # reuses it), so two runs started in the same second never share a label.
        self.session_id = str(meta.get("session_id") or session_dir.name)
        self.meta = meta
        self.finished_cells = finished
        self.requests = AppendCsv(session_dir / "requests.csv", REQUEST_COLUMNS)
        self.cells = AppendCsv(session_dir / "cells.csv", CELL_COLUMNS)
        self.samples = AppendCsv(session_dir / "samples.csv", SAMPLE_COLUMNS)

    @classmethod
    def create(
        cls, output_dir: str | os.PathLike[str], preset_name: str, meta: dict[str, Any]
    ) -> SessionStore:
        session_dir = new_session_dir(output_dir, preset_name)
        meta = {
            "session_id": f"{session_dir.name}-{secrets.token_hex(3)}",
            "created_utc": datetime.now(UTC).isoformat(),
            **meta,
        }
        _write_json_atomic(session_dir / "meta.json", meta)
        return cls(session_dir, meta, set())

    @classmethod
    def resume(cls, session_dir: str | os.PathLike[str]) -> SessionStore:
        """Re-open a session: finished cells are those in cells.csv; rows of unfinished cells are moved to
        *.partial.csv (see the module docstring)."""
        path = Path(session_dir)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path}: not a tui-profiler session (no meta.json)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        _, cell_rows = read_rows(path / "cells.csv")
        finished = {int(r["cell_index"]) for r in cell_rows if r.get("cell_index", "").isdigit()}
        _rewrite_csv(path / "cells.csv", CELL_COLUMNS, cell_rows, keep=lambda r: True)
        for name, columns in (("requests", REQUEST_COLUMNS), ("samples", SAMPLE_COLUMNS)):
            _, rows = read_rows(path / f"{name}.csv")
            keep: list[dict[str, str]] = []
            moved: list[dict[str, str]] = []
            for r in rows:
                done = r.get("cell_index", "").isdigit() and int(r["cell_index"]) in finished
                (keep if done else moved).append(r)
            if moved:
                partial = AppendCsv(path / f"{name}.partial.csv", columns)
                for r in moved:
                    partial.write(r)
                partial.close()
            _rewrite_csv(path / f"{name}.csv", columns, keep, keep=lambda r: True)
        resumes = list(meta.get("resumes", []))
        resumes.append({"resumed_utc": datetime.now(UTC).isoformat(), "finished_cells": len(finished)})
        meta["resumes"] = resumes
        _write_json_atomic(meta_path, meta)
        return cls(path, meta, finished)

    def write_request(self, row: dict[str, Any]) -> None:
        self.requests.write(row)

    def request_rows(self, constant: dict[str, Any]) -> BoundRows:
        """requests.csv rows that share `constant` (one cell's settings): the per-request fast path."""
        return self.requests.with_constant(constant)

    def write_sample(self, row: dict[str, Any]) -> None:
        self.samples.write(row)

    def write_partial(self, requests: list[dict[str, Any]], samples: list[dict[str, Any]]) -> None:
        """Rows of cells that did not finish (a fleet host dropped, a stop): *.partial.csv, where a
        resume also moves such rows, never the session's own CSVs."""
        for name, columns, rows in (
            ("requests", REQUEST_COLUMNS, requests),
            ("samples", SAMPLE_COLUMNS, samples),
        ):
            if rows:
                partial = AppendCsv(self.dir / f"{name}.partial.csv", columns)
                try:
                    for r in rows:
                        partial.write(r)
                finally:
                    partial.close()

    def write_cell(self, row: dict[str, Any]) -> None:
        self.requests.sync()
        self.samples.sync()
        self.cells.write(row)
        self.cells.sync()
        self.finished_cells.add(int(row["cell_index"]))

    def update_meta(self, **fields: Any) -> None:
        self.meta.update(fields)
        _write_json_atomic(self.dir / "meta.json", self.meta)

    def close(self) -> None:
        for f in (self.requests, self.samples, self.cells):
            try:
                f.close()
            except OSError:
                pass


def _rewrite_csv(path: Path, columns: list[str], rows: Iterable[dict[str, str]], keep: Any) -> None:
    """Rewrite a CSV atomically with the current header (old sessions' extra columns are dropped)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            if keep(r):
                w.writerow([r.get(c, "") for c in columns])
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
