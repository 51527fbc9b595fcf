"""Read latency measurements into one tidy frame: AC-Prof wide and long CSVs, our session folders,
requests.csv and cells.csv.

Tidy columns (one row per measurement; per-request rows or per-cell aggregates):

    source, model, task, gpu_mode ("on"|"off"), host_class (the hardware label of the test box; "" when none),
    cpu_cores, mem_cap_gb, pixels, token_len, concurrency, rate,
    latency_s, p50_s, p99_s, throughput_rps, warmup (bool), status (str), row_kind ("request"|"aggregate")

Generative data adds `ttft_s, tpot_s, prompt_tokens, output_tokens, output_len` (per request) and
`ttft_p50_s, ttft_p99_s, tpot_p50_s, tpot_p99_s` (per cell); NaN where not streamed.

Our sessions add `cell_index, repeat_idx, n_requests` (cells.csv `n`), `saturation, saturation_reason`
(a requests.csv row takes its cell's from cells.csv) and the cells' 95% intervals (`INTERVAL_COLUMNS`);
NaN / '' where the file has none.

`pixels` / `token_len` is NaN where the file has no such size. A wide file whose first column names another
input size (AC-Prof's silero.csv: `text_chars`) keeps that name as an extra size column after these; p50/p99/throughput only come from cells.csv
(per-request rows are aggregated by the fitter). Nothing is imputed: a missing value stays NaN.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tui_profiler.errors import ProfilerError
from tui_profiler.session.schema import CELL_COLUMNS, REQUEST_COLUMNS, CellStatus, GenColumn

TOKEN_COLUMNS: tuple[str, ...] = tuple(
    c.value
    for c in (
        GenColumn.TTFT_S,
        GenColumn.TPOT_S,
        GenColumn.TTFT_P50_S,
        GenColumn.TTFT_P99_S,
        GenColumn.TPOT_P50_S,
        GenColumn.TPOT_P99_S,
        GenColumn.PROMPT_TOKENS,
        GenColumn.OUTPUT_TOKENS,
        GenColumn.OUTPUT_LEN,
    )
)
# Each cell's 95% intervals as cells.csv records them (empty there: not bounded; absent: a session before
# intervals): the mean's, and each fitted percentile's.
INTERVAL_COLUMNS: tuple[str, ...] = (
    "ci95_low_s",
    "ci95_high_s",
    "p50_lo_s",
    "p50_hi_s",
    "p99_lo_s",
    "p99_hi_s",
    *(f"{m}_{q}_{side}_s" for m in ("ttft", "tpot") for q in ("p50", "p99") for side in ("lo", "hi")),
)
SATURATION = "saturation"  # cells.csv: '', or the flags (client, server, host) joined by '+'
SATURATION_REASON = "saturation_reason"
# CPU time per request from the target's cgroup: requests.csv `cpu_ms`, cells.csv `cpu_ms_mean` (`fit
# --target cpu`); NaN where not measured
CPU_COLUMNS = ("cpu_ms", "cpu_ms_mean")
TIDY_COLUMNS = [
    "source",
    "model",
    "task",
    "gpu_mode",
    "host_class",  # the test box's hardware label (a requests.csv row without one takes its cell's); "" when none
    "cpu_cores",
    "mem_cap_gb",
    "pixels",
    "token_len",
    "concurrency",
    "rate",
    "latency_s",
    "p50_s",
    "p99_s",
    "throughput_rps",
    "warmup",
    "status",
    "row_kind",
    # generative answers: streamed tokens, per request (ttft_s, tpot_s, token counts) or per cell
    *TOKEN_COLUMNS,
    # our sessions: the cell a row belongs to, its repetition, its timed requests (cells.csv `n`), its
    # saturation flags (a requests.csv row takes its cell's) and its intervals (cells.csv); NaN / '' where none
    "cell_index",
    "repeat_idx",
    "n_requests",
    SATURATION,
    SATURATION_REASON,
    *INTERVAL_COLUMNS,
    *CPU_COLUMNS,
]

HOST_CLASS = "host_class"
OK = CellStatus.OK.value  # the tidy frame's status of a usable row, as a session writes it
SIZE_COLUMNS = ("pixels", "token_len")  # the named input sizes; a wide file may bring another (see above)
# AC-Prof wide column names: `CPU4+Mem8`, `GPU+CPU8+Mem16`, `CPU8` (parts in any order, case-insensitive).
_CONFIG_PART = re.compile(
    r"^(?:(?P<gpu>GPU)|CPU(?P<cpu>\d+(?:\.\d+)?)|MEM(?P<mem>\d+(?:\.\d+)?))$", re.IGNORECASE
)
_SIZE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]*$")
_WIDE_SIZE_NAMES = {
    "pixels": "pixels",
    "pixel": "pixels",
    "tokens": "token_len",
    "token_len": "token_len",
    "token": "token_len",
    "seq_len": "token_len",
    "sequence_length": "token_len",
}
# Long-format columns that identify a per-request file (AC-Prof long and our requests.csv).
_LONG_REQUIRED = {"cpu_cores", "latency_s"}
# cells.csv: accepted spellings for each tidy field, first match wins.
_CELL_ALIASES: dict[str, tuple[str, ...]] = {
    "cpu_cores": ("cpu_cores", "cpus", "cpus_requested"),
    "mem_cap_gb": ("mem_cap_gb", "memory_gb", "mem_gb"),
    "gpu_mode": ("gpu_mode", "gpus"),
    "latency_s": ("latency_mean_s", "mean_latency_s", "latency_s_mean", "mean_s", "latency_s"),
    "p50_s": ("latency_p50_s", "p50_latency_s", "p50_s", "p50"),
    "p99_s": ("latency_p99_s", "p99_latency_s", "p99_s", "p99"),
    "throughput_rps": ("throughput_rps", "throughput", "rps", "requests_per_s"),
    "model": ("model_name", "model"),
}


class DataFormatError(ProfilerError, ValueError):
    """A file could not be read as latency data; the message is one line naming the file."""


def parse_config(name: str) -> tuple[bool, float, float | None] | None:
    """`GPU+CPU8+Mem16` -> (gpu, cpus, mem_gb); `CPU8` -> (False, 8.0, None); None when not a config."""
    gpu, cpu, mem = False, None, None
    for part in str(name).strip().split("+"):
        m = _CONFIG_PART.match(part.strip())
        if m is None:
            return None
        if m["gpu"]:
            gpu = True
        elif m["cpu"] is not None:
            cpu = float(m["cpu"])
        else:
            mem = float(m["mem"])
    return None if cpu is None else (gpu, cpu, mem)


def size_columns(df: pd.DataFrame) -> list[str]:
    """The input-size columns of a tidy frame: pixels, token_len, then any a wide file named itself."""
    return [*SIZE_COLUMNS, *(c for c in df.columns if c not in TIDY_COLUMNS)]


def read_paths(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Read every path (file or session folder) into one tidy frame."""
    frames = [read_path(p) for p in paths]
    if not frames:
        raise DataFormatError("no input paths given")
    df = pd.concat(frames, ignore_index=True)
    return df[TIDY_COLUMNS + [c for c in df.columns if c not in TIDY_COLUMNS]]


