"""Adaptive sweeps: which cell of a grid to measure next, so that a latency model of the whole grid — or the
cheapest configuration that meets an SLO — comes out of a fraction of the measurements.

The grid is a list of `GridPoint`s: a resource configuration (one container group: CPU cores, memory, its
cost) × an input size. A `Planner` is told each measured value (`tell`) and answers which point to measure
next (`choose`), or None with a `stop_reason`. It knows nothing of containers or sessions: the sweep's
`AdaptiveOrder` (`tui_profiler.sweep.adaptive`) and the replay bench (`tui_profiler.bench.adaptive`) drive it.

The model is `analysis.fit`'s: the same forms (loglinear, loglog-interaction, work-parallel,
piecewise-linear) of latency against input size and CPU cores, selected the same way (held-out MAPE with the
parsimony rule, `fit.select_form`), here by leave-one-out over the measured cells (delete-a-group with
`MAX_FOLDS` groups above that many cells). Those held-out fits give, at no extra cost:

- the **estimated error over the grid**: the median absolute % error of held-out predictions, as a grid cell
  would be predicted. A cell of a configuration with measured cells is predicted like a measured cell left
  out (leave-one-cell-out); a cell of a configuration never measured is predicted like a measured
  configuration left out whole (leave-one-configuration-out, the same form refitted without it). The two
  are weighted by the grid's share of cells in measured and unmeasured configurations. Leaving out single
  cells alone reads optimistic while most configurations are unmeasured: the other cells of a cell's own
  configuration pin it down, which an unmeasured configuration's cells do not have. With fewer than three
  configurations measured and some left, there is no estimate (the CPU dependence cannot be held out);
- the **uncertainty at every point**: the jackknife variance of log-prediction over the held-out fits, plus
  the spread of the other forms whose held-out error is within `FORM_SPREAD` of the best. A point's 95%
  interval (`Prediction.lo/.hi`) adds the fit's residual scatter (measurement noise and lack of fit).

Choosing (`goal = "model"`): first a small space-filling **design** (the cheapest and the most expensive
configuration at the smallest and largest input size, and the middle configuration at the middle size);
then the point with the largest model uncertainty (**uncertainty**). A container start is the expensive
step, so while a configuration's container runs, the planner stays in it as long as its best point is at
least 1 / (1 + `start_ratio`) as uncertain as the best point anywhere (`start_ratio`: a start's cost in cells,
measured by the sweep); it stops when the estimated error is within `target_error_pct` after two refits in a
row (and at least two cells past the design).

Choosing (`goal = "slo"`): the question is the cheapest configuration whose latency at input size `slo_size`
is within `slo_bound_s`. The design is the cheapest, the middle and the most expensive configuration at that
size; then, among configurations cheaper than the current answer that are not yet decided (a measured value,
or a predicted interval wholly on one side of the bound), the one closest to the bound in units of its
uncertainty (**slo-boundary**), and the answer itself until it is measured. It stops when the answer is
measured to meet and every cheaper configuration fails (`decided`), or when none can meet.

Several hosts at once (a fleet): each free host asks for a configuration of its own (`choose(..., busy=...)`
leaves out the ones other hosts run) and the sizes to measure in it, chosen in a row as above. Points handed
out but not measured yet are **pending** (`assume`): they are not chosen again, and where the model predicts
them they count as measured at that prediction in the choosing model only (the "kriging believer" of batch
Bayesian optimisation), so the next choice looks elsewhere than where the last one will bring knowledge. The
stop rules and the estimated error use measured cells only. With nothing left to choose but pending points,
`choose` answers None without a stop reason: wait for their results.

Memory is not a factor of the model (as in `fit`): two configurations with the same CPUs predict alike, and a
point whose CPU × size twin is measured is chosen only when nothing else is left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tui_profiler.analysis.fit import FORMS, Fitted, form_supported, select_form

Z95 = 1.959963984540054
MAX_FOLDS = 20  # leave-one-out up to this many cells, then this many delete-a-group folds
FORM_SPREAD = 1.5  # other forms within this factor of the best held-out error widen the uncertainty
UNKNOWN_LOG_SD = 1.0  # the uncertainty where no model can be fitted yet (a factor e either way)
TARGET_STREAK = 2  # the estimate within the target at this many refits in a row: one lucky fold is not enough
DEFAULT_START_RATIO = 1.0  # a container start costs about one cell until the sweep measures it
GOALS = ("model", "slo")

# Why a point was measured (cells.csv `chosen_because`)
DESIGN = "design"
UNCERTAINTY = "uncertainty"
SLO_BOUNDARY = "slo-boundary"
RANDOM = "random"  # the bench's baseline

# Why a plan stopped (meta.json `adaptive.stop_reason`)
STOP_TARGET = "target"  # goal model: the estimated error reached target_error
STOP_DECIDED = "decided"  # goal slo: the cheapest configuration that meets is known
STOP_BUDGET_CELLS = "budget_cells"
STOP_BUDGET_MINUTES = "budget_minutes"
STOP_EXHAUSTED = "exhausted"  # every point that could be measured was
STOP_REASONS = {
    STOP_TARGET: "the target error was reached",
    STOP_DECIDED: "the cheapest configuration that meets the SLO is decided",
    STOP_BUDGET_CELLS: "the cell budget was spent",
    STOP_BUDGET_MINUTES: "the time budget was spent",
    STOP_EXHAUSTED: "every cell of the grid was measured",
}


@dataclass(frozen=True, slots=True)
class GridPoint:
    """One cell of the space: a resource configuration (`config`: its container group) × an input size."""

    config: int
    cpus: float  # the modelled CPU cores (an uncapped configuration: 1, nominally)
    mem_gb: float | None
    size: float  # the input size: a scale, pixels or tokens
    cost: float  # of the resource configuration (`config_cost`)


def config_cost(cpus: float | None, mem_gb: float | None, cost_per_gb: float) -> float:
    """A resource configuration's cost: one per CPU core plus `cost_per_gb` per GiB of memory (an uncapped
    resource costs nothing: there is one such configuration)."""
    return (cpus or 0.0) + cost_per_gb * (mem_gb or 0.0)


@dataclass(frozen=True, slots=True)
class Prediction:
    """The model at one point: its value, its 95% interval, and the model's own log-uncertainty (without
    the cells' scatter) that ranks the points."""

    value: float
    lo: float
    hi: float
    model_sd: float


