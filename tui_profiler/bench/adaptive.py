"""`tui-profiler bench adaptive --grid FILE`: the adaptive plan replayed against a grid measured in full.

A cell is "measured" by reading it from the grid (a session folder or its cells.csv, an AC-Prof wide or long
file; `analysis.importers` reads them all, `analysis.fit.build_cells` makes one value per resource
configuration × input size: the mean latency, as `fit`'s default target). The largest group of the file
(model × task × GPU mode …) is the grid.

- `model`: after each cell, the model's median absolute % error over every cell of the grid (the truth),
  beside its own estimate (held-out) — for the adaptive order and for a random order (the median over
  `RANDOM_SEEDS` seeds), up to `max_fraction` of the grid.
- `slo`: for every input size of the grid and a range of bounds at that size (the geometric midpoints
  between the configurations' sorted latencies there, and one above them all, so every case has an
  answer), the plan runs until it decides or spends `budget_fraction` of the grid; `found` is 1 when the
  configuration it answers truly meets the bound and costs at most 5% more than the true cheapest. The
  baseline measures random configurations at that size, as many as the budget.
- `--replay-hosts 1,2,4` (goal `model`): the plan on a fleet of that many hosts (`replay_fleet`), in time
  units of one cell (a container start costs `DEFAULT_START_RATIO` cells): a free host takes the group
  `Planner.choose_group` hands it, from the results in by then. Batching buys wall time with cells: the
  table says how many cells, and how much time, each fleet size needs to bring the true error within the
  target, and where the plan would stop.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tui_profiler.analysis.adaptive import (
    DEFAULT_START_RATIO,
    STOP_REASONS,
    TARGET_STREAK,
    GridPoint,
    Planner,
    config_cost,
    median_abs_pct_error,
)

RANDOM_SEEDS = (0, 1, 2, 3, 4)
FOUND_COST_SLACK = 1.05  # "found": the answer costs at most 5% more than the true cheapest
MODEL_TARGET = (10.0, 0.15)  # median abs error <= 10% after <= 15% of the cells
SLO_TARGET = (0.90, 0.10)  # found in >= 90% of cases with <= 10% of the cells
MODEL_COLUMNS = (
    "strategy",
    "cells_measured",
    "fraction_measured",
    "median_abs_pct_error",
    "estimated_error_pct",
    "hosts",
    "wall_cells",
)
SLO_COLUMNS = ("strategy", "slo_size", "slo_s", "cells_measured", "fraction_measured", "found", "cost_ratio")


@dataclass(frozen=True, slots=True)
class Grid:
    label: str
    points: list[GridPoint]
    truth: dict[int, float]


def load_grid(path: str | Path, *, cost_per_gb: float = 0.25) -> Grid:
    """The largest fully valued group of `path` as a grid of points with their true values."""
    from tui_profiler.analysis.fit import GROUP_KEYS, build_cells
    from tui_profiler.analysis.importers import fit_rows, read_paths

    cells, _ = build_cells(fit_rows(read_paths([path])), "latency_s")
    cells = cells[np.isfinite(cells["y"].astype(float)) & (cells["y"].astype(float) > 0)]
    if cells.empty:
        raise ValueError(f"{path}: no latency values to replay")
    keys = [k for k in GROUP_KEYS if k in cells]
    groups = cells.groupby(keys, sort=False, dropna=False)
    key, group = max(groups, key=lambda kv: len(kv[1]))
    configs: dict[tuple[float, float | None], int] = {}
    points: list[GridPoint] = []
    truth: dict[int, float] = {}
    for row in group.sort_values(["cpu_cores", "mem_cap_gb", "size"]).itertuples():
        cpus = float(row.cpu_cores) if _num(row.cpu_cores) else 1.0
        mem = float(row.mem_cap_gb) if _num(row.mem_cap_gb) else None
        config = configs.setdefault((cpus, mem), len(configs))
        truth[len(points)] = float(row.y)
        points.append(GridPoint(config, cpus, mem, float(row.size), config_cost(cpus, mem, cost_per_gb)))
    label = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)) if str(k) not in ("", "nan"))
    return Grid(f"{Path(path).name}: {label}", points, truth)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


# ------------------------------------------------------------------------------------------- model


def replay_model(grid: Grid, *, seed: int | None = None, max_fraction: float = 0.3) -> list[dict[str, Any]]:
    """One row per measured cell: the model's true and estimated error (adaptive; random with `seed`)."""
    n = len(grid.points)
    planner = Planner(
        grid.points,
        goal="model",
        target_error_pct=None,  # the curve goes on past where the plan would stop (`model_verdict`)
        budget_cells=math.ceil(max_fraction * n),
        random_seed=seed,
    )
    rows = []
    while (choice := planner.choose()) is not None:
        planner.tell(choice.point, grid.truth[choice.point])
        err = median_abs_pct_error(planner.model, grid.truth)
        rows.append(
            {
                "strategy": "adaptive" if seed is None else "random",
                "cells_measured": planner.n_measured,
                "fraction_measured": planner.n_measured / n,
                "median_abs_pct_error": err,
                "estimated_error_pct": planner.estimated_error_pct,
                "design": len(planner.design),
            }
        )
    return rows


