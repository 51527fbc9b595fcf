"""How both front ends (the TUI and the headless progress) show a quantity: one function per kind, so the same
value reads the same on either. Every function takes None (or NaN) for 'not available' and shows it as
NOT_AVAILABLE, never as 0."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

NOT_AVAILABLE = "—"
UNBOUNDED = "–"  # a side of a confidence interval that the sample cannot bound
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
# `compare`'s verdicts (analysis.compare.Verdict) as rich styles: worse red, better green, no change dim
VERDICT_STYLES = {
    "slower": "bold red",
    "higher": "bold red",
    "faster": "bold green",
    "lower": "bold green",
    "no detectable change": "dim",
    "not comparable": "yellow",
}


def _missing(value: float | None) -> bool:
    return value is None or value != value  # NaN != NaN


def number(value: Any) -> str:
    """A setting or count without trailing zeros: 0.5, 2, 1.25; text is shown as it is."""
    if value is None or value == "":
        return NOT_AVAILABLE
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return NOT_AVAILABLE if _missing(f) else f"{f:g}"


def _latency_unit(seconds: float) -> tuple[float, str, str]:
    """(scale, unit, number format) of the unit that reads best for a request-scale time."""
    if seconds < 1e-3:
        return 1e6, "µs", ".0f"
    if seconds < 1.0:
        return 1e3, "ms", ".1f"
    return 1.0, "s", ".2f"


def latency(seconds: float | None) -> str:
    """A request-scale time in the unit that reads best: 850 µs, 27.9 ms, 1.30 s."""
    if seconds is None or _missing(seconds):
        return NOT_AVAILABLE
    scale, unit, spec = _latency_unit(seconds)
    return f"{seconds * scale:{spec}} {unit}"


def latency_interval(
    estimate: float | None, lo: float | None, hi: float | None, needed: float | None = None
) -> str:
    """A percentile with its confidence interval, the bounds in the estimate's unit: '41.0 ms [37.0, 45.2]';
    a side the sample cannot bound is UNBOUNDED ('41.0 ms [37.0, –]'); `needed`: the requests a bounded
    interval needs, added as "needs 368" when a side is unbounded. Call it where the interval is known
    (its columns exist); without them show `latency(estimate)`."""
    if estimate is None or _missing(estimate):
        return NOT_AVAILABLE
    scale, unit, spec = _latency_unit(estimate)

    def bound(value: float | None) -> str:
        return UNBOUNDED if value is None or _missing(value) else f"{value * scale:{spec}}"

    text = f"{estimate * scale:{spec}} {unit} [{bound(lo)}, {bound(hi)}]"
    open_side = lo is None or hi is None or _missing(lo) or _missing(hi)
    if open_side and needed is not None and not _missing(needed):
        text += f" needs {needed:.0f}"
    return text


# the requests a bounded interval of a percentile needs (cells.csv; the first name present is read)
_N_NEEDED = {"p99": ("p99_n_needed", "n_needed_p99")}


def _row_number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if _missing(f) else f


def row_percentile(row: Mapping[str, Any], stat: str, *, needs: bool = True) -> str:
    """A cell's percentile ('p50', 'p99') from its cells.csv row (text, numbers or NaN), with its 95%
    interval where the row has the interval's columns (`latency_interval`; `needs`: add the requests a
    bounded one needs), the value alone for a session before intervals."""
    value = _row_number(row, f"{stat}_s")
    if f"{stat}_lo_s" not in row and f"{stat}_hi_s" not in row:
        return latency(value)
    needed = next((_row_number(row, k) for k in _N_NEEDED.get(stat, ()) if k in row), None)
    lo, hi = _row_number(row, f"{stat}_lo_s"), _row_number(row, f"{stat}_hi_s")
    return latency_interval(value, lo, hi, needed if needs else None)


def saturation(flags: Any) -> str:
    """A cell's saturation flags as the CSV writes them ('client', 'server+host'); '' when none (or the
    session predates the column)."""
    if flags is None or (isinstance(flags, float) and _missing(flags)):
        return ""
    return str(flags).strip()


def seconds(value: float | None) -> str:
    """A phase or wall time in seconds, to the hundredth: 0.35 s, 3.10 s."""
    return NOT_AVAILABLE if value is None or _missing(value) else f"{value:.2f} s"


def duration(value: float | None) -> str:
    """A long span (an ETA, time elapsed, a session's wall time), whole seconds: 45 s, 3 m 05 s, 1 h 02 m."""
    if value is None or _missing(value):
        return NOT_AVAILABLE
    value = max(0.0, value)
    if value < 60:
        return f"{value:.0f} s"
    if value < 3600:
        return f"{int(value // 60)} m {int(value % 60):02d} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60):02d} m"


def size(n_bytes: float | None) -> str:
    """A memory or file size in binary units: 512 B, 409.6 MiB, 16.0 GiB."""
    if n_bytes is None or _missing(n_bytes):
        return NOT_AVAILABLE
    value = float(n_bytes)
    if abs(value) < 1024:
        return f"{value:.0f} B"
    for unit in _BYTE_UNITS[1:]:
        value /= 1024
        if abs(value) < 1024 or unit == _BYTE_UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def rate(per_s: float | None, unit: str = "req/s") -> str:
    """A rate to two decimals without trailing zeros: '35.71 req/s' ('35.71' with unit='')."""
    if per_s is None or _missing(per_s) or math.isinf(per_s):
        return NOT_AVAILABLE
    text = f"{round(per_s, 2):g}"
    return f"{text} {unit}" if unit else text


def input_size(scale: Any = None, tokens: Any = None, output_len: Any = None) -> str:
    """A cell's input in a table cell: '×0.5' (an image scale), '256' (prompt tokens), '256→32' (prompt →
    output tokens)."""
    text = f"×{number(scale)}" if scale is not None else number(tokens)
    return f"{text}→{number(output_len)}" if output_len is not None else text


def load(concurrency: Any = None, rate: Any = None) -> str:
    """A cell's load in a table cell: 'c=8' (closed loop, concurrent requests) or '2/s' (open loop)."""
    return f"{number(rate)}/s" if rate is not None else f"c={number(concurrency)}"


# A cell's label: each field shown when set (the GPU count and repeat index only when not 0), in this order.
_CELL_LABEL_PARTS = (
    ("cpus", "{} CPU"),
    ("memory_gb", "{} GB"),
    ("gpus", "{} GPU"),
    ("input_scale", "scale {}"),
    ("token_len", "{} tokens"),
    ("shared_prefix_tokens", "{} shared"),
    ("output_len", "{} out"),
    ("concurrency", "c={}"),
    ("rate", "{}/s"),
    ("repeat_idx", "rep {}"),
)
_SHOWN_WHEN_NOT_ZERO = ("gpus", "repeat_idx", "shared_prefix_tokens")


def cell_label(cell: Mapping[str, Any]) -> str:
    """One short line naming a cell (a `plan.Cell.as_dict()`): its resource config, input and load, e.g.
    '2 CPU · 4 GB · scale 1 · c=1'."""
    parts = [
        template.format(number(cell[key]))
        for key, template in _CELL_LABEL_PARTS
        if cell.get(key) is not None and (cell[key] or key not in _SHOWN_WHEN_NOT_ZERO)
    ]
    return " · ".join(parts) or NOT_AVAILABLE


# ------------------------------------------------------------------------------------ capacity.csv rows

CAPACITY_HEADERS = (
    "cpus",
    "mem GiB",
    "GPUs",
    "size",
    "max load",
    "SLO",
    "at max load",
    "rps",
    "rps/core",
    "",
)


def capacity_cells(row: Mapping[str, Any]) -> list[str]:
    """One capacity.csv row (a capacity search's answer) as the cells of a table under CAPACITY_HEADERS:
    its resource configuration and input size, the largest load that met the SLO, the SLO percentile there
    with its interval, the throughput, and whether the intervals decided it."""

    def value(key: str) -> Any:
        v = row.get(key)
        return None if v is None or v == "" else v

    def seconds_of(key: str) -> float | None:
        v = value(key)
        try:
            return None if v is None else float(v)
        except (TypeError, ValueError):
            return None

    kind = value("load_kind")
    max_load = value("max_load")
    load = (
        "none"
        if max_load is None
        else (f"{number(max_load)}/s" if kind == "rate" else f"c={number(max_load)}")
    )
    metric, pct, bound = value("slo_metric"), value("slo_percentile"), seconds_of("slo_bound_s")
    slo = f"{metric} p{number(pct)} ≤ {latency(bound)}" if metric and bound is not None else NOT_AVAILABLE
    lo, hi = seconds_of("slo_lo_s"), seconds_of("slo_hi_s")
    interval = f" [{latency(lo) if lo is not None else '?'}, {latency(hi) if hi is not None else '?'}]"
    at = latency(seconds_of("slo_value_s")) + (interval if value("slo_value_s") is not None else "")
    if value("stop_reason") == "no_requests":
        verdict = str(value("reason") or "no requests")
    elif str(value("decided")) in ("1", "True", "true"):
        verdict = "decided"
    else:
        verdict = "within noise"  # a step stopped at the request cap, or a client / host flag
    return [
        number(value("cpu_cores")),
        number(value("mem_cap_gb")),
        number(value("gpus")),
        input_size(value("input_scale"), value("token_len"), value("output_len")),
        load,
        slo,
        at,
        rate(seconds_of("throughput_rps"), unit=""),
        rate(seconds_of("throughput_per_core"), unit=""),
        verdict,
    ]


def cpu_per_request(cpu_ms: Any) -> str:
    """CPU time per request (the target's cgroup, `cpu_ms`): '12.3 ms CPU'; NOT_AVAILABLE when not read."""
    try:
        value = float(cpu_ms)
    except (TypeError, ValueError):
        return NOT_AVAILABLE
    return NOT_AVAILABLE if _missing(value) else f"{latency(value / 1000.0)} CPU"


def tail_line(row: Mapping[str, Any]) -> str:
    """What explains a cell's tail, one line from its cells.csv row: its CPU per request and the verdict
    ('cpu 120.4 ms CPU/request · p99 +48.0 ms over p50: 9 of the 10 slowest …'); '' when neither was
    measured."""
    verdict = str(row.get("tail_verdict") or "").strip()
    cpu = row.get("cpu_ms_mean")
    parts = []
    cpu_text = cpu_per_request(cpu)
    if cpu_text != NOT_AVAILABLE:
        parts.append(f"{cpu_text}/request")
    if verdict and verdict.lower() != "nan":
        parts.append(verdict)
    return " · ".join(parts)