@dataclass(frozen=True, slots=True)
class Choice:
    point: int
    because: str  # DESIGN | UNCERTAINTY | SLO_BOUNDARY | RANDOM
    prediction: Prediction | None  # the model's at that point before it was measured (None: a design cell)


@dataclass(slots=True)
class Model:
    """The model fitted to the measured cells."""

    form: str
    params: dict[str, float]
    n: int
    heldout_mape_pct: dict[str, float]  # each form's held-out MAPE
    median_error_pct: float | None  # the estimated median absolute % error over the grid (see the module)
    predictions: list[Prediction]
    cell_error_pct: float | None = None  # leave-one-cell-out median absolute % error
    config_error_pct: float | None = None  # leave-one-configuration-out (None: fewer than 3 measured)
    unmeasured_share: float = 0.0  # the grid's share of cells in configurations not measured

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "params": {k: _finite(v) for k, v in self.params.items()},
            "cells": self.n,
            "heldout_mape_pct": {k: _finite(v) for k, v in self.heldout_mape_pct.items()},
            "estimated_median_error_pct": self.median_error_pct,
            "cell_heldout_error_pct": self.cell_error_pct,
            "config_heldout_error_pct": self.config_error_pct,
            "unmeasured_config_share": self.unmeasured_share,
        }


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def fit_model(
    points: Sequence[GridPoint], measured: dict[int, float], *, estimate_error: bool = True
) -> Model | None:
    """The selected form fitted to the measured points, with held-out error and uncertainty at every point;
    None with fewer than two measured values. `estimate_error=False`: no leave-one-configuration-out fits
    (the choosing model, whose error estimate nothing reads, is then left without one)."""
    idx = sorted(measured)
    if len(idx) < 2:
        return None
    s = np.array([points[i].size for i in idx], float)
    c = np.array([points[i].cpus for i in idx], float)
    y = np.array([measured[i] for i in idx], float)
    gs = np.array([p.size for p in points], float)
    gc = np.array([p.cpus for p in points], float)
    n = len(idx)
    folds = _folds(n)
    heldout: dict[str, np.ndarray] = {}  # form -> held-out prediction of each measured cell
    fold_grids: dict[str, list[np.ndarray]] = {}  # form -> each fold's log-prediction over the grid
    for name, form in FORMS.items():
        if not form_supported(name, s, c):
            continue
        pred = np.full(n, np.nan)
        grids: list[np.ndarray] = []
        try:
            for test in folds:
                train = np.setdiff1d(np.arange(n), test)
                if not form_supported(name, s[train], c[train]):
                    raise ValueError("too few cells")
                fitted = form.fit(s[train], c[train], y[train])
                pred[test] = fitted.predict(s[test], c[test])
                grids.append(np.log(np.maximum(fitted.predict(gs, gc), 1e-12)))
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            continue
        if np.all(np.isfinite(pred)):
            heldout[name], fold_grids[name] = pred, grids
    scores = {name: float(np.mean(np.abs(p - y) / y) * 100) for name, p in heldout.items()}
    name = select_form(scores) if scores else "loglinear"
    if not form_supported(name, s, c):
        name = "loglinear"
    full: Fitted = FORMS[name].fit(s, c, y)
    log_pred = np.log(np.maximum(full.predict(gs, gc), 1e-12))
    log_fit = np.log(np.maximum(full.predict(s, c), 1e-12))
    if name in fold_grids:
        k = len(fold_grids[name])
        stack = np.vstack(fold_grids[name])
        var = (k - 1) / k * np.sum((stack - stack.mean(axis=0)) ** 2, axis=0)
        best = scores[name]
        others = [
            np.log(np.maximum(FORMS[o].fit(s, c, y).predict(gs, gc), 1e-12))
            for o, score in scores.items()
            if o != name and score <= FORM_SPREAD * best + 1.0
        ]
        if others:
            var = var + np.mean([(o - log_pred) ** 2 for o in others], axis=0)
        model_sd = np.sqrt(var)
        cell_error: float | None = float(np.median(np.abs(heldout[name] - y) / y) * 100)
    else:  # too few cells to hold any out: the model is barely known
        model_sd = np.full(len(points), UNKNOWN_LOG_SD)
        cell_error = None
    measured_configs = np.array([points[i].config for i in idx])
    seen = set(measured_configs.tolist())
    unmeasured = sum(1 for p in points if p.config not in seen) / len(points)
    config_error = None
    if estimate_error:
        by_score = [name, *sorted((f for f in scores if f != name), key=lambda f: scores[f])]
        config_error = _config_heldout_error(by_score, measured_configs, s, c, y)
    median_error = cell_error
    if unmeasured > 0 and cell_error is not None:
        median_error = (
            None if config_error is None else (1 - unmeasured) * cell_error + unmeasured * config_error
        )
    residual = np.log(y) - log_fit
    n_params = min(FORMS[name].n_params, n - 1)
    scatter = 1.4826 * float(np.median(np.abs(residual))) * math.sqrt(n / max(n - n_params, 1))
    total = np.sqrt(model_sd**2 + scatter**2)
    preds = [
        Prediction(
            float(math.exp(lp)), float(math.exp(lp - Z95 * t)), float(math.exp(lp + Z95 * t)), float(m)
        )
        for lp, t, m in zip(log_pred, total, model_sd, strict=True)
    ]
    return Model(
        name, dict(full.params), n, scores, median_error, preds, cell_error, config_error, unmeasured
    )


