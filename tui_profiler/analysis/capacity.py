"""The cheapest configuration that serves R requests/s within the SLO, from capacity.csv (`fit --recommend
--rps R`): the answer a capacity search (`run --find-max-load`) measured, not a fitted model's.

Each capacity.csv row says how many requests a second one container of a resource configuration answered at
the largest load that met the session's [slo] (`throughput_rps` at `max_load`). A configuration serves R
requests/s with ceil(R / throughput_rps) such containers (replicas); its cost is that many times its own
(CPU cores × `cost_cpu` + memory GB × `cost_gb` + GPUs × `cost_gpu`, the weights `fit --recommend` uses).
The cheapest total wins; ties go to fewer replicas.

The answer is *decided* when the searches it rests on were: the chosen configuration's, and every
configuration whose own cost is below the chosen total (a cheaper one that a search left undecided might
serve R after all). Otherwise it lies *within the noise* of the measurements, and the summary says which
search stopped at its request cap. Repetitions of a configuration (several rows) count by their smallest
throughput, decided only when all were.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tui_profiler.analysis.recommend import DEFAULT_COST_CPU, DEFAULT_COST_GB, DEFAULT_COST_GPU

CAPACITY_FILE = "capacity.csv"
SIZE_COLUMNS = ("pixels", "token_len", "input_scale")
MARGIN = 0.05  # a rate within 5% of the chosen capacity is named in the summary: little room to spare


def capacity_files(paths: Iterable[str | Path]) -> list[Path]:
    """The capacity.csv files among `paths` (a session folder's, or the file itself)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and (p / CAPACITY_FILE).is_file():
            found.append(p / CAPACITY_FILE)
        elif p.is_file() and p.name == CAPACITY_FILE:
            found.append(p)
    return found


def read_capacity(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Every capacity.csv row of `paths` in one frame (empty when none has one), `source` naming its file."""
    frames = []
    for f in capacity_files(paths):
        df = pd.read_csv(f, dtype={"host_class": "string", "model_name": "string"})
        df["source"] = str(f)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dataclass
class CapacityOption:
    """One resource configuration's answer to "R requests/s within the SLO"."""

    model: str
    gpu_mode: str
    cpu_cores: float | None
    mem_cap_gb: float | None
    gpus: int
    load_kind: str
    max_load: float | None
    throughput_rps: float | None
    decided: bool
    replicas: int | None  # containers of this configuration that serve R (None: none serves any load)
    unit_cost: float | None  # None: a resource was not capped, so its cost is not known
    repetitions: int = 1

    @property
    def cost(self) -> float | None:
        if self.unit_cost is None or self.replicas is None:
            return None
        return self.unit_cost * self.replicas

    def label(self) -> str:
        cpus = f"{self.cpu_cores:g} CPUs" if self.cpu_cores is not None else "CPUs not capped"
        mem = f"{self.mem_cap_gb:g} GB" if self.mem_cap_gb is not None else "memory not capped"
        return f"gpu={self.gpu_mode}, {cpus}, {mem}"

    def describe(self) -> str:
        if self.max_load is None or self.throughput_rps is None or self.replicas is None:
            return f"{self.label()}: no load met the SLO"
        load = f"{self.max_load:g}/s" if self.load_kind == "rate" else f"concurrency {self.max_load:g}"
        cost = f"cost {self.cost:.3g}" if self.cost is not None else "cost not known (not capped)"
        times = f"{self.replicas} × " if self.replicas > 1 else ""
        noise = "" if self.decided else ", within noise"
        return f"{times}{self.label()}: {self.throughput_rps:.3g} req/s each at {load}, {cost}{noise}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "gpu_mode": self.gpu_mode,
            "cpu_cores": self.cpu_cores,
            "mem_cap_gb": self.mem_cap_gb,
            "gpus": self.gpus,
            "load_kind": self.load_kind,
            "max_load": self.max_load,
            "throughput_rps": self.throughput_rps,
            "replicas": self.replicas,
            "unit_cost": self.unit_cost,
            "cost": self.cost,
            "decided": self.decided,
            "repetitions": self.repetitions,
        }


@dataclass
class CapacityRecommendation:
    rps: float
    slo: str  # e.g. "e2e p99 <= 0.5 s"
    size: str  # the input size the rows are for
    best: CapacityOption | None
    options: list[CapacityOption]
    decided: bool
    caveats: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        lines = [f"recommendation for {self.rps:g} req/s within {self.slo} at {self.size} (capacity.csv):"]
        if self.best is None:
            lines.append("  no configuration's capacity search met the SLO at any load")
        else:
            lines.append(f"  cheapest: {self.best.describe()}")
            rest = [o for o in self.options if o is not self.best and o.replicas is not None][:3]
            lines += [f"  next:     {o.describe()}" for o in rest]
            verdict = (
                "decided: the capacity searches it rests on were decided by their intervals"
                if self.decided
                else "within noise: a search it rests on stopped at its request cap undecided"
            )
            lines.append(f"  {verdict}")
        lines += [f"  note: {c}" for c in self.caveats]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "slo": self.slo,
            "size": self.size,
            "best": self.best.as_dict() if self.best else None,
            "options": [o.as_dict() for o in self.options],
            "decided": self.decided,
            "caveats": self.caveats,
        }


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "1.0", "true")


