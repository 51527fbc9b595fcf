"""Read session folders: list them, their meta.json and cells.csv rows (the sweep, `run`, the Setup
screen), and their CSVs as frames with the figure's series and the cold-start breakdown (the results
screen, `tui-profiler plot`).

A session folder holds requests.csv, cells.csv, samples.csv and meta.json (written by
`tui_profiler.session.store`; columns in `tui_profiler.session.schema`). Everything here reads
defensively: a column that is missing or empty is 'not available', never 0. pandas is imported only by
the functions that return frames, so the sweep can read a session without paying for it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui_profiler.session.schema import COLD_START_PHASES, CellStatus
from tui_profiler.stats import median

if TYPE_CHECKING:
    import pandas as pd

# Columns that identify a resource configuration (one line per config in the AC-Prof-style figure).
CONFIG_COLUMNS = ("cpu_cores", "mem_cap_gb", "gpu_mode")
# The x axis of the figure, best first.
X_COLUMNS = ("input_scale", "pixels", "token_len")


def session_dir_for(output_dir: str | os.PathLike[str], preset_name: str) -> Path:
    """A new session's folder (not created): `<stamp>-<preset>`, `-2`, `-3`… when that name is taken."""
    root = Path(output_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", preset_name) or "session"
    path = root / f"{stamp}-{safe}"
    n = 2
    while path.exists():
        path = root / f"{stamp}-{safe}-{n}"
        n += 1
    return path


def new_session_id(session_dir: Path) -> str:
    """The container label value: the folder name plus a random token (kept in meta.json so a resume
    reuses it), so two runs started in the same second never share a label."""
    return f"{session_dir.name}-{secrets.token_hex(3)}"


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the complete rows of a CSV (a last line cut by a kill is left out)."""
    if not path.exists():
        return [], []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        rows = [dict(zip(header, r, strict=True)) for r in reader if len(r) == len(header)]
    return header, rows


@dataclass(slots=True)
class SessionInfo:
    path: Path
    name: str
    preset: str = ""
    status: str = ""
    n_cells: int | None = None
    wall_s: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def is_session_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "meta.json").exists() or (path / "cells.csv").exists() or (path / "requests.csv").exists()
    )


def list_sessions(output_dir: str | Path) -> list[SessionInfo]:
    """Session folders under `output_dir`, newest first (their names start with a timestamp)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    sessions = [read_session_info(p) for p in root.iterdir() if is_session_dir(p)]
    sessions.sort(key=lambda s: s.name, reverse=True)
    return sessions


def read_session_info(path: Path) -> SessionInfo:
    meta = _read_meta(path)
    preset = meta.get("preset_name") or _nested(meta, "preset", "name") or ""
    if not preset and "-" in path.name:
        preset = path.name.split("-", 2)[-1]
    # the store writes the plan and the wall time so far (`last_wall_s`); older/synthetic metas say n_cells
    n_cells = meta.get("n_cells")
    if n_cells is None and meta.get("search"):  # a capacity search: the cells it ran (none listed up front)
        n_cells = meta.get("cells_finished")
    if n_cells is None and isinstance(meta.get("plan"), list):
        n_cells = len(meta["plan"])
    wall_s = meta.get("wall_s", meta.get("last_wall_s"))
    return SessionInfo(
        path=path,
        name=path.name,
        preset=str(preset),
        status=str(meta.get("status", "")),
        n_cells=int(n_cells) if isinstance(n_cells, (int, float)) else None,
        wall_s=float(wall_s) if isinstance(wall_s, (int, float)) else None,
        meta=meta,
    )


def load_meta(session_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """meta.json of a session; raises OSError / ValueError when it is missing or not JSON."""
    data = json.loads((Path(session_dir) / "meta.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{session_dir}: meta.json is not a JSON object")
    return data


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        return load_meta(path)
    except (OSError, ValueError):
        return {}


def session_summary(session_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The cells.csv rows of a session (for summary tables)."""
    return read_rows(Path(session_dir) / "cells.csv")[1]


def read_capacity(session_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The capacity.csv rows of a session (a capacity search's; [] when it has none)."""
    return read_rows(Path(session_dir) / "capacity.csv")[1]


def _nested(d: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)  # type: ignore[assignment]
    return d


def read_csv(path: Path) -> pd.DataFrame:
    """A session CSV, or an empty frame when the file is missing or empty."""
    import pandas as pd

    try:
        return pd.read_csv(path, low_memory=False)
    except (OSError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def read_cells(session: Path) -> pd.DataFrame:
    """cells.csv; when it is missing, a per-cell summary computed from requests.csv."""
    cells = read_csv(session / "cells.csv")
    if not cells.empty:
        return cells
    return summarize_requests(read_requests(session))


def read_requests(session: Path) -> pd.DataFrame:
    return read_csv(session / "requests.csv")


def timed_ok(requests: pd.DataFrame) -> pd.DataFrame:
    """Timed (not warm-up), successful requests with a latency."""
    if requests.empty or "latency_s" not in requests:
        return requests.iloc[0:0]
    mask = requests["latency_s"].notna()
    if "warmup" in requests:
        mask &= ~requests["warmup"].astype(str).str.lower().isin(("true", "1", "yes"))
    if "status" in requests:
        mask &= requests["status"].astype(str).str.lower().isin((CellStatus.OK.value, "200", "true", "nan"))
    return requests[mask]


def summarize_requests(requests: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    timed = timed_ok(requests)
    if timed.empty or "cell_index" not in timed:
        return pd.DataFrame()
    keys = [c for c in ("cell_index", *CONFIG_COLUMNS, *X_COLUMNS, "concurrency") if c in timed]
    grouped = timed.groupby(keys, dropna=False)["latency_s"]
    out = grouped.agg(
        n="count", mean_s="mean", p50_s="median", p99_s=lambda s: s.quantile(0.99), max_s="max"
    ).reset_index()
    out["status"] = CellStatus.OK.value
    return out


def config_label(row: dict[str, Any]) -> str:
    """`CPU2+Mem4`, `GPU+CPU8+Mem16` — the AC-Prof column naming."""
    parts = []
    gpu = row.get("gpu_mode")
    if gpu not in (None, "", "off", "none", "0", 0, False) and not _isnan(gpu):
        parts.append("GPU")
    cpu = row.get("cpu_cores")
    if cpu is not None and not _isnan(cpu):
        parts.append(f"CPU{float(cpu):g}")
    mem = row.get("mem_cap_gb")
    if mem is not None and not _isnan(mem):
        parts.append(f"Mem{float(mem):g}")
    return "+".join(parts) or "uncapped"


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


@dataclass(slots=True)
class Series:
    label: str
    x: list[float]
    y: list[float]


def scaling_series(cells: pd.DataFrame, y_column: str = "p50_s") -> tuple[str, list[Series]]:
    """The AC-Prof figure's data: latency against input size, one series per resource config.

    Returns the x axis name and the series (sorted by x). Failed cells are left out.
    """
    if cells.empty or y_column not in cells:
        return "", []
    x_col = next((c for c in X_COLUMNS if c in cells and cells[c].notna().any()), "")
    if not x_col:
        return "", []
    frame = cells
    if "status" in frame:
        frame = frame[frame["status"].astype(str).isin((CellStatus.OK.value, "nan"))]
    frame = frame[frame[x_col].notna() & frame[y_column].notna()]
    config_cols = [c for c in CONFIG_COLUMNS if c in frame]
    groups: dict[str, dict[float, list[float]]] = {}
    for row in frame.to_dict("records"):
        label = config_label({c: row.get(c) for c in config_cols})
        groups.setdefault(label, {}).setdefault(float(row[x_col]), []).append(float(row[y_column]))
    series = []
    for label in sorted(groups, key=_config_sort_key):
        points = sorted((x, median(ys)) for x, ys in groups[label].items())
        series.append(Series(label, [p[0] for p in points], [p[1] for p in points]))
    return x_col, series


def _config_sort_key(label: str) -> tuple[bool | float, ...]:
    nums: list[float] = []
    for part in label.split("+"):
        digits = "".join(ch for ch in part if ch.isdigit() or ch == ".")
        nums.append(float(digits) if digits else 0.0)
    return ("GPU" in label, *nums)


def cell_latencies(requests: pd.DataFrame, cell_index: int) -> list[float]:
    timed = timed_ok(requests)
    if timed.empty or "cell_index" not in timed:
        return []
    return [float(v) for v in timed.loc[timed["cell_index"] == cell_index, "latency_s"]]


def cold_start_breakdown(cells: pd.DataFrame) -> tuple[list[str], dict[str, list[float]]]:
    """Per resource config, the cold-start phases in seconds (median over its cells).

    Columns may be named `<phase>_s` or `cold_<phase>_s`; a phase with no data is left out.
    """
    import pandas as pd

    if cells.empty:
        return [], {}
    found: dict[str, str] = {}
    for phase in COLD_START_PHASES:
        for col in (f"{phase}_s", f"cold_{phase}_s", f"cold_start_{phase}_s", phase):
            if col in cells and pd.to_numeric(cells[col], errors="coerce").notna().any():
                found[phase] = col
                break
    if not found:
        return [], {}
    config_cols = [c for c in CONFIG_COLUMNS if c in cells]
    per_config: dict[str, dict[str, list[float]]] = {}
    for row in cells.to_dict("records"):
        label = config_label({c: row.get(c) for c in config_cols})
        for phase, col in found.items():
            value = pd.to_numeric(pd.Series([row.get(col)]), errors="coerce").iloc[0]
            if pd.notna(value):
                per_config.setdefault(label, {}).setdefault(phase, []).append(float(value))
    labels = sorted(per_config, key=_config_sort_key)
    phases = {p: [median(per_config[lbl].get(p, [0.0]) or [0.0]) for lbl in labels] for p in found}
    return labels, phases


def export_session(session: Path, out_dir: Path | None = None) -> list[Path]:
    """One merged CSV (each request row with its cell's summary columns) and, when pyarrow is
    importable, the same as Parquet. Returns the written paths."""
    out_dir = out_dir or (session / "export")
    out_dir.mkdir(parents=True, exist_ok=True)
    requests = read_requests(session)
    cells = read_csv(session / "cells.csv")
    merged = requests
    if not requests.empty and not cells.empty and "cell_index" in requests and "cell_index" in cells:
        extra = [c for c in cells.columns if c == "cell_index" or c not in requests.columns]
        merged = requests.merge(cells[extra], on="cell_index", how="left", suffixes=("", "_cell"))
    elif requests.empty:
        merged = cells
    csv_path = out_dir / f"{session.name}-merged.csv"
    merged.to_csv(csv_path, index=False)
    written = [csv_path]
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return written
    parquet_path = out_dir / f"{session.name}-merged.parquet"
    merged.to_parquet(parquet_path, index=False)
    written.append(parquet_path)
    return written


def seconds_per_cell(output_dir: str | Path, preset: str | None = None) -> float | None:
    """Median wall seconds per cell over past sessions (the same preset's when there are any)."""
    estimates: list[tuple[str, float]] = []
    for info in list_sessions(output_dir):
        per_cell = _session_seconds_per_cell(info)
        if per_cell is not None:
            estimates.append((info.preset, per_cell))
    if not estimates:
        return None
    same = [v for p, v in estimates if preset and p == preset]
    return median(same or [v for _, v in estimates])


def _session_seconds_per_cell(info: SessionInfo) -> float | None:
    finished = info.meta.get("cells_finished")  # an interrupted session ran only these in its wall time
    cells = finished if isinstance(finished, int) and finished > 0 else info.n_cells
    if info.wall_s and cells:
        return info.wall_s / cells
    cells = read_csv(info.path / "cells.csv")
    if not cells.empty and "wall_s" in cells and cells["wall_s"].notna().any():
        return float(cells["wall_s"].dropna().median())
    return None


def compare_inputs(session: Path) -> tuple[str, dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """What `analysis.compare.SessionData` holds of a session: its name, meta.json, cells.csv and the
    timed, successful requests of requests.csv."""
    session = Path(session)
    return session.name, _read_meta(session), read_cells(session), timed_ok(read_requests(session))
