"""The cheapest resource configuration predicted to meet a latency SLO at a given input size.

Candidates per fitted group (GPU mode): CPU counts in 0.5 steps from 0.5 up to max(host CPUs, the largest
CPU count measured); memory per CPU count follows the data's pairing (AC-Prof pairs 2 GB per CPU) or,
where memory was varied independently, the smallest memory that ran cleanly — the fitted models have no
memory term, so memory buys nothing but not running out. Candidates outside the measured CPU range are
extrapolations: listed, but only recommended when `allow_extrapolation` is set.

`recommend_slos` asks several SLOs at once (p99 latency, p99 time to first token, p99 time per output
token, each from its own fitted model and input size): a candidate must meet every one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tui_profiler.analysis.fit import (
    HOST_CLASS,
    P99_TARGETS,
    FitReport,
    GroupFit,
    Selection,
    excluded_line,
    fit_frame,
    host_class_rows,
    predict_point,
    recommendation_query,
)
from tui_profiler.analysis.importers import fit_rows, read_paths
from tui_profiler.host import host_limits

DEFAULT_COST_CPU = 1.0
DEFAULT_COST_GB = 0.125  # roughly cloud list prices: 8 GB of memory cost about what one vCPU costs
DEFAULT_COST_GPU = 20.0


@dataclass
class Candidate:
    gpu_mode: str
    cpu_cores: float
    mem_cap_gb: float | None
    predicted_s: float
    cost: float
    meets_slo: bool
    extrapolated: bool
    warning: str = ""
    # the prediction widened by the measurement noise of the fitted cells (`GroupFit.noise`); None: a side
    # the cells' intervals do not bound
    lo_s: float | None = None
    hi_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpu_mode": self.gpu_mode,
            "cpu_cores": self.cpu_cores,
            "mem_cap_gb": self.mem_cap_gb,
            "predicted_s": self.predicted_s,
            "lo_s": self.lo_s,
            "hi_s": self.hi_s,
            "cost": self.cost,
            "meets_slo": self.meets_slo,
            "extrapolated": self.extrapolated,
            "warning": self.warning,
        }


@dataclass
class Recommendation:
    slo_s: float
    target: str  # the fitted quantity compared to the SLO: "p99" or, without per-request rows, "latency_s"
    size_column: str
    size: float
    best: Candidate | None
    candidates: list[Candidate]
    caveats: list[str] = field(default_factory=list)
    selections: dict[str, Selection] = field(default_factory=dict)  # group label -> how its form was chosen
    decision: Decision | None = None  # whether the measurements decide the choice (None: no choice)
    excluded_cells: int = 0  # cells left out of the fit, flagged saturated
    # cores one request/s takes at the chosen configuration: its measured CPU-seconds per request (None: the
    # target's CPU per request was not measured, or nothing was chosen)
    cores_per_rps: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "slo_s": self.slo_s,
            "cores_per_rps": self.cores_per_rps,
            "target": self.target,
            self.size_column: self.size,
            "best": self.best.as_dict() if self.best else None,
            **Decision.fields(self.decision),
            "excluded_cells": self.excluded_cells,
            "candidates": [c.as_dict() for c in self.candidates],
            "caveats": self.caveats,
            "form_selection": {label: s.to_dict() for label, s in self.selections.items()},
        }

    def summary_lines(self) -> list[str]:
        what = "p99" if self.target == "p99" else "mean latency (no per-request rows for a p99 fit)"
        lines = [f"recommendation for {what} <= {self.slo_s:g} s at {self.size_column}={self.size:g}:"]
        if self.best is None:
            fastest = min(self.candidates, key=lambda c: c.predicted_s, default=None)
            lines.append("  no candidate configuration is predicted to meet the SLO")
            if fastest is not None:
                lines.append(f"  fastest: {_describe(fastest)}")
        else:
            lines.append(f"  cheapest: {_describe(self.best)}")
            allowed = self.best.extrapolated  # extrapolated runners-up only when the best is one already
            runners = [
                c
                for c in self.candidates
                if c.meets_slo and c is not self.best and (allowed or not c.extrapolated)
            ][:3]
            for c in runners:
                lines.append(f"  next:     {_describe(c)}")
        if self.decision is not None:
            lines.append(f"  {self.decision.line}")
        if self.cores_per_rps is not None:
            lines.append(
                f"  CPU: {self.cores_per_rps:.3g} cores per request/s there (measured CPU time per request)"
            )
        lines += [f"  {label}: {s.line}" for label, s in self.selections.items()]
        lines += [f"  note: {c}" for c in self.caveats]
        return lines


@dataclass(frozen=True)
class Decision:
    """Whether the measurements decide a recommendation: the chosen configuration's interval clears every
    SLO (its upper bound within it) and the next cheaper candidate's interval fails one (its lower bound
    beyond it). Otherwise the choice lies within the measurements' noise: more requests per cell could
    change it. A candidate's interval is its prediction widened by the measurement noise of the cells it
    was fitted on (the median relative distance of their statistic to each bound of its 95% interval);
    a side no cell bounds is not available and cannot decide."""

    decided: bool
    reason: str

    @property
    def line(self) -> str:
        verdict = "decided by the measurements" if self.decided else "within the measurements' noise"
        return f"{verdict}: {self.reason}"

    @staticmethod
    def fields(decision: Decision | None) -> dict[str, Any]:
        """The JSON fields: decided (true, false, or null without a choice) and its reason."""
        if decision is None:
            return {"decided": None, "decided_reason": ""}
        return {"decided": decision.decided, "decided_reason": decision.reason}


def _seconds(v: float | None) -> str:
    return f"{v:.4g} s" if v is not None else "not bounded"


def judge(
    chosen: str,
    chosen_hi: dict[str, float | None],
    cheaper: str | None,
    cheaper_lo: dict[str, float | None],
    slos: dict[str, float],
) -> Decision:
    """The `Decision` for a choice: `chosen_hi` / `cheaper_lo`: per SLO name, the chosen configuration's
    upper bound and the next cheaper one's lower bound (None: not bounded); `cheaper` None when no cheaper
    configuration is a candidate."""
    problems = []
    for name, slo in slos.items():
        hi = chosen_hi.get(name)
        if hi is None:
            problems.append(f"the {name} interval of {chosen} has no upper bound")
        elif hi > slo:
            problems.append(f"the {name} upper bound of {chosen}, {_seconds(hi)}, exceeds the SLO {slo:g} s")
    fails = []
    if cheaper is not None:
        fails = [
            f"{name} lower bound {_seconds(lo)} > {slos[name]:g} s"
            for name, lo in cheaper_lo.items()
            if lo is not None and lo > slos[name]
        ]
        if not fails:
            lows = ", ".join(f"{name} lower bound {_seconds(cheaper_lo.get(name))}" for name in slos)
            problems.append(f"the next cheaper, {cheaper}, may meet it too ({lows})")
    if problems:
        return Decision(False, "; ".join(problems))
    clears = ", ".join(f"{name} upper bound {_seconds(chosen_hi[name])}" for name in slos)
    below = (
        f"and the next cheaper, {cheaper}, fails it ({'; '.join(fails)})"
        if cheaper is not None
        else "and no cheaper configuration is a candidate"
    )
    return Decision(True, f"{chosen} clears the SLO ({clears}) {below}")


def _next_cheaper(pool: list[Any], best: Any) -> Any | None:
    """The most expensive candidate of `pool` that costs less than `best` (None when none does)."""
    cheaper = [c for c in pool if c.cost < best.cost - 1e-12]
    return max(cheaper, key=lambda c: c.cost) if cheaper else None


def _short(c: Candidate | SloCandidate) -> str:
    load = f", {c.load}" if isinstance(c, SloCandidate) and c.load else ""
    return f"{c.cpu_cores:g} CPUs (gpu={c.gpu_mode}{load})"


def _widened(g: GroupFit, value: float) -> tuple[float | None, float | None]:
    """A prediction's interval: widened by the group's measurement noise on each side it bounds."""
    below, above = g.noise.get("rel_below"), g.noise.get("rel_above")
    return (
        value * (1 - below) if below is not None else None,
        value * (1 + above) if above is not None else None,
    )


def _describe(c: Candidate) -> str:
    mem = f"{c.mem_cap_gb:g} GB" if c.mem_cap_gb is not None else "memory not recorded"
    ext = " (extrapolated)" if c.extrapolated else ""
    return f"gpu={c.gpu_mode}, {c.cpu_cores:g} CPUs, {mem}: predicted {c.predicted_s:.4g} s, cost {c.cost:.3g}{ext}"


def _memory_for(rows: pd.DataFrame, cpus: float) -> float | None:
    """Memory for a CPU count: the data's fixed GB-per-CPU pairing if it has one, else the smallest that ran."""
    mem = rows["mem_cap_gb"].to_numpy(float)
    cpu = rows["cpu_cores"].to_numpy(float)
    ok = np.isfinite(mem) & (cpu > 0)
    if not ok.any():
        return None
    ratios = np.unique(np.round(mem[ok] / cpu[ok], 6))
    if len(ratios) == 1:
        return float(ratios[0] * cpus)
    return float(mem[ok].min())