def _select_size(rows: pd.DataFrame, size_column: str | None, size: float | None) -> tuple[pd.DataFrame, str]:
    """The rows of one input size: the one asked, or the only one there is."""
    present = [c for c in SIZE_COLUMNS if c in rows and rows[c].notna().any()]
    if size_column is not None and size is not None:
        if size_column not in present:
            have = ", ".join(present) or "none (one input)"
            raise ValueError(f"{size_column}: capacity.csv has no {size_column} (input sizes: {have})")
        picked = rows[(rows[size_column] - size).abs() <= 1e-9 * max(1.0, abs(size))]
        if picked.empty:
            sizes = ", ".join(f"{v:g}" for v in sorted(rows[size_column].dropna().unique()))
            raise ValueError(f"{size_column}: {size:g} was not searched (capacity.csv has {sizes})")
        return picked, f"{size_column}={size:g}"
    sizes = rows[[c for c in (*SIZE_COLUMNS, "output_len") if c in rows]]
    if len(sizes.drop_duplicates()) > 1:  # NaN equals NaN here: an input without that size
        first = next(iter(present), "input_scale")
        flag = {"pixels": "--pixels", "token_len": "--token-len"}.get(first, "--size")
        raise ValueError(f"{first}: capacity.csv holds several input sizes: choose one with {flag} N")
    shown = next((f"{c}={rows[c].dropna().iloc[0]:g}" for c in present), "its one input")
    return rows, shown


def recommend_capacity(
    rows: pd.DataFrame,
    rps: float,
    *,
    size_column: str | None = None,
    size: float | None = None,
    model: str | None = None,
    host_class: str | None = None,
    cost_cpu: float = DEFAULT_COST_CPU,
    cost_gb: float = DEFAULT_COST_GB,
    cost_gpu: float = DEFAULT_COST_GPU,
) -> CapacityRecommendation:
    """The cheapest configuration (times its replicas) whose measured capacity serves `rps` requests/s."""
    if not rps > 0:
        raise ValueError(f"rps: {rps:g} — must be > 0 requests/s")
    if rows.empty:
        raise ValueError(
            "capacity.csv: none in the paths given (run `tui-profiler run PRESET --find-max-load`)"
        )
    models = sorted(str(m) for m in rows["model_name"].dropna().unique())
    if model is not None:
        rows = rows[rows["model_name"] == model]
        if rows.empty:
            raise ValueError(f"model: {model!r} — capacity.csv has {', '.join(models) or 'no model name'}")
    elif len(models) > 1:
        raise ValueError(
            f"model: capacity.csv holds several models ({', '.join(models)}): choose one with --model"
        )
    if host_class is not None:
        rows = rows[rows["host_class"].fillna("") == host_class]
        if rows.empty:
            raise ValueError(f"host_class: {host_class!r} — no capacity.csv row was measured on it")
    rows, size_text = _select_size(rows, size_column, size)
    slos = {
        (str(r["slo_metric"]), _num(r["slo_percentile"]), _num(r["slo_bound_s"])) for _, r in rows.iterrows()
    }
    if len(slos) > 1:
        listed = "; ".join(f"{m} p{p:g} <= {b:g} s" for m, p, b in sorted(slos, key=str) if p and b)
        raise ValueError(f"slo: capacity.csv rows of different SLOs ({listed}): give the sessions of one")
    metric, pct, bound = next(iter(slos))
    slo_text = f"{metric} p{pct:g} <= {bound:g} s" if pct is not None and bound is not None else "the SLO"

    options: list[CapacityOption] = []
    config = ["gpu_mode", "cpu_cores", "mem_cap_gb", "gpus"]
    for _, group in rows.groupby(config, dropna=False, sort=False):
        first = group.iloc[0]
        throughputs = [_num(v) for v in group["throughput_rps"]]
        loads = [_num(v) for v in group["max_load"]]
        served = None if any(t is None for t in throughputs) else min(t for t in throughputs if t is not None)
        cpus, mem, gpus = _num(first["cpu_cores"]), _num(first["mem_cap_gb"]), int(_num(first["gpus"]) or 0)
        unit = None if cpus is None or mem is None else cpus * cost_cpu + mem * cost_gb + gpus * cost_gpu
        options.append(
            CapacityOption(
                model=str(first.get("model_name", "")),
                gpu_mode=str(first.get("gpu_mode", "off")),
                cpu_cores=cpus,
                mem_cap_gb=mem,
                gpus=gpus,
                load_kind=str(first.get("load_kind", "concurrency")),
                max_load=None if any(v is None for v in loads) else min(v for v in loads if v is not None),
                throughput_rps=served,
                decided=all(_flag(v) for v in group["decided"]),
                replicas=math.ceil(rps / served - 1e-9) if served else None,
                unit_cost=unit,
                repetitions=len(group),
            )
        )
    options.sort(key=lambda o: (o.cost is None, o.cost or 0.0, o.replicas or 0, -(o.throughput_rps or 0)))
    serving = [o for o in options if o.replicas is not None]
    caveats: list[str] = []
    best = next((o for o in serving if o.cost is not None), serving[0] if serving else None)
    if best is not None and best.cost is None:
        caveats.append("the configurations were not capped (e.g. a --url run): their cost is not known")
    decided = best is not None and best.decided
    if best is not None and best.cost is not None:
        cheaper = [
            o for o in options if o is not best and o.unit_cost is not None and o.unit_cost < best.cost
        ]
        undecided = [o for o in cheaper if not o.decided]
        decided = decided and not undecided
        caveats += [f"{o.label()}: its search was not decided; it might serve more" for o in undecided]
    if best is not None and best.throughput_rps is not None and best.replicas is not None:
        room = best.throughput_rps * best.replicas / rps - 1
        if room < MARGIN:
            caveats.append(
                f"{rps:g} req/s is within {MARGIN:.0%} of what the choice served ({room:.1%} to spare)"
            )
    if any(o.repetitions > 1 for o in options):
        caveats.append("repetitions: each configuration counts by its smallest throughput")
    return CapacityRecommendation(rps, slo_text, size_text, best, options, decided, caveats)
