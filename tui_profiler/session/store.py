"""The session folder, written from the event stream: `OUTPUT/<YYYYmmdd-HHMMSS>-<preset>/` with
requests.csv, cells.csv, samples.csv and meta.json; repetitions.csv when a configuration ran in several
repetitions (`tui_profiler.session.repetitions`, written when the session finishes); capacity.csv when the
session searched for the most load that meets its SLO (`CapacityFound`).

`SessionWriter` is an event consumer like the TUI and the headless progress: the sweep emits, the writer
writes (`recording(...)` puts it first among a run's consumers, so rows are on disk before any view shows
them). Replaying a recorded event stream into a fresh writer reproduces the files byte for byte.

Rows are appended and flushed one by one, so a killed run keeps every finished request on disk. A cell's
row goes to cells.csv only when the cell has finished (whatever its status: a failed cell is data too);
a cell interrupted half-way gets no cells.csv row.

Resume (`--resume SESSION_DIR`): the cells listed in cells.csv are done and are skipped. The request and
sample rows of any other cell (a cell cut short by the interruption), and its server_metrics.csv rows, are
MOVED to `requests.partial.csv`, `samples.partial.csv` and `server_metrics.partial.csv` — kept for
inspection, never lost — and that cell is run again from the start, so each cell appears exactly once in
the main files. A cell started again within a session (its fleet host dropped mid-way) has its earlier rows
moved aside the same way.

CSV conventions: an empty field means 'not available' (or 'not capped' for a cap), never 0; booleans are
1/0 (as the AC-Prof long format writes `warmup`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tui_profiler.events import (
    CapacityFound,
    CellFinished,
    CellStarted,
    Emit,
    Event,
    MetaUpdated,
    RequestDone,
    ResourceSample,
    ServerMetrics,
    SessionFinished,
    SessionStarted,
)
from tui_profiler.session.reader import new_session_id, read_rows, session_dir_for
from tui_profiler.session.repetitions import repetition_rows
from tui_profiler.session.schema import (
    CAPACITY_COLUMNS,
    CELL_COLUMNS,
    CELL_CONSTANT_COLUMNS,
    REPETITION_COLUMNS,
    REQUEST_COLUMNS,
    SAMPLE_COLUMNS,
    SERVER_METRIC_COLUMNS,
    CellStatus,
)


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


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class SessionStore:
    """Writes one session folder. Use `SessionStore.create(...)` or `SessionStore.resume(session_dir)`."""

    def __init__(self, session_dir: Path, meta: dict[str, Any], finished: set[int]) -> None:
        self.dir = session_dir
        self.session_id = str(meta.get("session_id") or session_dir.name)
        self.meta = meta
        self.finished_cells = finished
        self.requests = AppendCsv(session_dir / "requests.csv", REQUEST_COLUMNS)
        self.cells = AppendCsv(session_dir / "cells.csv", CELL_COLUMNS)
        self.samples = AppendCsv(session_dir / "samples.csv", SAMPLE_COLUMNS)
        self.capacity: AppendCsv | None = None  # capacity.csv: opened by a search's first row
        self.server_metrics: AppendCsv | None = None  # server_metrics.csv, from the first scrape on

    @classmethod
    def create(
        cls, output_dir: str | os.PathLike[str], preset_name: str, meta: dict[str, Any]
    ) -> SessionStore:
        return cls.create_at(session_dir_for(output_dir, preset_name), meta)

    @classmethod
    def create_at(cls, session_dir: Path, meta: dict[str, Any]) -> SessionStore:
        """A new session in `session_dir`, created here (it must not exist yet)."""
        session_dir.parent.mkdir(parents=True, exist_ok=True)
        session_dir.mkdir()
        meta = {
            "session_id": meta.get("session_id") or new_session_id(session_dir),
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
        _move_rows_aside(path, lambda index: index not in finished)
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

    def write_server_metrics(self, event: ServerMetrics) -> None:
        """server_metrics.csv rows of one scrape (the file is made by the first scrape of a session)."""
        if self.server_metrics is None:
            self.server_metrics = AppendCsv(self.dir / "server_metrics.csv", SERVER_METRIC_COLUMNS)
        for metric, labels, value in event.rows:
            self.server_metrics.write(
                {"cell_index": event.cell_index, "t_s": event.t_s, "metric": metric, "labels": labels,
                 "value": value}
            )  # fmt: skip

    def set_aside(self, cell_index: int) -> None:
        """Move the rows of a cell that is about to run again (its earlier try was cut short) to
        *.partial.csv, as a resume does."""
        for f in (self.requests, self.samples, self.server_metrics):
            if f is not None:
                f.close()
        _move_rows_aside(self.dir, lambda index: index == cell_index)
        self.requests = AppendCsv(self.dir / "requests.csv", REQUEST_COLUMNS)
        self.samples = AppendCsv(self.dir / "samples.csv", SAMPLE_COLUMNS)
        if self.server_metrics is not None:
            self.server_metrics = AppendCsv(self.dir / "server_metrics.csv", SERVER_METRIC_COLUMNS)

    def write_cell(self, row: dict[str, Any]) -> None:
        self.requests.sync()
        self.samples.sync()
        self.cells.write(row)
        self.cells.sync()
        self.finished_cells.add(int(row["cell_index"]))

    def write_repetitions(self) -> None:
        """repetitions.csv: the spread between repetitions of each configuration measured more than once
        (`session.repetitions`), from cells.csv as it stands (resumed cells included); no file when no
        configuration has two repetitions."""
        self.cells.sync()
        _, cell_rows = read_rows(self.dir / "cells.csv")
        rows = repetition_rows(cell_rows)
        if rows:
            _rewrite_csv(
                self.dir / "repetitions.csv",
                list(REPETITION_COLUMNS),
                ({c: fmt(r.get(c)) for c in REPETITION_COLUMNS} for r in rows),
                keep=lambda r: True,
            )

    def write_capacity(self, row: dict[str, Any]) -> None:
        if self.capacity is None:
            self.capacity = AppendCsv(self.dir / "capacity.csv", CAPACITY_COLUMNS)
        self.capacity.write(row)
        self.capacity.sync()

    def update_meta(self, **fields: Any) -> None:
        self.meta.update(fields)
        _write_json_atomic(self.dir / "meta.json", self.meta)

    def close(self) -> None:
        for f in (self.requests, self.samples, self.cells, self.capacity, self.server_metrics):
            if f is None:
                continue
            try:
                f.close()
            except OSError:
                pass


def _move_rows_aside(session_dir: Path, aside: Callable[[int | None], bool]) -> None:
    """Move the request, sample and server-metric rows whose cell `aside` names to *.partial.csv (kept,
    never lost); a row without a cell index counts as None."""
    for name, columns in (
        ("requests", REQUEST_COLUMNS),
        ("samples", SAMPLE_COLUMNS),
        ("server_metrics", SERVER_METRIC_COLUMNS),
    ):
        _, rows = read_rows(session_dir / f"{name}.csv")
        keep: list[dict[str, str]] = []
        moved: list[dict[str, str]] = []
        for r in rows:
            index = int(r["cell_index"]) if r.get("cell_index", "").isdigit() else None
            (moved if aside(index) else keep).append(r)
        if moved:
            partial = AppendCsv(session_dir / f"{name}.partial.csv", columns)
            try:
                for r in moved:
                    partial.write(r)
            finally:
                partial.close()
            _rewrite_csv(session_dir / f"{name}.csv", columns, keep, keep=lambda r: True)


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


class SessionWriter:
    """The session folder as an event consumer: call it with each event of a sweep, in order.

    `SessionStarted` creates the folder (or re-opens it for a resume) and writes meta.json; `RequestDone`
    and `ResourceSample` append their rows at once; `CellFinished` writes the cell's row (an interrupted
    cell gets none); `CapacityFound` a capacity.csv row; `MetaUpdated` and `SessionFinished` update
    meta.json; the latter writes repetitions.csv (when a configuration ran in several repetitions) and
    closes the files.
    An OSError (a full disk) is raised to the emitter: the sweep stops with a clear error."""

    def __init__(self) -> None:
        self.store: SessionStore | None = None
        self._container_idx: dict[int, Any] = {}  # cell -> its container group's index
        self._requests: dict[int, BoundRows] = {}  # cell -> its requests.csv rows (settings formatted once)
        self._with_rows: set[int] = set()  # cells with rows in requests.csv or samples.csv

    @property
    def session_dir(self) -> Path | None:
        return self.store.dir if self.store else None

    def __call__(self, event: Event) -> None:
        if isinstance(event, RequestDone):
            self._request(event)
        elif isinstance(event, ResourceSample):
            self._sample(event)
        elif isinstance(event, ServerMetrics):
            self._open().write_server_metrics(event)
        elif isinstance(event, CellStarted):
            self._cell_started(event)
        elif isinstance(event, CellFinished):
            self._cell_finished(event)
        elif isinstance(event, SessionStarted):
            self._session_started(event)
        elif isinstance(event, CapacityFound):
            self._open().write_capacity(event.row)
        elif isinstance(event, MetaUpdated):
            self._open().update_meta(**event.fields)
        elif isinstance(event, SessionFinished):
            self._session_finished(event)

    def _open(self) -> SessionStore:
        if self.store is None:
            raise RuntimeError("SessionWriter: an event came before SessionStarted")
        return self.store

    def _session_started(self, event: SessionStarted) -> None:
        path = Path(event.session_dir)
        if event.resume:
            self.store = SessionStore.resume(path)
            self.store.update_meta(**event.meta)
        else:
            self.store = SessionStore.create_at(path, {"session_id": event.session_id, **event.meta})

    def _cell_started(self, event: CellStarted) -> None:
        index = event.cell_index
        self._container_idx[index] = event.cell.get("container_group")
        self._requests.pop(index, None)
        if index in self._with_rows:  # a second try of a cell within this session
            self._open().set_aside(index)
            self._requests.clear()  # bound to the files set_aside re-opened
            self._with_rows.discard(index)

    def _request(self, event: RequestDone) -> None:
        rows = self._requests.get(event.cell_index)
        if rows is None:
            row = event.row
            constant = {c: row.get(c) for c in CELL_CONSTANT_COLUMNS}
            rows = self._requests[event.cell_index] = self._open().request_rows(constant)
            self._with_rows.add(event.cell_index)
        rows.write(event.row)

    def _sample(self, event: ResourceSample) -> None:
        row = {**asdict(event), "container_idx": self._container_idx.get(event.cell_index)}
        self._open().write_sample(row)
        self._with_rows.add(event.cell_index)

    def _cell_finished(self, event: CellFinished) -> None:
        self._requests.pop(event.cell_index, None)
        if event.status != CellStatus.INTERRUPTED:
            self._open().write_cell(event.summary)
            self._with_rows.discard(event.cell_index)

    def _session_finished(self, event: SessionFinished) -> None:
        store = self._open()
        try:
            with contextlib.suppress(OSError):  # the disk that stopped the session may still be full
                store.write_repetitions()
            with contextlib.suppress(OSError):
                store.update_meta(
                    status=event.status,
                    cells_finished=event.cells_finished,
                    cells_remaining=event.cells_remaining,
                    last_wall_s=event.wall_s,
                )
        finally:
            store.close()


def recording(*consumers: Emit) -> Emit:
    """A run's consumers with the session writer first: its rows are on disk before any view shows them.
    (The sweep turns a consumer's error into a LogMessage; the writer's OSError, a full disk, stops it.)"""
    writer = SessionWriter()

    def emit(event: Event) -> None:
        writer(event)
        for consume in consumers:
            consume(event)

    return emit


def replay(events: Iterable[Event], session_dir: Path | None = None) -> Path:
    """Feed a recorded event stream into a fresh writer: the session's files again (in `session_dir`,
    when given, instead of the recorded folder). Returns the folder written."""
    writer = SessionWriter()
    for event in events:
        if session_dir is not None and isinstance(event, SessionStarted | SessionFinished):
            event = replace(event, session_dir=str(session_dir))
        writer(event)
    if writer.session_dir is None:
        raise ValueError("replay: the stream has no SessionStarted")
    return writer.session_dir