def recommend(
    report: FitReport,
    rows: pd.DataFrame,
    *,
    slo_s: float,
    size: float,
    size_column: str | None = None,
    model: str | None = None,
    host_class: str | None = None,
    cost_cpu: float = DEFAULT_COST_CPU,
    cost_gb: float = DEFAULT_COST_GB,
    cost_gpu: float = DEFAULT_COST_GPU,
    host_cpus: float | None = None,
    allow_extrapolation: bool = False,
) -> Recommendation:
    """Rank configurations by cost among those the report's model predicts to meet `slo_s`."""
    if not slo_s > 0:
        raise ValueError(f"slo-p99: {slo_s:g} — must be > 0 seconds")
    groups = _model_groups(report, model, host_class)
    models = [str(groups[0].key["model"])]
    fitted_size = groups[0].size_column
    if size_column and fitted_size and size_column != fitted_size:
        flag = fitted_size.replace("_", "-")
        raise ValueError(
            f"{size_column}: the {models[0]} model is a function of {fitted_size}; give --{flag}"
        )
    host = float(host_cpus or host_limits().cpus or 1)
    caveats: list[str] = []
    size_column = groups[0].size_column or "size"
    candidates: list[Candidate] = []
    for g in groups:
        candidates += _group_candidates(g, rows, slo_s, size, host, cost_cpu, cost_gb, cost_gpu)
    candidates.sort(key=lambda c: (c.cost, c.predicted_s))
    pool = [c for c in candidates if allow_extrapolation or not c.extrapolated]
    eligible = [c for c in pool if c.meets_slo]
    best = eligible[0] if eligible else None
    decision = None
    if best is not None:
        cheaper = _next_cheaper(pool, best)
        what = "p99" if report.target == "p99" else "mean"
        decision = judge(
            _short(best),
            {what: best.hi_s},
            _short(cheaper) if cheaper else None,
            {what: cheaper.lo_s} if cheaper else {},
            {what: slo_s},
        )
    if report.excluded:
        caveats.append(excluded_line(report.excluded))
    if report.target != "p99":
        caveats.append(
            "no per-request rows: the SLO is compared with the predicted MEAN latency, which understates p99"
        )
    caveats += sorted({c for g in groups for c in g.caveats if c.startswith("p99 from")})
    if best is not None and best.warning:
        caveats.append(f"the recommended point lies outside the measured range: {best.warning}")
    selections = {g.label: g.selection for g in groups}
    return Recommendation(
        slo_s,
        report.target,
        size_column,
        size,
        best,
        candidates,
        caveats,
        selections,
        decision,
        len(report.excluded),
        cores_per_rps(rows, best, size_column, size) if best is not None else None,
    )