def replay_fleet(
    grid: Grid, hosts: int, *, max_fraction: float = 0.3, start_cells: float = DEFAULT_START_RATIO
) -> list[dict[str, Any]]:
    """The plan on `hosts` fleet hosts, one row per result as it comes in: a cell takes one time unit, a
    container start `start_cells`; a free host takes `Planner.choose_group`'s group (no configuration
    another host runs), or waits for the next result when there is none. `wall_cells`: when the result came."""
    n = len(grid.points)
    planner = Planner(
        grid.points, goal="model", target_error_pct=None, budget_cells=math.ceil(max_fraction * n)
    )
    planner.start_ratio = start_cells
    free: list[tuple[float, int]] = [(0.0, h) for h in range(hosts)]  # (time the host is free, host)
    results: list[tuple[float, int]] = []  # (time a cell's result is in, point)
    ends: dict[int, float] = {}  # configuration -> when its running group ends
    rows: list[dict[str, Any]] = []

    def tell_until(t: float) -> None:
        while results and results[0][0] <= t:
            at, i = heapq.heappop(results)
            planner.tell(i, grid.truth[i])
            rows.append(
                {
                    "strategy": "adaptive",
                    "hosts": hosts,
                    "wall_cells": at,
                    "cells_measured": planner.n_measured,
                    "fraction_measured": planner.n_measured / n,
                    "median_abs_pct_error": median_abs_pct_error(planner.model, grid.truth),
                    "estimated_error_pct": planner.estimated_error_pct,
                    "design": len(planner.design),
                }
            )

    while free:
        t, host = heapq.heappop(free)
        tell_until(t)
        group = planner.choose_group(frozenset(c for c, end in ends.items() if end > t))
        if not group:
            if results:  # the others' results may give it something: wait for the next one
                heapq.heappush(free, (results[0][0], host))
            continue  # nothing more for this host: it leaves the fleet
        done = t + start_cells
        for choice in group:
            done += 1.0
            heapq.heappush(results, (done, choice.point))
        ends[grid.points[group[0].point].config] = done
        heapq.heappush(free, (done, host))
    tell_until(math.inf)
    return rows