def read_path(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_session(path)
    try:
        df = pd.read_csv(path, dtype={HOST_CLASS: "string"})  # a label, even when it looks like a number
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from exc
    kind = detect_format(df)
    if kind == "wide":
        return _tidy(_from_wide(df, path), path)
    if kind == "long":
        if "cell_index" in df:  # a row without its own label takes its cell's (cells.csv has it always)
            by_cell = df["cell_index"].map(_host_class_by_cell(path.parent / "cells.csv"))
            own = df[HOST_CLASS] if HOST_CLASS in df else pd.Series(pd.NA, index=df.index, dtype="string")
            df[HOST_CLASS] = own.mask(own.isna() | (own == ""), by_cell)
            for column, values in _saturation_by_cell(path.parent / "cells.csv").items():
                df[column] = df["cell_index"].map(values)
        return _tidy(_from_long(df, path, _session_meta(path.parent)), path)
    if kind == "cells":
        return _tidy(_from_cells(df, path, _session_meta(path.parent)), path)
    cols = ", ".join(map(str, df.columns[:6]))
    raise DataFormatError(
        f"{path}: unknown format (columns {cols}…): expected AC-Prof wide (Pixels,CPU4+Mem8,…), "
        "a per-request CSV (cpu_cores, latency_s, …) or a cells.csv"
    )


def _host_class_by_cell(cells_csv: Path) -> dict[Any, str]:
    """cell_index -> host_class from a session's cells.csv (a requests.csv may lack the column)."""
    try:
        cells = pd.read_csv(cells_csv, usecols=["cell_index", HOST_CLASS], dtype={HOST_CLASS: "string"})
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return {}  # no cells.csv, or one without a host_class column
    return dict(zip(cells["cell_index"], cells[HOST_CLASS].fillna(""), strict=True))


def _saturation_by_cell(cells_csv: Path) -> dict[str, dict[Any, str]]:
    """saturation and saturation_reason by cell_index, from a session's cells.csv ({} without the columns:
    a session before saturation flags)."""
    try:
        cells = pd.read_csv(cells_csv, dtype={SATURATION: "string", SATURATION_REASON: "string"})
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return {}
    if "cell_index" not in cells or SATURATION not in cells:
        return {}
    out = {SATURATION: dict(zip(cells["cell_index"], cells[SATURATION].fillna(""), strict=True))}
    if SATURATION_REASON in cells:
        out[SATURATION_REASON] = dict(
            zip(cells["cell_index"], cells[SATURATION_REASON].fillna(""), strict=True)
        )
    return out


def _host_class(df: pd.DataFrame) -> pd.Series | str:
    return df[HOST_CLASS].astype("string").fillna("").astype(str) if HOST_CLASS in df else ""


def detect_format(df: pd.DataFrame) -> str:
    """'wide' | 'long' | 'cells' | 'unknown'."""
    cols = [str(c).strip() for c in df.columns]
    if (
        len(cols) >= 2
        and _SIZE_NAME_RE.match(cols[0])
        and parse_config(cols[0]) is None
        and all(parse_config(c) for c in cols[1:])
    ):
        return "wide"
    lower = {c.lower() for c in cols}
    if set(REQUEST_COLUMNS) <= lower:  # a session's requests.csv
        return "long"
    if set(CELL_COLUMNS) <= lower:  # a session's cells.csv
        return "cells"
    if _LONG_REQUIRED <= lower and ("warmup" in lower or "repeat_idx" in lower or "timestamp_ms" in lower):
        return "long"
    if (
        "cell_index" in lower
        and any(a in lower for a in _CELL_ALIASES["cpu_cores"])
        and any(a in lower for a in _CELL_ALIASES["latency_s"] + _CELL_ALIASES["p50_s"])
    ):
        return "cells"
    return "unknown"


def read_session(folder: Path) -> pd.DataFrame:
    """A session folder: requests.csv when present (per-request, richest), else cells.csv."""
    for name in ("requests.csv", "cells.csv"):
        f = folder / name
        if f.exists():
            df = read_path(f)
            if len(df):
                return df
    raise DataFormatError(f"{folder}: no requests.csv or cells.csv with rows in this session folder")


def _session_meta(folder: Path) -> dict[str, Any]:
    meta = folder / "meta.json"
    if not meta.exists():
        return {}
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _meta_str(meta: dict[str, Any], *keys: str) -> str:
    """The first non-empty string among meta[key] and meta["preset"][key] (a {"name": …} table counts)."""
    preset = meta.get("preset")
    for k in keys:
        for d in (meta, preset if isinstance(preset, dict) else {}):
            v = d.get(k)
            if isinstance(v, dict):
                v = v.get("name")
            if isinstance(v, str) and v:
                return v
    return ""


def _from_wide(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    size_col = str(df.columns[0]).strip()
    lowered = size_col.lower().replace(" ", "_")
    size_name = _WIDE_SIZE_NAMES.get(lowered, lowered)
    if size_name in TIDY_COLUMNS and size_name not in SIZE_COLUMNS:
        raise DataFormatError(f"{path}: first column {size_col!r} is not an input size")
    rows = []
    sizes = pd.to_numeric(df.iloc[:, 0], errors="coerce")
    for col in df.columns[1:]:
        config = parse_config(str(col))
        assert config is not None  # detect_format checked every column
        gpu, cpus, mem = config
        values = pd.to_numeric(df[col], errors="coerce")
        for size, value in zip(sizes, values, strict=True):
            rows.append(
                {
                    "model": path.stem,
                    "task": size_name,
                    "gpu_mode": "on" if gpu else "off",
                    "cpu_cores": cpus,
                    "mem_cap_gb": np.nan if mem is None else mem,
                    size_name: size,
                    "latency_s": value,
                    "warmup": False,
                    "status": OK if np.isfinite(value) and np.isfinite(size) else "missing",
                    "row_kind": "aggregate",
                }
            )
    return pd.DataFrame(rows)


def _truthy(series: pd.Series) -> pd.Series:
    s = series.astype(str).str.strip().str.lower()
    return s.isin({"1", "1.0", "true", "yes", "y", "t"})


def _gpu_mode(series: pd.Series) -> pd.Series:
    """'on'/'off' from AC-Prof 'on'/'off', booleans, or a GPU count."""
    s = series.astype(str).str.strip().str.lower()
    num = pd.to_numeric(series, errors="coerce")
    on = s.isin({"on", "true", "yes", "gpu", "1", "1.0"}) | (num > 0)
    return on.map({True: "on", False: "off"})


def _from_long(df: pd.DataFrame, path: Path, meta: dict[str, Any]) -> pd.DataFrame:
    df = df.rename(columns={c: str(c).strip().lower() for c in df.columns})
    out = pd.DataFrame(index=df.index)
    model_default = _meta_str(meta, "model", "model_name") or path.parent.name
    out["model"] = df["model_name"].astype(str) if "model_name" in df else model_default
    out["task"] = df["task"].astype(str) if "task" in df else _meta_str(meta, "task")
    out["gpu_mode"] = _gpu_mode(df["gpu_mode"]) if "gpu_mode" in df else "off"
    out[HOST_CLASS] = _host_class(df)
    out["cpu_cores"] = pd.to_numeric(df["cpu_cores"], errors="coerce")
    out["mem_cap_gb"] = pd.to_numeric(df["mem_cap_gb"], errors="coerce") if "mem_cap_gb" in df else np.nan
    for size in ("pixels", "token_len", "concurrency", "rate"):
        out[size] = pd.to_numeric(df[size], errors="coerce") if size in df else np.nan
    if out["pixels"].notna().any():
        # An image model's rows may still carry a token_len column (AC-Prof long has one for all models).
        out["token_len"] = np.nan
    out["latency_s"] = pd.to_numeric(df["latency_s"], errors="coerce")
    _copy_numeric(df, out, (*TOKEN_COLUMNS, "cell_index", "repeat_idx", *CPU_COLUMNS))
    _copy_text(df, out, (SATURATION, SATURATION_REASON))
    out["warmup"] = _truthy(df["warmup"]) if "warmup" in df else False
    status = df["status"].astype(str).str.strip().str.lower() if "status" in df else pd.Series(OK, df.index)
    if "ok" in df:  # our requests.csv may carry an explicit ok flag
        status = status.where(_truthy(df["ok"]), CellStatus.FAILED.value)
    out["status"] = status.replace({"200": OK, "nan": OK})
    out["row_kind"] = "request"
    if not out["task"].astype(str).str.len().any():
        out["task"] = np.where(
            out["pixels"].notna(), "pixels", np.where(out["token_len"].notna(), "token_len", "")
        )
    return out


def _copy_numeric(df: pd.DataFrame, out: pd.DataFrame, columns: Iterable[str]) -> None:
    """Columns the file has, as numbers (text and blanks become NaN: not available)."""
    for col in columns:
        if col in df:
            out[col] = pd.to_numeric(df[col], errors="coerce")


def _copy_text(df: pd.DataFrame, out: pd.DataFrame, columns: Iterable[str]) -> None:
    """Text columns the file has ('' for blanks)."""
    for col in columns:
        if col in df:
            out[col] = df[col].astype("string").fillna("").astype(str)


def _pick(df: pd.DataFrame, field: str) -> pd.Series | None:
    lower = {str(c).strip().lower(): c for c in df.columns}
    for alias in _CELL_ALIASES[field]:
        if alias in lower:
            return df[lower[alias]]
    return None


def _from_cells(df: pd.DataFrame, path: Path, meta: dict[str, Any]) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    model = _pick(df, "model")
    out["model"] = (
        model.astype(str)
        if model is not None
        else (_meta_str(meta, "model", "model_name") or path.parent.name)
    )
    out["task"] = df["task"].astype(str) if "task" in df else _meta_str(meta, "task")
    gpu = _pick(df, "gpu_mode")
    out["gpu_mode"] = _gpu_mode(gpu) if gpu is not None else "off"
    out[HOST_CLASS] = _host_class(df)
    for field in ("cpu_cores", "mem_cap_gb", "latency_s", "p50_s", "p99_s", "throughput_rps"):
        col = _pick(df, field)
        out[field] = pd.to_numeric(col, errors="coerce") if col is not None else np.nan
    for size in ("pixels", "token_len", "concurrency", "rate"):
        out[size] = pd.to_numeric(df[size], errors="coerce") if size in df else np.nan
    if out["pixels"].notna().any():
        out["token_len"] = np.nan
    _copy_numeric(df, out, (*TOKEN_COLUMNS, *INTERVAL_COLUMNS, "cell_index", "repeat_idx", *CPU_COLUMNS))
    if "n" in df:
        out["n_requests"] = pd.to_numeric(df["n"], errors="coerce")
    _copy_text(df, out, (SATURATION, SATURATION_REASON))
    out["warmup"] = False
    out["status"] = df["status"].astype(str).str.strip().str.lower() if "status" in df else OK
    out["row_kind"] = "aggregate"
    if not out["task"].astype(str).str.len().any():
        out["task"] = np.where(
            out["pixels"].notna(), "pixels", np.where(out["token_len"].notna(), "token_len", "")
        )
    return out


def _tidy(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    df = df.copy()
    for col in TIDY_COLUMNS:
        if col not in df:
            df[col] = np.nan
    df["source"] = str(path)
    df["task"] = df["task"].fillna("").astype(str)
    df["model"] = df["model"].fillna("").astype(str)
    df[HOST_CLASS] = df[HOST_CLASS].astype("string").fillna("").astype(str)
    for col in (SATURATION, SATURATION_REASON):
        df[col] = df[col].astype("string").fillna("").astype(str)
    df["warmup"] = df["warmup"].fillna(False).astype(bool)
    df["status"] = df["status"].fillna(OK).astype(str)
    return df[TIDY_COLUMNS + [c for c in df.columns if c not in TIDY_COLUMNS]].reset_index(drop=True)


def fit_rows(tidy: pd.DataFrame) -> pd.DataFrame:
    """The rows a fit may use: not warm-up, status ok, a finite positive latency and CPU count."""
    lat = tidy["latency_s"].where(tidy["latency_s"].notna(), tidy["p50_s"])
    keep = (~tidy["warmup"]) & (tidy["status"].str.lower() == OK) & (lat > 0) & (tidy["cpu_cores"] > 0)
    return tidy[keep.fillna(False)].reset_index(drop=True)