def cores_per_rps(
    rows: pd.DataFrame, best: Candidate | SloCandidate, size_column: str, size: float
) -> float | None:
    """The cores one request/s takes at configuration `best`: its measured CPU-seconds per request
    (requests.csv `cpu_ms`, else cells.csv `cpu_ms_mean`), the median over its rows at the measured input
    size nearest `size`. None where the CPU per request was not measured there."""
    if size_column not in rows or "cpu_cores" not in rows:
        return None
    cpu = pd.Series(np.nan, index=rows.index)
    for column in ("cpu_ms_mean", "cpu_ms"):  # a request's own, where it has one
        if column in rows:
            cpu = pd.to_numeric(rows[column], errors="coerce").where(lambda v: v.notna(), cpu)
    sizes = pd.to_numeric(rows[size_column], errors="coerce")
    same = (pd.to_numeric(rows["cpu_cores"], errors="coerce") == best.cpu_cores) & cpu.notna() & sizes.notna()
    if "gpu_mode" in rows:
        same &= rows["gpu_mode"].astype(str) == best.gpu_mode
    if not same.any():
        return None
    distance = (sizes[same] - size).abs()
    at = cpu[same][distance == distance.min()]
    return float(at.median()) / 1000.0


def _model_groups(report: FitReport, model: str | None, host_class: str | None = None) -> list[GroupFit]:
    """The fitted groups of one model on one host class: the ones named, or the only ones fitted."""
    groups = [g for g in report.groups if model is None or str(g.key["model"]) == model]
    if not groups:
        raise ValueError(
            f"model: {model!r} — fitted models: {', '.join(sorted({str(g.key['model']) for g in report.groups}))}"
        )
    models = sorted({str(g.key["model"]) for g in groups})
    if len(models) > 1:
        raise ValueError(f"model: several models fitted ({', '.join(models)}): choose one with --model")
    classes = sorted({str(g.key.get(HOST_CLASS, "")) for g in groups})
    if host_class:
        groups = [g for g in groups if g.key.get(HOST_CLASS) == host_class]
        if not groups:
            fitted = ", ".join(c for c in classes if c) or "none: the data has no labels, or --pool-hosts"
            raise ValueError(f"host_class: {host_class!r} — fitted host classes: {fitted}")
    elif len(classes) > 1:
        raise ValueError(
            f"host_class: several host classes fitted ({', '.join(classes)}): choose one with --host-class "
            "(or fit them as one with --pool-hosts)"
        )
    return groups