def fleet_report(
    grid: Grid, hosts: Sequence[int], max_fraction: float = 0.3
) -> tuple[list[dict[str, Any]], list[str]]:
    """The goal-model replay on fleets of each size in `hosts`: cells and wall time (in cells) until the true
    error is within the target, and where the plan's own stop rule would end it."""
    target_pct = MODEL_TARGET[0]
    lines = [
        f"#### On a fleet — {grid.label} (a cell = 1 time unit, a container start = {DEFAULT_START_RATIO:g})",
        "",
        f"| hosts | true error ≤ {target_pct:g}%: cells | …: wall | plan stops at: cells | …: wall | …: true error |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    rows: list[dict[str, Any]] = []
    for k in hosts:
        mine = replay_fleet(grid, k, max_fraction=max_fraction)
        rows += mine
        verdict = model_verdict(mine, target_pct)
        first, stop = verdict["first_within_target"], verdict["stop"]
        lines.append(
            f"| {k} | {first['cells_measured'] if first else 'not within'} | "
            f"{_num_text(first['wall_cells']) if first else '—'} | "
            f"{stop['cells_measured'] if stop else 'no stop'} | {_num_text(stop['wall_cells']) if stop else '—'} | "
            f"{_pct(stop['median_abs_pct_error']) if stop else '—'} |"
        )
    return rows, lines


def _num_text(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def random_median(grid: Grid, max_fraction: float) -> list[dict[str, Any]]:
    """The random order's error at each cell count: the median over `RANDOM_SEEDS`."""
    runs = [replay_model(grid, seed=s, max_fraction=max_fraction) for s in RANDOM_SEEDS]
    out = []
    for k in range(min(len(r) for r in runs)):
        errs = [r[k]["median_abs_pct_error"] for r in runs if r[k]["median_abs_pct_error"] is not None]
        ests = [r[k]["estimated_error_pct"] for r in runs if r[k]["estimated_error_pct"] is not None]
        out.append(
            runs[0][k]
            | {
                "median_abs_pct_error": float(np.median(errs)) if errs else None,
                "estimated_error_pct": float(np.median(ests)) if ests else None,
            }
        )
    return out


def model_verdict(rows: Sequence[dict[str, Any]], target_pct: float = 10.0) -> dict[str, Any]:
    """Where the plan would stop (its estimate within the target `TARGET_STREAK` refits in a row, past the
    design and two more: `Planner`'s rule) and the true error then; and the fewest cells whose true error is
    within the target."""
    stop, streak = None, 0
    for r in rows:
        est = r["estimated_error_pct"]
        streak = streak + 1 if est is not None and est <= target_pct else 0
        if streak >= TARGET_STREAK and r["cells_measured"] >= r["design"] + 2:
            stop = r
            break
    first_true = next(
        (
            r
            for r in rows
            if r["median_abs_pct_error"] is not None and r["median_abs_pct_error"] <= target_pct
        ),
        None,
    )
    return {"stop": stop, "first_within_target": first_true}


# ------------------------------------------------------------------------------------------- SLO


def slo_cases(grid: Grid) -> list[tuple[float, float]]:
    """(size, bound) cases: at each size, the midpoints between the configurations' sorted latencies and
    one 1% above the slowest."""
    cases: list[tuple[float, float]] = []
    for size in sorted({p.size for p in grid.points}):
        values = sorted({grid.truth[i] for i, p in enumerate(grid.points) if p.size == size})
        bounds = [math.sqrt(a * b) for a, b in itertools.pairwise(values)] + [values[-1] * 1.01]
        cases.extend((size, b) for b in bounds)
    return cases


def replay_slo(grid: Grid, size: float, bound: float, budget: int, seed: int | None = None) -> dict[str, Any]:
    """One SLO case: the plan's answer against the truth."""
    planner = Planner(
        grid.points, goal="slo", slo_bound_s=bound, slo_size=size, budget_cells=budget, random_seed=seed
    )
    if seed is not None:  # the baseline: random configurations at the SLO's size
        planner.failed |= {i for i, p in enumerate(grid.points) if p.size != size}
        planner.budget_cells = budget + len(planner.failed)
    while (choice := planner.choose()) is not None:
        planner.tell(choice.point, grid.truth[choice.point])
    measured = len(planner.measured)
    answer = planner.slo_answer()
    at_size = {p.config: i for i, p in enumerate(grid.points) if p.size == size}
    meeting = [grid.points[i].cost for c, i in at_size.items() if grid.truth[i] <= bound]
    true_cost = min(meeting) if meeting else None
    found, ratio = 0, None
    if answer.config is not None and true_cost:
        i = at_size[answer.config]
        ratio = grid.points[i].cost / true_cost
        found = int(grid.truth[i] <= bound and ratio <= FOUND_COST_SLACK)
    return {
        "strategy": "adaptive" if seed is None else "random",
        "slo_size": size,
        "slo_s": bound,
        "cells_measured": measured,
        "fraction_measured": measured / len(grid.points),
        "found": found,
        "cost_ratio": ratio,
        "stop_reason": planner.stop_reason,
    }


def slo_rows(grid: Grid, budget_fraction: float = SLO_TARGET[1]) -> list[dict[str, Any]]:
    budget = max(1, math.floor(budget_fraction * len(grid.points)))
    rows = []
    for k, (size, bound) in enumerate(slo_cases(grid)):
        rows.append(replay_slo(grid, size, bound, budget))
        rows.append(replay_slo(grid, size, bound, budget, seed=k))
    return rows


# ------------------------------------------------------------------------------------------- report


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None else _cell(r.get(c)) for c in columns])


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}%"


