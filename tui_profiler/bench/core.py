"""What every benchmark shares: one measured row (`Measure`), the machine it ran on, and the report files.

A benchmark returns `Measure` rows. Each holds the MEDIAN of `runs` repeated runs (min and max beside it),
and, where a target asks for one, a RATIO to a baseline measured in the same run (interleaved with it, so
a busy machine slows both alike) and the target that ratio is judged against. `met` is None when there is
no target, or when the value could not be measured (never a pass by default).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tui_profiler.cgroups import affinity_cores
from tui_profiler.stats import quantile

BENCHES = ("client", "payload", "sampler", "tui", "sweep", "stream", "stop")


@dataclass(slots=True)
class Measure:
    bench: str  # client | payload | sampler | tui | sweep | stream | stop
    measure: str  # what is measured, e.g. "requests/s c=1"
    subject: str  # who, e.g. "ours (run --url)"
    value: float | None  # the median of the runs; None = could not be measured
    unit: str
    ratio: float | None = None  # value relative to `baseline` (same run)
    baseline: str = ""  # what the ratio is taken against
    target: str = ""  # what the value or ratio must reach, in words
    met: bool | None = None
    runs: int = 1
    min: float | None = None
    max: float | None = None
    note: str = ""

    def row(self) -> dict[str, Any]:
        return asdict(self)


CSV_COLUMNS = [f.name for f in fields(Measure)] + ["machine", "load_avg_start", "versions"]


def median(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return quantile(vals, 0.5)


def spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return (min(vals), max(vals)) if vals else (None, None)


def measured(
    bench: str, measure: str, subject: str, values: Sequence[float | None], unit: str, **kw: Any
) -> Measure:
    """A Measure holding the median (and range) of repeated runs."""
    lo, hi = spread(values)
    return Measure(bench, measure, subject, median(values), unit, runs=len(values), min=lo, max=hi, **kw)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or not math.isfinite(a) or not math.isfinite(b):
        return None
    return a / b


def judge(value: float | None, *, at_most: float | None = None, at_least: float | None = None) -> bool | None:
    if value is None or not math.isfinite(value):
        return None
    if at_most is not None and value > at_most:
        return False
    if at_least is not None and value < at_least:
        return False
    return True


# ------------------------------------------------------------------------------------------ the machine


def _tool_version(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else None


def _deb_version(package: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine_facts() -> dict[str, Any]:
    """CPU model, cores, kernel, load average and the versions of what the benchmarks run."""
    from tui_profiler import __version__
    from tui_profiler.host import cpu_model, package_version

    versions = {
        "tui-profiler": __version__,
        "python": platform.python_version(),
        **{
            p: package_version(p)
            for p in ("aiohttp", "uvloop", "requests", "numpy", "torch", "torchvision", "textual", "docker")
        },
        "wrk": _deb_version("wrk") or _tool_version(["wrk", "-v"]),
        "hey": _deb_version("hey"),
        "nginx": _deb_version("nginx-light") or _deb_version("nginx") or _tool_version(["nginx", "-v"]),
    }
    return {
        "cpu_model": cpu_model() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": len(affinity_cores()),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def machine_line(m: dict[str, Any]) -> str:
    return f"{m['cpu_model']}, {m['cores']} cores, Linux {m['kernel']}"


def versions_line(m: dict[str, Any]) -> str:
    return "; ".join(f"{k} {v}" for k, v in m["versions"].items() if v)


# ------------------------------------------------------------------------------------------ the report


@dataclass(slots=True)
class BenchReport:
    benches: list[str]
    quick: bool
    machine: dict[str, Any] = field(default_factory=machine_facts)
    measures: list[Measure] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # per bench: how it was measured
    errors: dict[str, str] = field(default_factory=dict)  # per bench: why it could not run
    started: float = field(default_factory=time.time)
    wall_s: float = 0.0
    load_avg_end: list[float] = field(default_factory=list)
    command: str = ""

    def note(self, bench: str, text: str) -> None:
        self.notes.setdefault(bench, []).append(text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "benches": self.benches,
            "quick": self.quick,
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.started)),
            "wall_s": round(self.wall_s, 1),
            "machine": self.machine,
            "load_avg_end": self.load_avg_end,
            "notes": self.notes,
            "errors": self.errors,
            "measures": [m.row() for m in self.measures],
        }

    # -- files
    def write_csv(self, path: Path) -> None:
        m = self.machine
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            w.writeheader()
            for row in self.measures:
                d = {k: ("" if v is None else v) for k, v in row.row().items()}
                if isinstance(row.met, bool):
                    d["met"] = "yes" if row.met else "no"
                d.update(
                    machine=machine_line(m),
                    load_avg_start=" ".join(map(str, m["load_avg"])),
                    versions=versions_line(m),
                )
                w.writerow(d)

    def markdown(self) -> str:
        m = self.machine
        lines = [
            f"**Machine**: {machine_line(m)} (usable {m['usable_cores']}); load average at start "
            f"{' / '.join(map(str, m['load_avg']))}, at end {' / '.join(map(str, self.load_avg_end)) or '?'} "
            "(1/5/15 min).  ",
            f"**Versions**: {versions_line(m)}.  ",
            f"**Run**: `{self.command}` — {'quick' if self.quick else 'full'}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(self.started))}, {self.wall_s:.0f} s. "
            "Values are medians of the runs counted in `runs` (range in brackets); ratios are taken "
            "within the same run; targets are judged on the medians.",
            "",
        ]
        for bench in self.benches:
            rows = [r for r in self.measures if r.bench == bench]
            lines.append(f"#### {bench}")
            lines.append("")
            if bench in self.errors:
                lines.append(f"Not measured: {self.errors[bench]}")
                lines.append("")
            if rows:
                lines.append("| measure | subject | median | runs [min–max] | ratio | vs | target | met |")
                lines.append("|---|---|---:|---|---:|---|---|---|")
                for r in rows:
                    rng = f"{r.runs}" + (
                        f" [{_fmt(r.min)}–{_fmt(r.max)}]" if r.runs > 1 and r.min is not None else ""
                    )
                    met = "" if r.met is None else ("**yes**" if r.met else "**NO**")
                    if r.target and r.met is None:
                        met = "n/a"
                    value = f"{_fmt(r.value)} {r.unit}" if r.value is not None else "—"
                    lines.append(
                        f"| {r.measure} | {r.subject} | {value} | {rng} | "
                        f"{_fmt(r.ratio, ratio=True)} | {r.baseline} | {r.target} | {met} |"
                    )
                lines.append("")
            for n in self.notes.get(bench, []):
                lines.append(f"- {n}")
            if self.notes.get(bench):
                lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def write(self, out_dir: Path, json_path: Path | None = None) -> dict[str, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "markdown": out_dir / "bench.md",
            "csv": out_dir / "bench.csv",
            "json": out_dir / "bench.json",
        }
        paths["markdown"].write_text(self.markdown(), encoding="utf-8")
        self.write_csv(paths["csv"])
        doc = json.dumps(self.as_dict(), indent=2, default=str)
        paths["json"].write_text(doc, encoding="utf-8")
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(doc, encoding="utf-8")
            paths["json_out"] = json_path
        return paths


def _fmt(v: float | None, ratio: bool = False) -> str:
    if v is None:
        return "—"
    if ratio:
        return f"{v:.2f}×" if abs(v) < 100 else f"{v:.0f}×"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"