def _group_candidates(
    g: GroupFit,
    rows: pd.DataFrame,
    slo_s: float,
    size: float,
    host: float,
    cost_cpu: float,
    cost_gb: float,
    cost_gpu: float,
) -> list[Candidate]:
    cpu_lo, cpu_hi = g.ranges["cpu_cores"]
    top = max(host, cpu_hi)
    cpus_grid = np.arange(0.5, top + 1e-9, 0.5)
    mine = rows[(rows["model"] == g.key["model"]) & (rows["gpu_mode"] == g.key["gpu_mode"])]
    if g.key.get(HOST_CLASS):  # memory pairing as measured on that host class
        mine = mine[host_class_rows(mine)[HOST_CLASS] == g.key[HOST_CLASS]]
    out = []
    for cpus in cpus_grid:
        mem = _memory_for(mine, float(cpus))
        point = {"cpu_cores": float(cpus), "gpu_mode": g.key["gpu_mode"], "mem_cap_gb": mem}
        if g.size_column:
            point[g.size_column] = size
        value, warning = predict_point(g, point)
        lo, hi = _widened(g, value)
        gpus = 1.0 if g.key["gpu_mode"] == "on" else 0.0
        cost = cpus * cost_cpu + (mem or 0.0) * cost_gb + gpus * cost_gpu
        out.append(
            Candidate(
                g.key["gpu_mode"],
                float(cpus),
                mem,
                value,
                float(cost),
                value <= slo_s,
                extrapolated=bool(cpus < cpu_lo - 1e-9 or cpus > cpu_hi + 1e-9),
                warning=warning,
                lo_s=lo,
                hi_s=hi,
            )
        )
    return out


def recommend_paths(paths: list[str], *, slo_s: float, size: float, **kwargs: Any) -> Recommendation:
    """Fit p99 when the data has per-request rows (else the mean, with a caveat) and recommend."""
    tidy = read_paths(paths)
    rows = fit_rows(tidy)
    has_requests = bool((rows["row_kind"] == "request").any())
    has_p99 = has_requests or bool(rows["p99_s"].notna().any())
    target = "p99" if has_p99 else "latency_s"
    query = recommendation_query(
        size, kwargs.get("size_column"), kwargs.get("model"), kwargs.get("host_class")
    )
    report = fit_frame(
        tidy,
        target=target,
        split=kwargs.pop("split", None),
        sources=paths,
        queries=[query],
        pool_hosts=kwargs.pop("pool_hosts", False),
    )
    if not math.isfinite(size) or size <= 0:
        raise ValueError(f"{report.groups[0].size_column or 'size'}: {size:g} — must be > 0")
    return recommend(report, rows, slo_s=slo_s, size=size, **kwargs)


# ------------------------------------------------------------------------------- several SLOs at once

SLO_NAMES = {
    "p99": "p99 latency",
    "latency_s": "mean latency",
    "ttft_p99": "p99 TTFT",
    "tpot_p99": "p99 TPOT",
}