def model_report(grid: Grid, max_fraction: float = 0.3) -> tuple[list[dict[str, Any]], list[str]]:
    adaptive = replay_model(grid, max_fraction=max_fraction)
    baseline = random_median(grid, max_fraction)
    n = len(grid.points)
    lines = [
        f"### {grid.label} — goal model ({n} cells)",
        "",
        "| cells | fraction | adaptive: true median abs error | adaptive: estimated | random order: true |",
        "|---:|---:|---:|---:|---:|",
    ]
    rand = {r["cells_measured"]: r for r in baseline}
    for r in adaptive:
        b = rand.get(r["cells_measured"], {})
        lines.append(
            f"| {r['cells_measured']} | {r['fraction_measured']:.0%} | {_pct(r['median_abs_pct_error'])} | "
            f"{_pct(r['estimated_error_pct'])} | {_pct(b.get('median_abs_pct_error'))} |"
        )
    target_pct, target_fraction = MODEL_TARGET
    verdict = model_verdict(adaptive, target_pct)
    at = next((r for r in adaptive if r["fraction_measured"] >= target_fraction - 1e-9), adaptive[-1])
    limit = math.floor(target_fraction * n)
    within = [r for r in adaptive if r["cells_measured"] <= limit]
    best = within[-1] if within else at
    met = best["median_abs_pct_error"] is not None and best["median_abs_pct_error"] <= target_pct
    lines += [
        "",
        f"Target (median abs error ≤ {target_pct:g}% after ≤ {target_fraction:.0%} of cells, "
        f"{limit} cells): {'**met**' if met else '**not met**'} — {_pct(best['median_abs_pct_error'])} "
        f"after {best['cells_measured']} cells.",
    ]
    stop = verdict["stop"]
    if stop is not None:
        lines.append(
            f"With `target_error = {target_pct:g}` the plan stops after {stop['cells_measured']} cells "
            f"({stop['fraction_measured']:.0%}; estimated {_pct(stop['estimated_error_pct'])}, true "
            f"{_pct(stop['median_abs_pct_error'])})."
        )
    else:
        lines.append(f"Its own estimate stays above {target_pct:g}% within {max_fraction:.0%} of the cells.")
    return [*adaptive, *baseline], lines


def slo_report(grid: Grid) -> tuple[list[dict[str, Any]], list[str]]:
    rows = slo_rows(grid)
    target_found, target_fraction = SLO_TARGET
    lines = [f"### {grid.label} — goal slo ({len(grid.points)} cells, budget {target_fraction:.0%})", ""]
    lines += [
        "| strategy | cases | found | median cells | max cells | stopped: decided / budget |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    verdicts = {}
    for strategy in ("adaptive", "random"):
        mine = [r for r in rows if r["strategy"] == strategy]
        found = sum(r["found"] for r in mine) / len(mine)
        verdicts[strategy] = found
        cells = [r["cells_measured"] for r in mine]
        decided = sum(1 for r in mine if r["stop_reason"] == "decided")
        budget = sum(1 for r in mine if r["stop_reason"] == "budget_cells")
        lines.append(
            f"| {strategy} | {len(mine)} | {found:.0%} | {np.median(cells):g} | {max(cells)} | {decided} / {budget} |"
        )
    met = verdicts["adaptive"] >= target_found
    lines += [
        "",
        f"Target (found in ≥ {target_found:.0%} of cases with ≤ {target_fraction:.0%} of cells): "
        f"{'**met**' if met else '**not met**'} — {verdicts['adaptive']:.0%}.",
    ]
    return rows, lines


def run(grid_path: str, goal: str, out: str | None, hosts: Sequence[int] = ()) -> list[str]:
    """The replay of one grid (and, for goal model, on fleets of each size in `hosts`); writes `out` and
    returns the report's lines (markdown)."""
    grid = load_grid(grid_path)
    if goal == "slo":
        rows, lines = slo_report(grid)
        columns: Sequence[str] = SLO_COLUMNS
    else:
        rows, lines = model_report(grid)
        columns = MODEL_COLUMNS
        if hosts:
            fleet_rows, fleet_lines = fleet_report(grid, hosts)
            rows, lines = [*rows, *fleet_rows], [*lines, "", *fleet_lines]
    if out:
        write_csv(out, rows, columns)
    return lines


__all__ = [
    "STOP_REASONS",
    "Grid",
    "load_grid",
    "model_report",
    "replay_fleet",
    "replay_model",
    "replay_slo",
    "run",
    "slo_report",
]