def _config_heldout_error(
    forms: Sequence[str], configs: np.ndarray, s: np.ndarray, c: np.ndarray, y: np.ndarray
) -> float | None:
    """The median absolute % error of predicting each measured configuration's cells from the others', by
    the first of `forms` (the selected one, then the others by held-out error) that can be fitted without
    each of them — a simpler form where the selected one needs every configuration's CPUs, so the estimate
    errs pessimistic. None: fewer than three configurations measured, or no form fits without one."""
    distinct = sorted(set(configs.tolist()))
    if len(distinct) < 3:
        return None
    for name in forms:
        errors: list[np.ndarray] = []
        for config in distinct:
            test = configs == config
            train = ~test
            if not form_supported(name, s[train], c[train]):
                break
            try:
                pred = FORMS[name].fit(s[train], c[train], y[train]).predict(s[test], c[test])
            except (ValueError, np.linalg.LinAlgError, FloatingPointError):
                break
            if not np.all(np.isfinite(pred)):
                break
            errors.append(np.abs(pred - y[test]) / y[test] * 100)
        else:
            return float(np.median(np.concatenate(errors)))
    return None


def _folds(n: int) -> list[np.ndarray]:
    """Leave-one-out up to MAX_FOLDS cells, then MAX_FOLDS interleaved groups (deterministic)."""
    if n <= MAX_FOLDS:
        return [np.array([i]) for i in range(n)]
    return [np.arange(f, n, MAX_FOLDS) for f in range(MAX_FOLDS)]