@dataclass(frozen=True)
class Objective:
    """One SLO: the fitted report it is judged by, its limit, and the input size it is asked at (in the
    report's size column: pixels or token_len, prompt tokens for TTFT, context tokens for TPOT)."""

    report: FitReport
    slo_s: float
    size: float

    @property
    def name(self) -> str:
        return SLO_NAMES.get(self.report.target, self.report.target)


@dataclass
class SloCandidate:
    gpu_mode: str
    load: str  # the group's load level ('c=4', '2/s'), '' when the data has one
    cpu_cores: float
    mem_cap_gb: float | None
    cost: float
    predicted_s: dict[str, float]  # objective name -> predicted seconds
    meets: dict[str, bool]
    extrapolated: bool
    warning: str = ""
    lo_s: dict[str, float | None] = field(default_factory=dict)  # objective name -> interval (`_widened`)
    hi_s: dict[str, float | None] = field(default_factory=dict)

    @property
    def meets_slo(self) -> bool:
        return all(self.meets.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpu_mode": self.gpu_mode,
            "load": self.load,
            "cpu_cores": self.cpu_cores,
            "mem_cap_gb": self.mem_cap_gb,
            "cost": self.cost,
            "predicted_s": self.predicted_s,
            "lo_s": self.lo_s,
            "hi_s": self.hi_s,
            "meets": self.meets,
            "meets_slo": self.meets_slo,
            "extrapolated": self.extrapolated,
            "warning": self.warning,
        }


@dataclass
class SloRecommendation:
    objectives: list[dict[str, Any]]  # name, slo_s, size_column, size
    best: SloCandidate | None
    candidates: list[SloCandidate]
    caveats: list[str] = field(default_factory=list)
    selections: dict[str, Selection] = field(default_factory=dict)  # 'objective: group' -> selection
    decision: Decision | None = None
    excluded_cells: int = 0
    cores_per_rps: float | None = None  # as Recommendation's, at the first objective's input size

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectives": self.objectives,
            "cores_per_rps": self.cores_per_rps,
            "best": self.best.as_dict() if self.best else None,
            **Decision.fields(self.decision),
            "excluded_cells": self.excluded_cells,
            "candidates": [c.as_dict() for c in self.candidates],
            "caveats": self.caveats,
            "form_selection": {label: s.to_dict() for label, s in self.selections.items()},
        }

    def summary_lines(self) -> list[str]:
        asked = ", ".join(
            f"{o['name']} <= {o['slo_s']:g} s at {o['size_column']}={o['size']:g}" for o in self.objectives
        )
        lines = [f"recommendation for {asked}:"]
        if self.best is None:
            lines.append("  no candidate configuration is predicted to meet every SLO")
            closest = max(self.candidates, key=lambda c: (sum(c.meets.values()), -c.cost), default=None)
            if closest is not None:
                lines.append(f"  closest: {_describe_slo(closest)}")
        else:
            lines.append(f"  cheapest: {_describe_slo(self.best)}")
            allowed = self.best.extrapolated
            runners = [
                c
                for c in self.candidates
                if c.meets_slo and c is not self.best and (allowed or not c.extrapolated)
            ][:3]
            lines += [f"  next:     {_describe_slo(c)}" for c in runners]
        if self.decision is not None:
            lines.append(f"  {self.decision.line}")
        if self.cores_per_rps is not None:
            lines.append(
                f"  CPU: {self.cores_per_rps:.3g} cores per request/s there (measured CPU time per request)"
            )
        lines += [f"  {label}: {s.line}" for label, s in self.selections.items()]
        lines += [f"  note: {c}" for c in self.caveats]
        return lines


def _describe_slo(c: SloCandidate) -> str:
    mem = f"{c.mem_cap_gb:g} GB" if c.mem_cap_gb is not None else "memory not recorded"
    load = f", {c.load}" if c.load else ""
    ext = " (extrapolated)" if c.extrapolated else ""
    predicted = ", ".join(
        f"{name} {value:.4g} s{'' if c.meets[name] else ' (misses)'}" for name, value in c.predicted_s.items()
    )
    return (
        f"gpu={c.gpu_mode}{load}, {c.cpu_cores:g} CPUs, {mem}: predicted {predicted}, cost {c.cost:.3g}{ext}"
    )


def _load_label(g: GroupFit) -> str:
    if g.key.get("rate") is not None:
        return f"{g.key['rate']:g}/s"
    if g.key.get("concurrency") is not None:
        return f"c={g.key['concurrency']:g}"
    return ""


def recommend_slos(
    objectives: list[Objective],
    rows: pd.DataFrame,
    *,
    model: str | None = None,
    host_class: str | None = None,
    cost_cpu: float = DEFAULT_COST_CPU,
    cost_gb: float = DEFAULT_COST_GB,
    cost_gpu: float = DEFAULT_COST_GPU,
    host_cpus: float | None = None,
    allow_extrapolation: bool = False,
) -> SloRecommendation:
    """The cheapest configuration (GPU mode, load level, CPUs, memory) predicted to meet every SLO.

    Each objective's model predicts on the same candidate grid; a candidate is kept when every objective
    has a fitted group for its GPU mode and load level."""
    if not objectives:
        raise ValueError("slo: no SLO given")
    host = float(host_cpus or host_limits().cpus or 1)
    joined: dict[tuple[str, str, float], SloCandidate] = {}
    counts: dict[tuple[str, str, float], int] = {}
    caveats: list[str] = []
    selections: dict[str, Selection] = {}
    for o in objectives:
        if not o.slo_s > 0:
            raise ValueError(f"slo: {o.name} {o.slo_s:g} — must be > 0 seconds")
        if not math.isfinite(o.size) or o.size <= 0:
            raise ValueError(f"{o.report.groups[0].size_column or 'size'}: {o.size:g} — must be > 0")
        groups = _model_groups(o.report, model, host_class)
        for g in groups:
            selections[f"{o.name}: {g.label}"] = g.selection
            load = _load_label(g)
            for c in _group_candidates(g, rows, o.slo_s, o.size, host, cost_cpu, cost_gb, cost_gpu):
                key = (c.gpu_mode, load, c.cpu_cores)
                have = joined.get(key)
                if have is None:
                    have = joined[key] = SloCandidate(
                        c.gpu_mode, load, c.cpu_cores, c.mem_cap_gb, c.cost, {}, {}, c.extrapolated, c.warning
                    )
                have.predicted_s[o.name] = c.predicted_s
                have.meets[o.name] = c.meets_slo
                have.lo_s[o.name] = c.lo_s
                have.hi_s[o.name] = c.hi_s
                have.extrapolated = have.extrapolated or c.extrapolated
                have.warning = "; ".join(dict.fromkeys(w for w in (have.warning, c.warning) if w))
                counts[key] = counts.get(key, 0) + 1
        if o.report.target not in P99_TARGETS:
            caveats.append(f"{o.name}: no p99 in the data, the SLO is compared with the predicted mean")
        caveats += sorted({f"{o.name}: {c}" for g in groups for c in g.caveats if c.startswith("p99 from")})
    # a load level or GPU mode that one objective's data lacks cannot be judged against every SLO
    candidates = [c for key, c in joined.items() if counts[key] == len(objectives)]
    candidates.sort(key=lambda c: (c.cost, sum(c.predicted_s.values())))
    pool = [c for c in candidates if allow_extrapolation or not c.extrapolated]
    eligible = [c for c in pool if c.meets_slo]
    best = eligible[0] if eligible else None
    decision = None
    if best is not None:
        cheaper = _next_cheaper(pool, best)
        decision = judge(
            _short(best),
            best.hi_s,
            _short(cheaper) if cheaper else None,
            cheaper.lo_s if cheaper else {},
            {o.name: o.slo_s for o in objectives},
        )
    if best is not None and best.warning:
        caveats.append(f"the recommended point lies outside the measured range: {best.warning}")
    excluded = {(e["source"], e["cell_index"]): e for o in objectives for e in o.report.excluded}
    if excluded:
        caveats.append(excluded_line(list(excluded.values())))
    asked = [
        {
            "name": o.name,
            "target": o.report.target,
            "slo_s": o.slo_s,
            "size_column": o.report.groups[0].size_column or "size",
            "size": o.size,
        }
        for o in objectives
    ]
    cores = None
    if best is not None and objectives:
        first = objectives[0]
        cores = cores_per_rps(rows, best, first.report.groups[0].size_column or "size", first.size)
    return SloRecommendation(asked, best, candidates, caveats, selections, decision, len(excluded), cores)