def median_abs_pct_error(model: Model | None, truth: dict[int, float]) -> float | None:
    """The model's median absolute % error over the points whose true value is known (the bench's score)."""
    if model is None or not truth:
        return None
    errs = [abs(model.predictions[i].value - y) / y * 100 for i, y in truth.items()]
    return float(np.median(errs))


@dataclass(slots=True)
class SloAnswer:
    """The cheapest configuration that meets the bound at the SLO's size, as known so far."""

    config: int | None  # None: none meets (or nothing known yet)
    point: int | None
    value_s: float | None
    measured: bool
    decided: bool
    undecided: list[int] = field(default_factory=list)  # cheaper configurations not decided yet

    def to_dict(self, points: Sequence[GridPoint]) -> dict[str, Any]:
        p = points[self.point] if self.point is not None else None
        return {
            "config": self.config,
            "cpu_cores": p.cpus if p else None,
            "mem_cap_gb": p.mem_gb if p else None,
            "cost": p.cost if p else None,
            "latency_s": self.value_s,
            "measured": self.measured,
            "decided": self.decided,
            "undecided_configs": list(self.undecided),
        }


class Planner:
    """Which point to measure next; see the module's docstring. `budget_cells` counts every measured point
    (a failed one too); `start_ratio`: a container start's cost in cells."""

    def __init__(
        self,
        points: Sequence[GridPoint],
        *,
        goal: str = "model",
        target_error_pct: float | None = 10.0,
        budget_cells: int | None = None,
        slo_bound_s: float | None = None,
        slo_size: float | None = None,
        start_ratio: float = DEFAULT_START_RATIO,
        random_seed: int | None = None,
    ) -> None:
        if goal not in GOALS:
            raise ValueError(f"goal: {goal!r} — allowed: {', '.join(GOALS)}")
        if not points:
            raise ValueError("an adaptive plan needs at least one cell")
        if goal == "slo" and slo_bound_s is None:
            raise ValueError("goal 'slo' needs a latency bound (slo.e2e_s)")
        self.points = list(points)
        self.goal = goal
        self.target_error_pct = target_error_pct
        self.budget_cells = budget_cells
        self.slo_bound_s = slo_bound_s
        self.start_ratio = start_ratio
        self._rng = np.random.default_rng(random_seed) if random_seed is not None else None
        sizes = sorted({p.size for p in self.points})
        self.slo_size = _nearest(sizes, slo_size) if slo_size is not None else sizes[-1]
        self.measured: dict[int, float] = {}  # point -> value
        self.failed: set[int] = set()  # measured without a value
        self.broken: set[int] = set()  # configurations that could not run at all
        self.pending: dict[int, float | None] = {}  # handed out, not measured: the value believed there
        self.model: Model | None = None
        self._choosing: Model | None = None  # the model with the pending points believed (None: `model`)
        self.within_target = 0  # consecutive refits whose estimated error was within the target
        self.stop_reason = ""
        self.design = self._design()
        self._busy: frozenset[int] = frozenset()  # the configurations other hosts run (this choice's)

    # ------------------------------------------------------------------------------- what is known

    @property
    def n_measured(self) -> int:
        return len(self.measured) + len(self.failed)

    def done(self, i: int) -> bool:
        return i in self.measured or i in self.failed

    def taken(self, i: int) -> bool:
        """Measured, failed, or handed out and pending."""
        return self.done(i) or i in self.pending

    def assume(self, i: int) -> None:
        """Point `i` was handed out to run (a fleet host): pending, believed at its predicted value."""
        choosing = self._choosing or self.model
        value = choosing.predictions[i].value if choosing is not None else math.nan
        self.pending[i] = value if math.isfinite(value) else None
        self._refit_choosing()

    def release(self, i: int) -> None:
        """A pending point that will not be measured after all: choosable again."""
        self.pending.pop(i, None)
        self._refit_choosing()

    def _refit_choosing(self) -> None:
        believed = {i: v for i, v in self.pending.items() if v is not None}
        if not believed or self.goal == "slo":
            self._choosing = None
            return
        self._choosing = fit_model(self.points, {**self.measured, **believed}, estimate_error=False)

    def tell(self, i: int, value: float | None, *, config_broken: bool = False) -> None:
        """Point `i` was measured: its value (None: it failed; `config_broken`: its configuration cannot run
        at all, e.g. its container did not start), and refit."""
        self.pending.pop(i, None)
        if value is not None and math.isfinite(value) and value > 0:
            self.measured[i] = float(value)
            self.failed.discard(i)
        else:
            self.failed.add(i)
            if config_broken:
                self.broken.add(self.points[i].config)
        if self.goal == "slo":  # the SLO's question is about one size: the model of that slice
            slice_ = {k: v for k, v in self.measured.items() if self.points[k].size == self.slo_size}
            self.model = _slice_model(self.points, slice_, self.slo_size)
        else:
            self.model = fit_model(self.points, self.measured)
            err, target = self.estimated_error_pct, self.target_error_pct
            self.within_target = (
                self.within_target + 1 if err is not None and target is not None and err <= target else 0
            )
        self._refit_choosing()

    def prediction(self, i: int) -> Prediction | None:
        return self.model.predictions[i] if self.model is not None else None

    @property
    def estimated_error_pct(self) -> float | None:
        return self.model.median_error_pct if self.model is not None else None

    # ------------------------------------------------------------------------------- the design

    def _design(self) -> list[int]:
        """Space-filling first points, in container order (each configuration's sizes together)."""
        by_cost = sorted({p.config: (p.cost, p.cpus, p.config) for p in self.points}.values())
        configs = [c for _, _, c in by_cost]
        sizes = sorted({p.size for p in self.points})
        cheap, dear, mid = configs[0], configs[-1], configs[(len(configs) - 1) // 2]
        if self.goal == "slo":
            wanted = [(cheap, self.slo_size), (mid, self.slo_size), (dear, self.slo_size)]
        else:
            small, large, middle = sizes[0], sizes[-1], sizes[(len(sizes) - 1) // 2]
            wanted = [(cheap, small), (cheap, large), (mid, middle), (dear, small), (dear, large)]
        design: list[int] = []
        for config, size in wanted:
            i = self._point(config, size)
            if i is not None and i not in design:
                design.append(i)
        return design

    def _point(self, config: int, size: float) -> int | None:
        return next((i for i, p in enumerate(self.points) if p.config == config and p.size == size), None)

    # ------------------------------------------------------------------------------- choosing

    def choose(self, current_config: int | None = None, busy: frozenset[int] = frozenset()) -> Choice | None:
        """The next point to measure (preferring `current_config`, whose container runs, as its start is
        already paid; never in a `busy` configuration, which another host runs), or None: the plan stops
        (`stop_reason` says why), or, with no stop reason, only pending points are left to wait for."""
        if self.stop_reason:
            return None
        if self.budget_cells is not None and self.n_measured + len(self.pending) >= self.budget_cells:
            return self._stop(STOP_BUDGET_CELLS) if not self.pending else None
        self._busy = busy - {current_config} if current_config is not None else busy
        if self._rng is not None:
            return self._random()
        open_design = [i for i in self.design if self._choosable(i)]
        if open_design:
            here = [i for i in open_design if self.points[i].config == current_config]
            return Choice((here or open_design)[0], DESIGN, None)
        if self.model is None and self._waiting():
            return None  # no model to choose by until the design's points running elsewhere are measured
        if self.goal == "slo":
            return self._choose_slo()
        return self._choose_uncertain(current_config)

    def choose_group(self, busy: frozenset[int] = frozenset()) -> list[Choice]:
        """A free fleet host's next container group: a configuration not in `busy` (those other hosts run)
        and the points to measure in it, chosen in a row by the stay-in-the-running-container rule, each
        assumed (pending, believed at its prediction) before the next is chosen ([]: nothing to choose now;
        see `choose`)."""
        first = self.choose(None, busy)
        if first is None:
            return []
        config = self.points[first.point].config
        chosen = [first]
        self.assume(first.point)
        sizes = sum(1 for p in self.points if p.config == config)
        while len(chosen) < sizes:
            more = self.choose(config, busy)
            if more is None or self.points[more.point].config != config:
                break
            chosen.append(more)
            self.assume(more.point)
        return chosen

    def _choosable(self, i: int) -> bool:
        config = self.points[i].config
        return not self.taken(i) and config not in self.broken and config not in self._busy

    def _waiting(self) -> bool:
        """Points are pending: a choice that finds nothing may find something once they are measured."""
        return bool(self.pending)

    def _stop(self, reason: str) -> Choice | None:
        """No next point: the plan stops, for `reason`."""
        self.stop_reason = reason
        return None

    def _open(self) -> list[int]:
        return [i for i in range(len(self.points)) if self._choosable(i)]

    def _random(self) -> Choice | None:
        left = self._open()
        if not left:
            return None if self._waiting() or self._busy else self._stop(STOP_EXHAUSTED)
        assert self._rng is not None
        i = int(self._rng.choice(left))
        return Choice(i, RANDOM, self.prediction(i))

    def _choose_uncertain(self, current_config: int | None) -> Choice | None:
        if self.within_target >= TARGET_STREAK and self.n_measured >= len(self.design) + 2:
            return self._stop(STOP_TARGET)
        left = self._open()
        if not left:
            return None if self._waiting() or self._busy else self._stop(STOP_EXHAUSTED)
        twins = {(self.points[i].cpus, self.points[i].size) for i in [*self.measured, *self.pending]}
        fresh = [i for i in left if (self.points[i].cpus, self.points[i].size) not in twins] or left
        choosing = self._choosing or self.model

        def score(i: int) -> float:
            return choosing.predictions[i].model_sd if choosing is not None else UNKNOWN_LOG_SD

        best = max(fresh, key=score)
        here = [i for i in fresh if self.points[i].config == current_config]
        if here:
            best_here = max(here, key=score)
            if score(best_here) * (1.0 + self.start_ratio) >= score(best):
                best = best_here
        return Choice(best, UNCERTAINTY, self.prediction(best))

    # ------------------------------------------------------------------------------- the SLO

    def _slo_value(self, config: int) -> tuple[int | None, float | None, bool, Prediction | None]:
        """A configuration at the SLO's size: (point, value, measured, prediction)."""
        i = self._point(config, self.slo_size)
        if i is None:
            return None, None, False, None
        if i in self.measured:
            return i, self.measured[i], True, self.prediction(i)
        p = self.prediction(i)
        return i, (p.value if p is not None else None), False, p

    def slo_answer(self) -> SloAnswer:
        bound = self.slo_bound_s
        assert bound is not None
        configs = [
            c for _, _, c in sorted({p.config: (p.cost, p.cpus, p.config) for p in self.points}.values())
        ]
        undecided: list[int] = []
        for config in configs:
            i, value, measured, pred = self._slo_value(config)
            if i is None:
                continue
            if config in self.broken or i in self.failed:
                continue  # cannot run: cannot meet
            if measured:
                assert value is not None
                if value <= bound:
                    return SloAnswer(config, i, value, True, not undecided, undecided)
                continue
            if pred is None:
                undecided.append(config)
                continue
            if pred.lo > bound:
                continue  # surely fails
            if pred.value <= bound:
                return SloAnswer(config, i, pred.value, False, False, undecided)
            undecided.append(config)
        return SloAnswer(None, None, None, False, not undecided, undecided)

    def _choose_slo(self) -> Choice | None:
        answer = self.slo_answer()
        if answer.decided:
            return self._stop(STOP_DECIDED)
        bound = self.slo_bound_s
        assert bound is not None
        candidates = []
        for config in answer.undecided:
            i, _, _, pred = self._slo_value(config)
            if i is not None and self._choosable(i):
                sd = max(pred.model_sd if pred else UNKNOWN_LOG_SD, 1e-6)
                closeness = abs(math.log(pred.value / bound)) / sd if pred else 0.0
                candidates.append((closeness, self.points[i].cost, i))
        if candidates:
            i = min(candidates)[2]
        elif answer.point is not None and not answer.measured and self._choosable(answer.point):
            i = answer.point
        elif self._waiting() or self._busy:
            return None  # what is left to decide runs elsewhere: its results first
        else:
            return self._stop(STOP_EXHAUSTED)
        return Choice(i, SLO_BOUNDARY, self.prediction(i))

    # ------------------------------------------------------------------------------- the record

    def describe(self) -> dict[str, Any]:
        """The plan's state as meta.json keeps it: the model, its estimated error, the SLO answer."""
        out: dict[str, Any] = {
            "goal": self.goal,
            "cells_measured": self.n_measured,
            "cells_pending": len(self.pending),
            "cells_in_grid": len(self.points),
            "design": list(self.design),
            "stop_reason": self.stop_reason,
            "stop_reason_text": STOP_REASONS.get(self.stop_reason, ""),
            "target_error_pct": self.target_error_pct,
            "budget_cells": self.budget_cells,
            "estimated_median_error_pct": self.estimated_error_pct,
            "model": self.model.to_dict() if self.model else None,
        }
        if self.goal == "slo":
            out["slo"] = {"bound_s": self.slo_bound_s, "size": self.slo_size} | self.slo_answer().to_dict(
                self.points
            )
        return out


def _slice_model(points: Sequence[GridPoint], measured: dict[int, float], size: float) -> Model | None:
    """The model of one input size's configurations (the SLO's question); the grid's points of other sizes
    get no prediction (NaN)."""
    sub = [i for i, p in enumerate(points) if p.size == size]
    local = {i: k for k, i in enumerate(sub)}
    model = fit_model([points[i] for i in sub], {local[i]: v for i, v in measured.items()})
    if model is None:
        return None
    far = Prediction(math.nan, math.nan, math.nan, UNKNOWN_LOG_SD)
    model.predictions = [model.predictions[local[i]] if i in local else far for i in range(len(points))]
    return model


def _nearest(values: Sequence[float], x: float) -> float:
    return min(values, key=lambda v: abs(math.log(v / x)) if v > 0 and x > 0 else abs(v - x))
