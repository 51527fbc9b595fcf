"""Latency models of resources and input size, with honest held-out error.

Data is grouped by container–task pair (model × task × GPU mode, × host class when a fleet session labelled
its test boxes: another CPU is another law, unless told to pool them; and × concurrency / rate when a session
swept load levels: latency under load is another law); every fit, split and score uses one group's cells only. A *cell* is one (CPU, memory,
input size) measurement: the mean / p50 / p99 of its per-request rows, or a wide file's mean.

Candidate forms (S = input size, C = CPU cores), all fitted by least squares:

- `loglinear` (the AC-Prof reference method): log L = a + b·log S + c·log C.
- `loglog-interaction`: log L = a + b·log S + c·log C + d·log S·log C.
- `work-parallel`: L = t0 + (w0 + w1·S)·g(C), g(C) = (1 − f) + f / min(C, K): a fixed cost t0 that
  CPUs do not speed up, work linear in the input, Amdahl's law with parallel fraction f, and a knee K
  beyond which more CPU quota no longer helps (the process runs out of threads / stops being throttled).
- `piecewise-linear`: L = t0 + (w0 + w1·S + v·max(S − B, 0))·g(C): the work changes slope at a fitted
  breakpoint B (a cache spilling, a sequence length being truncated), same CPU law.

Non-log forms minimise the *relative* residual (L̂ − L)/L: latency noise grows with latency, and MAPE is
the score. Linear coefficients are solved exactly for each value of the non-linear ones (f, K, B) on a
grid, then f is polished continuously (variable projection).

Selection uses held-out error inside the training data only (cross-validation of the same kind as the
outer split), with a parsimony rule: among forms within 2% of the best CV error, the one with the fewest
parameters wins. The reported test error is nested: the whole procedure (select + fit) runs on each
outer training split and is scored on data it never saw.

Generative targets model a streamed answer's timing from its token counts: `ttft` / `ttft_p99` (the
cell's median / p99 time to first token) with S = prompt tokens, `tpot` / `tpot_p99` (time per output
token) with S = context tokens (prompt + output). The same forms, selection and validation apply.

Which split validates is chosen per group by what the model will be asked (`choose_selection`): a form
that interpolates well between CPU configurations can bend away beyond the largest input it was fitted
on, so when a prediction or recommendation lies outside the trained input range, forward validation
(fit the smaller inputs, validate on the larger) chooses the form; otherwise leave-config-out does. An
explicit split is always honoured. Every group records which validation chose its form and why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar, nnls

from tui_profiler import formatting
from tui_profiler.analysis.importers import (
    SATURATION,
    SATURATION_REASON,
    TOKEN_COLUMNS,
    fit_rows,
    read_paths,
    size_columns,
)
from tui_profiler.analysis.repetitions import repetition_rows, session_cells
from tui_profiler.session.schema import GenColumn


@dataclass(frozen=True)
class TokenTarget:
    """A generative target: which per-request value, its per-cell statistic, and its input size."""

    request_column: str  # the per-request value in requests.csv
    quantile: float  # the per-cell statistic of it
    cell_column: str  # the same statistic as cells.csv records it
    size_column: str  # PROMPT_SIZE or CONTEXT_SIZE


PROMPT_SIZE = GenColumn.PROMPT_TOKENS.value
CONTEXT_SIZE = "context_tokens"  # prompt + output tokens: what a decode step attends over
TOKEN_TARGETS: dict[str, TokenTarget] = {
    "ttft": TokenTarget(GenColumn.TTFT_S, 0.5, GenColumn.TTFT_P50_S, PROMPT_SIZE),
    "ttft_p99": TokenTarget(GenColumn.TTFT_S, 0.99, GenColumn.TTFT_P99_S, PROMPT_SIZE),
    "tpot": TokenTarget(GenColumn.TPOT_S, 0.5, GenColumn.TPOT_P50_S, CONTEXT_SIZE),
    "tpot_p99": TokenTarget(GenColumn.TPOT_S, 0.99, GenColumn.TPOT_P99_S, CONTEXT_SIZE),
}
TARGETS = ("latency_s", "p50", "p99", "throughput", "cpu", *TOKEN_TARGETS)
P99_TARGETS = ("p99", "ttft_p99", "tpot_p99")
SPLITS = ("leave-config-out", "extrapolate-input", "random")
DEFAULT_SPLIT = "leave-config-out"  # interpolation between CPU configurations: what most questions are
FORWARD_SPLIT = "extrapolate-input"  # forward validation: fit the smaller inputs, validate on the larger
VALIDATION_NAMES = {
    "leave-config-out": "leave-config-out validation",
    "extrapolate-input": "forward validation",
    "random": "random 5-fold validation",
}
GROUP_KEYS = ("model", "task", "gpu_mode", "host_class", "concurrency", "rate")
HOST_CLASS = "host_class"  # "" when the data has no label: the group key then omits it
PARSIMONY = 0.02  # forms within 2% (relative) of the best CV error count as ties; the simplest wins
_EPS = 1e-12


# ---------------------------------------------------------------------------------------------- forms


@dataclass
class Fitted:
    form: str
    params: dict[str, float]
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (size, cpus) -> target


class Form:
    name = ""
    n_params = 0

    def fit(
        self, s: np.ndarray, c: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
    ) -> Fitted:  # pragma: no cover - abstract
        """Least squares of the form through the cells (s, c, y), each residual weighted by `w` (the
        inverse of the cell's relative variance, see `cell_weights`; None: equal weights)."""
        raise NotImplementedError


def _log_design(s: np.ndarray, c: np.ndarray, interaction: bool, use_s: bool, use_c: bool) -> np.ndarray:
    cols = [np.ones_like(s)]
    if use_s:
        cols.append(np.log(s))
    if use_c:
        cols.append(np.log(c))
    if interaction and use_s and use_c:
        cols.append(np.log(s) * np.log(c))
    return np.column_stack(cols)


class LogLinear(Form):
    """log L = a + b·log S + c·log C (+ d·log S·log C)."""

    name = "loglinear"
    n_params = 3
    interaction = False

    def fit(self, s: np.ndarray, c: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> Fitted:
        # A factor with one value in the training data has no estimable effect: drop it rather than guess.
        use_s, use_c = len(np.unique(s)) > 1, len(np.unique(c)) > 1
        x = _log_design(s, c, self.interaction, use_s, use_c)
        root = _root_weights(w, len(y))  # var(log y) is the relative variance: the same weights
        beta = np.linalg.lstsq(x * root[:, None], np.log(y) * root, rcond=None)[0]
        names = ["a"] + (["b_log_size"] if use_s else []) + (["c_log_cpus"] if use_c else [])
        if self.interaction and use_s and use_c:
            names.append("d_log_size_x_log_cpus")
        params = dict.fromkeys(["a", "b_log_size", "c_log_cpus"], 0.0) | dict(
            zip(names, map(float, beta), strict=True)
        )
        interaction = self.interaction

        def predict(s2: np.ndarray, c2: np.ndarray) -> np.ndarray:
            y: np.ndarray = np.exp(
                _log_design(np.asarray(s2, float), np.asarray(c2, float), interaction, use_s, use_c) @ beta
            )
            return y

        return Fitted(self.name, params, predict)


class LogLogInteraction(LogLinear):
    name = "loglog-interaction"
    n_params = 4
    interaction = True


def _amdahl(c: np.ndarray, f: float, knee: float) -> np.ndarray:
    speedup: np.ndarray = (1.0 - f) + f / np.minimum(c, knee)
    return speedup


def _root_weights(w: np.ndarray | None, n: int) -> np.ndarray:
    """The square roots of the cells' weights (ones without weights): rows of a least-squares system
    multiplied by them minimise the weighted sum of squares."""
    root: np.ndarray = np.ones(n) if w is None else np.sqrt(np.asarray(w, float))
    return root


def _solve(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Non-negative coefficients minimising sum(w * ((x @ beta) / y - 1)^2), and that sum. Non-negative:
    costs and work never subtract, so no two terms can cancel and blow up away from the data."""
    root = _root_weights(w, len(y))
    xw = x / y[:, None] * root[:, None]
    beta, _ = nnls(xw, root)
    r = xw @ beta - root
    return beta, float(r @ r)


def _knees(c: np.ndarray) -> list[float]:
    """Knee candidates: each distinct CPU count between the smallest and the largest, and 'no knee'
    (a knee at the largest count is the same law as none)."""
    u = np.unique(c)
    return [float(k) for k in u[1:-1]] + [math.inf]


_F_GRID = np.linspace(0.0, 1.0, 11)


class _Separable(Form):
    """L = t0 + W(S)·g(C), g the Amdahl law with a knee; subclasses give the basis columns of W(S)."""

    def work_columns(self, s: np.ndarray, extra: dict[str, float]) -> list[np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _design(
        self, s: np.ndarray, c: np.ndarray, f: float, knee: float, extra: dict[str, float]
    ) -> np.ndarray:
        g = _amdahl(c, f, knee)
        return np.column_stack([np.ones_like(s)] + [w * g for w in self.work_columns(s, extra)])

    def _best_cpu_law(
        self,
        s: np.ndarray,
        c: np.ndarray,
        y: np.ndarray,
        extra: dict[str, float],
        f_grid: Iterable[float],
        w: np.ndarray | None = None,
    ) -> tuple[float, float, float]:
        """(sse, f, knee) on the grid; one CPU value in the data means no CPU law (f = 0)."""
        if len(np.unique(c)) < 2:
            return _solve(self._design(s, c, 0.0, math.inf, extra), y, w)[1], 0.0, math.inf
        best = (math.inf, 0.0, math.inf)
        for knee in _knees(c):
            for f in f_grid:
                sse = _solve(self._design(s, c, f, knee, extra), y, w)[1]
                if sse < best[0]:
                    best = (sse, float(f), knee)
        return best

    def _polish_f(
        self,
        s: np.ndarray,
        c: np.ndarray,
        y: np.ndarray,
        extra: dict[str, float],
        f0: float,
        knee: float,
        w: np.ndarray | None = None,
    ) -> float:
        if len(np.unique(c)) < 2:
            return 0.0
        lo, hi = max(0.0, f0 - 0.1), min(1.0, f0 + 0.1)
        res = minimize_scalar(
            lambda f: _solve(self._design(s, c, f, knee, extra), y, w)[1],
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-3},
        )
        return float(res.x)

    def _finish(
        self,
        s: np.ndarray,
        c: np.ndarray,
        y: np.ndarray,
        extra: dict[str, float],
        f: float,
        knee: float,
        scale: float,
        names: Sequence[str],
        w: np.ndarray | None = None,
    ) -> Fitted:
        beta, _ = _solve(self._design(s, c, f, knee, extra), y, w)
        params = {"t0": float(beta[0])}
        for name, b in zip(names, beta[1:], strict=True):
            # Report per-unit coefficients in the original size unit (the fit ran on S / scale).
            params[name] = float(b) / scale if "per_size" in name else float(b)
        params |= {"parallel_fraction_f": f, "knee_cpus": knee}
        params |= {k: v * scale for k, v in extra.items()}
        design = self._design

        def predict(s2: np.ndarray, c2: np.ndarray) -> np.ndarray:
            x = design(np.asarray(s2, float) / scale, np.asarray(c2, float), f, knee, extra)
            y: np.ndarray = np.maximum(x @ beta, _EPS)
            return y

        return Fitted(self.name, params, predict)


class WorkParallel(_Separable):
    """L = t0 + (w0 + w1·S)·((1 − f) + f / min(C, K))."""

    name = "work-parallel"
    n_params = 5

    def work_columns(self, s: np.ndarray, extra: dict[str, float]) -> list[np.ndarray]:
        return [np.ones_like(s), s]

    def fit(self, s: np.ndarray, c: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> Fitted:
        scale = float(np.max(s)) or 1.0
        ss = s / scale
        _, f, knee = self._best_cpu_law(ss, c, y, {}, _F_GRID, w)
        f = self._polish_f(ss, c, y, {}, f, knee, w)
        return self._finish(ss, c, y, {}, f, knee, scale, ["w0", "w1_per_size"], w)


class PiecewiseLinear(_Separable):
    """L = t0 + (w0 + w1·min(S, B) + w2·max(S − B, 0))·g(C), one fitted breakpoint B.

    The hinge basis with non-negative slopes keeps the work non-decreasing in the input (more pixels or
    tokens never cost less), and every coefficient non-negative, so no two terms can cancel each other
    and blow up at a CPU count the fit has not seen."""

    name = "piecewise-linear"
    n_params = 7

    def work_columns(self, s: np.ndarray, extra: dict[str, float]) -> list[np.ndarray]:
        b = extra["breakpoint"]
        return [np.ones_like(s), np.minimum(s, b), np.maximum(s - b, 0.0)]

    def fit(self, s: np.ndarray, c: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> Fitted:
        scale = float(np.max(s)) or 1.0
        ss = s / scale
        sizes = np.unique(ss)
        # Two distinct sizes at least on each side, so each segment's slope is measured, not implied.
        candidates = sizes[1:-2]
        if len(candidates) == 0:
            raise ValueError("piecewise-linear needs at least 4 distinct input sizes")
        # Alternate once: CPU law at a middle breakpoint, breakpoint given that law, CPU law again.
        extra = {"breakpoint": float(candidates[len(candidates) // 2])}
        _, f, knee = self._best_cpu_law(ss, c, y, extra, _F_GRID[::2], w)
        best = (math.inf, extra["breakpoint"])
        for b in candidates:
            sse = _solve(self._design(ss, c, f, knee, {"breakpoint": float(b)}), y, w)[1]
            if sse < best[0]:
                best = (sse, float(b))
        extra = {"breakpoint": best[1]}
        _, f, knee = self._best_cpu_law(ss, c, y, extra, _F_GRID, w)
        f = self._polish_f(ss, c, y, extra, f, knee, w)
        return self._finish(
            ss, c, y, extra, f, knee, scale, ["w0", "w1_per_size_below_B", "w2_per_size_above_B"], w
        )


FORMS: dict[str, Form] = {
    f.name: f for f in (LogLinear(), LogLogInteraction(), WorkParallel(), PiecewiseLinear())
}


_CPU_PARAMS = {"loglinear": 1, "loglog-interaction": 2, "work-parallel": 3, "piecewise-linear": 3}


def _min_cells(form: Form, s: np.ndarray, c: np.ndarray) -> bool:
    """Whether the data can support the form: more cells than the parameters it can estimate. With one
    CPU value the CPU law is not fitted (and t0, w0 merge), so those parameters do not count."""
    if form.name == "piecewise-linear" and len(np.unique(s)) < 4:
        return False
    n_params = form.n_params - (_CPU_PARAMS[form.name] if len(np.unique(c)) < 2 else 0)
    return len(s) > n_params


def form_supported(name: str, s: np.ndarray, c: np.ndarray) -> bool:
    """Whether form `name` can be fitted to cells of sizes `s` and CPUs `c` (more cells than the parameters
    it can estimate; the adaptive plan asks before each held-out fit)."""
    return _min_cells(FORMS[name], s, c)


# ----------------------------------------------------------------------------------------- metrics


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    y, p = np.asarray(y, float), np.asarray(p, float)
    if len(y) == 0:
        return {"n": 0, "r2": math.nan, "mae": math.nan, "mape_pct": math.nan}
    ss_res = float(np.sum((y - p) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "n": len(y),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan,
        "mae": float(np.mean(np.abs(y - p))),
        "mape_pct": float(np.mean(np.abs(p - y) / y) * 100.0),
    }


def _mape(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(p - y) / y) * 100.0)


# ------------------------------------------------------------------------------------------ splits


def _config_ids(cells: pd.DataFrame) -> np.ndarray:
    return np.array([f"{c:g}/{m:g}" for c, m in zip(cells["cpu_cores"], cells["mem_cap_gb"], strict=True)])


def split_folds(
    cells: pd.DataFrame, split: str, *, seed: int = 0, max_folds: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_index, test_index) pairs of one group's cells for a split kind; [] when impossible."""
    n = len(cells)
    idx = np.arange(n)
    if split == "leave-config-out":
        cfg = _config_ids(cells)
        configs = list(dict.fromkeys(cfg))
        if len(configs) < 2:
            return []
        if max_folds and len(configs) > max_folds:  # bundle configs into folds (inner CV stays cheap)
            fold_of = {k: i % max_folds for i, k in enumerate(configs)}
            labels = np.array([fold_of[k] for k in cfg])
            return [(idx[labels != f], idx[labels == f]) for f in range(max_folds)]
        return [(idx[cfg != k], idx[cfg == k]) for k in configs]
    if split == "extrapolate-input":
        size = cells["size"].to_numpy()
        sizes = np.unique(size)
        if len(sizes) < 4:
            return []
        n_train = max(2, round(0.75 * len(sizes)))
        cut = sizes[n_train - 1]
        return [(idx[size <= cut], idx[size > cut])]
    if split == "random":
        k = min(5, n)
        if k < 2:
            return []
        order = np.random.default_rng(seed).permutation(n)
        return [(np.sort(np.setdiff1d(idx, part)), np.sort(part)) for part in np.array_split(order, k)]
    raise ValueError(f"split: {split!r} — allowed: {', '.join(SPLITS)}")


def inner_validation(cells: pd.DataFrame, split: str) -> tuple[str, str, list[tuple[np.ndarray, np.ndarray]]]:
    """Validation folds inside a training set, of the same kind as the outer split where the data allows:
    (the split kind actually used, why the asked-for kind was impossible or "", folds)."""
    if split == "leave-config-out":
        if cells["cpu_cores"].nunique() >= 3:
            return split, "", split_folds(cells, split, max_folds=6)
        # with two CPU values, every inner training part would hold one: no CPU law could be tested
        why = f"leave-config-out needs at least 3 CPU counts, this group has {cells['cpu_cores'].nunique()}"
        return "random", why, split_folds(cells, "random")
    if split == "extrapolate-input":
        # Forward validation from two origins: fit the smaller sizes, validate on the larger ones.
        size = cells["size"].to_numpy()
        sizes = np.unique(size)
        idx = np.arange(len(cells))
        folds = []
        for frac in (0.6, 0.75):
            n_train = round(frac * len(sizes))
            if 3 <= n_train < len(sizes):
                cut = sizes[n_train - 1]
                folds.append((idx[size <= cut], idx[size > cut]))
        if folds:
            return split, "", folds
        why = f"forward validation needs at least 4 distinct input sizes, this group has {len(sizes)}"
        return "random", why, split_folds(cells, "random")
    return "random", "", split_folds(cells, "random")


def _inner_folds(cells: pd.DataFrame, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    return inner_validation(cells, split)[2]


# --------------------------------------------------------------------------------------- selection


def _xy(cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return cells["size"].to_numpy(float), cells["cpu_cores"].to_numpy(float), cells["y"].to_numpy(float)


def _weights(cells: pd.DataFrame) -> np.ndarray:
    """The cells' fit weights (`cell_weights`), ones where none were set."""
    if "weight" in cells:
        w: np.ndarray = cells["weight"].to_numpy(float)
        return w
    return np.ones(len(cells))


# ------------------------------------------------------------------------ each cell's uncertainty

Z95 = 1.959963984540054  # a 95% interval's half-width in standard errors (normal approximation)
MIN_REL_SD = 1e-3  # a cell's relative standard error is taken as at least 0.1%: no cell weighs infinitely


def rel_sd(y: float, lo: float | None, hi: float | None) -> float | None:
    """A cell's relative standard error from its 95% interval: the larger half-width over the estimate,
    over 1.96; None when a side is not bounded (or the estimate is not positive)."""
    if lo is None or hi is None or not (y > 0) or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return max(max(hi - y, y - lo) / (Z95 * y), MIN_REL_SD)


def cell_weights(
    y: Sequence[float], lo: Sequence[float | None], hi: Sequence[float | None], n: Sequence[float]
) -> tuple[np.ndarray, str]:
    """Each cell's weight in the fit, 1 / its relative variance (every form minimises relative or log
    residuals, whose variance is the relative variance of the cell's statistic), scaled to a mean of 1;
    and how they were set: 'intervals' (every cell's interval is bounded), 'intervals and request counts'
    (a cell without a bounded interval gets the variance its request count implies at the group's typical
    variance per request, the median of variance × requests over the cells that have one), or 'request
    counts' (no cell has one: weights proportional to the requests, as the statistic's variance goes)."""
    sds = [rel_sd(float(v), a, b) for v, a, b in zip(y, lo, hi, strict=True)]
    counts = np.maximum(np.asarray(n, float), 1.0)
    known = [(sd, k) for sd, k in zip(sds, counts, strict=True) if sd is not None]
    if not known:
        variance = 1.0 / counts
        how = "request counts"
    else:
        per_request = float(np.median([sd**2 * k for sd, k in known]))
        variance = np.array(
            [sd**2 if sd is not None else per_request / k for sd, k in zip(sds, counts, strict=True)]
        )
        how = "intervals" if len(known) == len(sds) else "intervals and request counts"
    w = 1.0 / variance
    weights: np.ndarray = w / w.mean()
    return weights, how


def noise(y: Sequence[float], lo: Sequence[float | None], hi: Sequence[float | None]) -> dict[str, Any]:
    """The measurement noise of a group's cells: the median relative distance from each cell's statistic
    to its lower and to its upper 95% bound (None for a side no cell bounds), and how many cells bound
    both sides."""

    def median_of(values: list[float]) -> float | None:
        return float(np.median(values)) if values else None

    below = [(v - a) / v for v, a in zip(y, lo, strict=True) if a is not None and math.isfinite(a) and v > 0]
    above = [(b - v) / v for v, b in zip(y, hi, strict=True) if b is not None and math.isfinite(b) and v > 0]
    both = sum(
        1
        for a, b in zip(lo, hi, strict=True)
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
    )
    return {
        "rel_below": median_of(below),
        "rel_above": median_of(above),
        "cells_bounded": both,
        "cells": len(y),
    }


def cv_scores(cells: pd.DataFrame, split: str, forms: Sequence[str] | None = None) -> dict[str, float]:
    """Pooled validation MAPE of each form on folds inside `cells` (NaN when it cannot be fitted)."""
    forms = list(forms or FORMS)
    folds = _inner_folds(cells, split)
    s, c, y = _xy(cells)
    w = _weights(cells)
    scores: dict[str, float] = {}
    for name in forms:
        form = FORMS[name]
        ys, ps = [], []
        try:
            for tr, te in folds:
                if not _min_cells(form, s[tr], c[tr]):
                    raise ValueError("too few cells")
                fitted = form.fit(s[tr], c[tr], y[tr], w[tr])
                ys.append(y[te])
                ps.append(fitted.predict(s[te], c[te]))
        except (ValueError, np.linalg.LinAlgError):
            scores[name] = math.nan
            continue
        scores[name] = _mape(np.concatenate(ys), np.concatenate(ps)) if ys else math.nan
    return scores


def select_form(scores: dict[str, float]) -> str:
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    if not finite:
        return "loglinear"
    best = min(finite.values())
    tied = [k for k, v in finite.items() if v <= best * (1 + PARSIMONY) + 1e-12]
    return min(tied, key=lambda k: (FORMS[k].n_params, finite[k]))


def fit_selected(cells: pd.DataFrame, split: str) -> tuple[Fitted, dict[str, float]]:
    scores = cv_scores(cells, split)
    name = select_form(scores)
    s, c, y = _xy(cells)
    form = FORMS[name]
    if not _min_cells(form, s, c):
        form = FORMS["loglinear"]
    return form.fit(s, c, y, _weights(cells)), scores


# ------------------------------------------------------------------------- which validation selects


@dataclass(frozen=True)
class Query:
    """A point the fitted model will be asked about, known before fitting so that the validation can be
    matched to it. `point` names the group fields it gives (model, task, gpu_mode, host_class, concurrency, rate;
    absent ones match every group) and its input size under the size column's name, or as `size` in
    whatever unit the group's data uses."""

    origin: str  # "prediction row" or "recommendation"
    point: Mapping[str, Any]


def prediction_queries(points: pd.DataFrame) -> list[Query]:
    """The rows of a prediction table as queries (GPU mode 'off' where not given, as `predict` reads it)."""
    out = []
    for _, row in points.iterrows():
        point = row.to_dict()
        if not _given(point.get("gpu_mode")):
            point["gpu_mode"] = "off"
        out.append(Query("prediction row", point))
    return out


def recommendation_query(
    size: float, size_column: str | None = None, model: str | None = None, host_class: str | None = None
) -> Query:
    """A recommendation's input size; it is asked of every GPU mode of the model (of one host class)."""
    point: dict[str, Any] = {size_column or "size": size}
    if model:
        point["model"] = model
    if host_class:
        point[HOST_CLASS] = host_class
    return Query("recommendation", point)


@dataclass(frozen=True)
class Selection:
    """Which validation chose a group's form and why.

    `split` is the split of the selection and of the nested held-out test; `validated_by` the kind the
    inner validation could actually use (it differs when the data cannot support `split`, e.g. fewer than
    4 input sizes for forward validation)."""

    split: str
    validated_by: str
    requested: str | None  # the split the user gave, None when chosen from the queries
    reason: str
    n_queries: int = 0  # queries that belong to this group
    n_outside: int = 0  # of those, how many lie outside the trained input range

    @property
    def line(self) -> str:
        return f"form chosen by {VALIDATION_NAMES[self.validated_by]}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen_by": self.validated_by,
            "chosen_by_name": VALIDATION_NAMES[self.validated_by],
            "split": self.split,
            "split_requested": self.requested,
            "reason": self.reason,
            "queries": self.n_queries,
            "queries_outside_trained_input": self.n_outside,
        }


def _given(v: Any) -> bool:
    return v is not None and str(v) != "" and not (isinstance(v, float) and math.isnan(v))


def _matches(key: Mapping[str, Any], point: Mapping[str, Any]) -> bool:
    """Whether a point belongs to the group with this key (fields the point does not give match)."""
    if _given(point.get("gpu_mode")):
        try:
            if _gpu_word(point["gpu_mode"]) != key["gpu_mode"]:
                return False
        except ValueError:
            return False
    for field_name in ("model", "task"):
        want = point.get(field_name)
        if _given(want) and str(want) != str(key[field_name]):
            return False
    want = point.get(HOST_CLASS)
    if _given(want) and str(want) != key.get(HOST_CLASS, ""):
        return False
    for load in ("concurrency", "rate"):
        want = point.get(load)
        if want is not None and _given(want) and key.get(load) not in (None, float(want)):
            return False
    return True


def _query_size(point: Mapping[str, Any], size_column: str) -> float | None:
    if size_column in (PROMPT_SIZE, CONTEXT_SIZE):
        return token_size(size_column, point)
    return _first_number(point, size_column, "size")


def _first_number(point: Mapping[str, Any], *names: str) -> float | None:
    """The first of `names` that `point` gives, as a number; None when none is given or it is not a number."""
    for name in names:
        raw = point.get(name)
        if raw is not None and _given(raw):
            try:
                return float(raw)
            except (TypeError, ValueError):
                return None
    return None


def _counted(n: int, total: int, queries: Sequence[Query], only: str = "") -> str:
    """'3 of 5 prediction rows', 'the recommendation (pixels 9e5)', '2 of 4 points asked (3 prediction
    rows, 1 recommendation)'; `only`: what to say of a single query."""
    by_origin = {o: sum(q.origin == o for q in queries) for o in dict.fromkeys(q.origin for q in queries)}
    if total == 1:
        return f"the {next(iter(by_origin))}" + (f" ({only})" if only else "")
    if len(by_origin) == 1:
        noun = f"{next(iter(by_origin))}s"
    else:
        noun = "points asked (" + ", ".join(f"{k} {o}{'s' * (k > 1)}" for o, k in by_origin.items()) + ")"
    return f"all {total} {noun}" if n == total else f"{n} of {total} {noun}"


def choose_selection(cells: pd.DataFrame, split: str | None, queries: Sequence[Query] = ()) -> Selection:
    """The split that chooses one group's form: `split` when the user gave one; otherwise forward
    validation when a query lies outside the group's trained input range (and the data has enough input
    sizes for it), else the default leave-config-out. The reason says which queries decided."""
    key = _group_key(cells)
    size_column = str(cells["size_column"].iloc[0]) or None
    mine = [q for q in queries if _matches(key, q.point)]
    outside_note = ""
    above: list[float] = []
    below: list[float] = []
    lo = hi = math.nan
    if size_column:
        lo, hi = float(cells["size"].min()), float(cells["size"].max())
        sizes = [v for v in (_query_size(q.point, size_column) for q in mine) if v is not None]
        above = [v for v in sizes if v > hi * (1 + 1e-9)]
        below = [v for v in sizes if v < lo * (1 - 1e-9)]
        verb = "lies" if len(mine) == 1 else "lie"
        parts = []
        if above:
            who = _counted(len(above), len(mine), mine, f"{size_column} {above[0]:g}")
            parts.append(f"{who} {verb} beyond the largest trained input ({size_column} {hi:g})")
        if below:
            who = _counted(len(below), len(mine), mine, f"{size_column} {below[0]:g}")
            parts.append(f"{who} {verb} below the smallest trained input ({size_column} {lo:g})")
            if not above:  # say what forward validation does and does not check
                parts[-1] += " (the nearest check there is: forward validation tests extrapolation upward)"
        outside_note = "; ".join(parts)
    n_outside = len(above) + len(below)

    def made(chosen: str, requested: str | None, reason: str) -> Selection:
        used, why_not, _ = inner_validation(cells, chosen)
        if why_not:
            reason += f" ({why_not}: {VALIDATION_NAMES[used]} instead)"
        return Selection(chosen, used, requested, reason, len(mine), n_outside)

    if split is not None:
        reason = f"--split {split}, as given"
        if n_outside and split != FORWARD_SPLIT:
            reason += f"; note {outside_note}: without --split, forward validation would choose the form"
        return made(split, split, reason)
    if n_outside:
        forward, why_not, _ = inner_validation(cells, FORWARD_SPLIT)
        if forward == FORWARD_SPLIT:
            return made(FORWARD_SPLIT, None, outside_note)
        return made(DEFAULT_SPLIT, None, f"the default; {outside_note}, but {why_not}")
    if mine:
        inside = f" ({size_column} {lo:g}..{hi:g})" if size_column else ""
        noun = _counted(len(mine), len(mine), mine)
        verb = "lies" if len(mine) == 1 else "lie"
        return made(DEFAULT_SPLIT, None, f"the default; {noun} {verb} inside the trained input range{inside}")
    return made(DEFAULT_SPLIT, None, "the default; no prediction or recommendation asked of this group")


# ------------------------------------------------------------------------------------------ report


@dataclass
class GroupFit:
    key: dict[str, Any]
    size_column: str | None
    target: str
    split: str
    n_cells: int
    n_rows: int
    ranges: dict[str, tuple[float, float]]
    fitted: Fitted
    cv_scores: dict[str, float]
    train: dict[str, float]
    test: dict[str, float]
    test_by_form: dict[str, float]  # each form's outer held-out MAPE without selection (for comparison)
    chosen_per_fold: list[str]
    worst: list[dict[str, Any]]
    residuals: list[tuple[float, float]]  # (input size, relative residual %) on held-out cells
    selection: Selection
    caveats: list[str] = field(default_factory=list)
    weighting: str = "request counts"  # how the cells were weighted (`cell_weights`)
    noise: dict[str, Any] = field(default_factory=dict)  # the cells' measurement noise (`noise`)

    @property
    def label(self) -> str:
        parts = [str(self.key["model"]), str(self.key["task"]) or "-", f"gpu={self.key['gpu_mode']}"]
        if self.key.get(HOST_CLASS):
            parts.append(f"host_class={self.key[HOST_CLASS]}")
        for load in ("concurrency", "rate"):
            if self.key.get(load) is not None:
                parts.append(f"{load}={self.key[load]:g}")
        return " × ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.key,
            "size_column": self.size_column,
            "n_cells": self.n_cells,
            "n_rows": self.n_rows,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "form": self.fitted.form,
            "form_selection": self.selection.to_dict(),
            "params": self.fitted.params,
            "cv_mape_pct": self.cv_scores,
            "train": self.train,
            "test": self.test,
            "test_mape_pct_by_form": self.test_by_form,
            "chosen_per_fold": self.chosen_per_fold,
            "worst_residuals": self.worst,
            "caveats": self.caveats,
            "weighting": self.weighting,
            "noise": self.noise,
        }


def json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def predicted_column(target: str) -> str:
    if target in TOKEN_TARGETS:
        return f"predicted_{target}_s"
    return {
        "latency_s": "predicted_latency_s",
        "p50": "predicted_p50_s",
        "p99": "predicted_p99_s",
        "throughput": "predicted_throughput_rps",
        "cpu": "predicted_cpu_s",
    }[target]


def token_size(size_column: str, point: Mapping[str, Any]) -> float | None:
    """A point's prompt or context tokens, from what it gives: `prompt_tokens` (or the prompt length
    asked, `token_len`), plus `output_tokens` (or `output_len`) for the context. None when missing."""

    def first(*names: str) -> float | None:
        return _first_number(point, *names)

    if size_column == PROMPT_SIZE:
        return first(PROMPT_SIZE, "token_len", "size")
    if size_column == CONTEXT_SIZE:
        context = first(CONTEXT_SIZE, "size")
        if context is not None:
            return context
        prompt = first(PROMPT_SIZE, "token_len")
        output = first(GenColumn.OUTPUT_TOKENS, GenColumn.OUTPUT_LEN)
        return None if prompt is None or output is None else prompt + output
    return None


@dataclass
class FitReport:
    target: str
    split: str  # the split the user gave, or "auto": chosen per group from what is predicted
    groups: list[GroupFit]
    sources: list[str]
    has_requests: bool  # per-request rows were available (p50/p99 come from real distributions)
    excluded: list[dict[str, Any]] = field(default_factory=list)  # cells left out (`leave_out_saturated`)
    repetitions: list[dict[str, Any]] = field(default_factory=list)  # `analysis.repetitions` rows

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = json_safe(
            {
                "target": self.target,
                "split": self.split,
                "sources": self.sources,
                "has_requests": self.has_requests,
                "groups": [g.to_dict() for g in self.groups],
                "excluded_cells": {
                    "count": len(self.excluded),
                    "why": excluded_line(self.excluded),
                    "cells": self.excluded,
                },
                "repetitions": self.repetitions,
            }
        )
        return out

    def summary_lines(self) -> list[str]:
        how = (
            f"split {self.split}"
            if self.split != "auto"
            else "validation chosen per group from what is predicted (no --split)"
        )
        lines = [f"target {self.target}, {how}, {len(self.groups)} group(s)"]
        if self.excluded:
            lines.append(excluded_line(self.excluded))
        if self.target == "cpu":  # CPU-seconds per request are the cores each request per second keeps busy
            lines.append(
                "cpu: the target's CPU-seconds per request = cores per request/s (a prediction of 0.05"
            )
            lines.append("  means 20 requests/s keep one core busy)")
        for g in self.groups:
            lines.append(f"{g.label}: {g.n_cells} cells from {g.n_rows} rows, size={g.size_column or '-'}")
            lines.append(f"  {_weighting_line(g)}")
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in g.fitted.params.items())
            lines.append(f"  form {g.fitted.form}: {params}")
            lines.append(f"  {g.selection.line}")
            cv = ", ".join(f"{k} {_pct(v)}" for k, v in g.cv_scores.items())
            lines.append(f"  CV MAPE (selection): {cv}")
            lines.append(
                f"  train: R² {_fmt(g.train['r2'])}, MAE {_fmt(g.train['mae'])}, MAPE {_pct(g.train['mape_pct'])}"
            )
            if g.test["n"]:
                lines.append(
                    f"  test ({g.split}, n={g.test['n']}): R² {_fmt(g.test['r2'])}, MAE {_fmt(g.test['mae'])}, "
                    f"MAPE {_pct(g.test['mape_pct'])}   [each form alone: "
                    + ", ".join(f"{k} {_pct(v)}" for k, v in g.test_by_form.items())
                    + "]"
                )
            else:
                lines.append(f"  test ({g.split}): not possible for this group")
            for w in g.worst[:3]:
                lines.append(
                    f"  worst: cpus={w['cpu_cores']:g} mem={_fmt(w['mem_cap_gb'])} size={w['size']:g}: "
                    f"actual {w['actual']:.4g}, predicted {w['predicted']:.4g} ({w['error_pct']:+.1f}%)"
                )
            for cav in g.caveats:
                lines.append(f"  note: {cav}")
        lines += repetition_lines(self.repetitions)
        return lines

    def group_for(self, point: dict[str, Any]) -> GroupFit:
        """The group a prediction point belongs to (model/task given or unambiguous; GPU mode must match)."""
        gpu = _gpu_word(point.get("gpu_mode", "off"))
        cands = [g for g in self.groups if _matches(g.key, {**point, "gpu_mode": gpu})]
        fitted_classes = sorted({str(g.key.get(HOST_CLASS, "")) for g in self.groups})
        asked_class = point.get(HOST_CLASS)
        if not cands and _given(asked_class) and str(asked_class) not in fitted_classes:
            fitted = (
                ", ".join(c for c in fitted_classes if c) or "none: the data has no labels, or --pool-hosts"
            )
            raise ValueError(f"host_class: no fitted group for host_class={asked_class} (fitted: {fitted})")
        if not cands:
            raise ValueError(
                f"gpu_mode: no fitted group for gpu_mode={gpu}"
                + (f", model={point.get('model')}" if point.get("model") else "")
            )
        models = sorted({g.label for g in cands})
        classes = sorted({str(g.key.get(HOST_CLASS, "")) for g in cands})
        if len(cands) > 1 and len(classes) > 1:
            raise ValueError(
                f"host_class: groups of several host classes match ({', '.join(classes)}): give host_class"
            )
        if len(cands) > 1:
            raise ValueError(f"model: several fitted groups match ({'; '.join(models)}): name the model")
        return cands[0]

    def predict(self, points: pd.DataFrame) -> pd.DataFrame:
        """points (cpu_cores, gpu_mode, pixels or token_len, optional mem_cap_gb/model/task) plus the prediction
        column and a `warning` column (empty, or why the point lies outside the trained range)."""
        out = points.copy()
        preds, warns, forms, chosen_by, because = [], [], [], [], []
        for _, row in points.iterrows():
            point = row.to_dict()
            g = self.group_for(point)
            value, warning = predict_point(g, point)
            preds.append(value)
            warns.append(warning)
            forms.append(g.fitted.form)
            chosen_by.append(g.selection.validated_by)
            because.append(g.selection.reason)
        out[predicted_column(self.target)] = preds
        out["form"] = forms
        out["form_chosen_by"] = chosen_by  # the split whose validation chose the form
        out["form_chosen_because"] = because
        out["warning"] = warns
        return out


def _gpu_word(v: Any) -> str:
    s = str(v).strip().lower()
    if s in {"on", "true", "yes", "gpu", "1", "1.0"}:
        return "on"
    if s in {"off", "false", "no", "0", "0.0", "none", "nan", ""}:
        return "off"
    try:
        return "on" if float(s) > 0 else "off"
    except ValueError:
        raise ValueError(f"gpu_mode: {v!r} — allowed: on, off, or a GPU count") from None


def predict_point(g: GroupFit, point: dict[str, Any]) -> tuple[float, str]:
    try:
        cpus = float(point["cpu_cores"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"cpu_cores: {point.get('cpu_cores')!r} — a positive number is required") from None
    if not cpus > 0:
        raise ValueError(f"cpu_cores: {cpus:g} — must be > 0")
    size = 1.0
    if g.size_column:
        raw = point.get(g.size_column)
        if g.size_column in (PROMPT_SIZE, CONTEXT_SIZE):
            raw = token_size(g.size_column, point)
        if raw is None or pd.isna(raw):
            hint = " (or token_len and output_len)" if g.size_column == CONTEXT_SIZE else ""
            raise ValueError(
                f"{g.size_column}: missing — the {g.label} model is a function of {g.size_column}{hint}"
            )
        size = float(raw)
        if not size > 0:
            raise ValueError(f"{g.size_column}: {size:g} — must be > 0")
    value = float(g.fitted.predict(np.array([size]), np.array([cpus]))[0])
    if g.target == "throughput":
        value = 1.0 / value
    outside = []
    checks = [("cpu_cores", cpus)]
    if g.size_column:
        checks.append((g.size_column, size))
    mem = point.get("mem_cap_gb")
    if mem is not None and not pd.isna(mem) and "mem_cap_gb" in g.ranges:
        checks.append(("mem_cap_gb", float(mem)))
    for name, v in checks:
        lo, hi = g.ranges[name]
        if v < lo - 1e-9 or v > hi + 1e-9:
            outside.append(f"{name}={v:g} outside trained {lo:g}..{hi:g}")
    return value, "; ".join(outside)


def _weighting_line(g: GroupFit) -> str:
    """How the group's cells were weighted, and the noise their intervals imply beside the fit's error."""
    noise_ = g.noise
    below, above = noise_.get("rel_below"), noise_.get("rel_above")

    def side(sign: str, value: float | None) -> str:
        return f"{sign}{value * 100:.3g}%" if value is not None else f"{sign}{formatting.UNBOUNDED}"

    sides = f"{side('-', below)} / {side('+', above)}"
    return (
        f"weights: by {g.weighting}; measurement noise (median of the cells' 95% intervals): {sides}, "
        f"{noise_.get('cells_bounded', 0)} of {noise_.get('cells', g.n_cells)} cells bounded"
    )


def repetition_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The spread between repetitions, one line per configuration (`analysis.repetitions`)."""
    if not rows:
        return []
    lines = [f"repetitions: {len(rows)} configuration(s) measured more than once"]
    for r in rows:
        where = ", ".join(
            f"{k}={_fmt(r[k])}"
            for k in ("cpu_cores", "mem_cap_gb", "input_scale", "token_len", "concurrency", "rate")
            if r.get(k) not in (None, "")
        )
        median = r.get("p50_median_s")
        lo, hi = r.get("p50_median_lo_s"), r.get("p50_median_hi_s")
        cv = r.get("p50_cv")
        disagree = r.get("disagree")
        verdict = (
            "agreement not judged (no intervals)"
            if disagree is None
            else "DISAGREE beyond their intervals"
            if disagree
            else "agree within their intervals"
        )
        marked = f" (cells {r['disagree_cells']})" if r.get("disagree_cells") else ""
        lines.append(
            f"  {where}: {r['repetitions']} repetitions, p50 median "
            f"{formatting.latency_interval(median, lo, hi)}, CV {_pct(float(cv) * 100) if cv is not None else 'n/a'}: "
            f"{verdict}{marked}"
        )
    return lines


def _pct(v: float) -> str:
    return f"{v:.4g}%" if math.isfinite(v) else "n/a"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf" if v == math.inf else "n/a"
        return f"{v:.4g}"
    return str(v)


# ------------------------------------------------------------------------------------------ driver


def build_cells(rows: pd.DataFrame, target: str) -> tuple[pd.DataFrame, bool]:
    """One row per (group, config, input size) with the target value `y` (for throughput: seconds per
    request, inverted back on prediction). Returns the cells and whether per-request rows were used."""
    if target not in TARGETS:
        raise ValueError(f"target: {target!r} — allowed: {', '.join(TARGETS)}")
    if target in TOKEN_TARGETS:
        return _token_cells(rows, TOKEN_TARGETS[target])
    rows = host_class_rows(rows)
    named_sizes = size_columns(rows)
    rows["size_column"] = ""
    rows["size"] = np.nan
    for col in reversed(named_sizes):  # the first named size a row has wins
        has = rows[col].notna()
        rows.loc[has, "size_column"] = col
        rows.loc[has, "size"] = rows.loc[has, col].astype(float)
    rows["size"] = rows["size"].fillna(1.0)  # no input size recorded: one size, no size effect
    keys = [*GROUP_KEYS, "size_column", "cpu_cores", "mem_cap_gb", "size"]
    for col in ("mem_cap_gb", "concurrency", "rate"):  # groupby drops NaN keys; -1 = not recorded
        rows[col] = rows[col].astype(float).fillna(-1.0)
    is_request = rows["row_kind"] == "request"
    has_requests = bool(is_request.any())
    parts = []
    if target == "cpu":  # CPU-seconds per request: the mean of requests.csv cpu_ms (cells.csv cpu_ms_mean)
        rows = rows.assign(latency_s=rows["cpu_ms"] / 1000.0, _cpu_cell_s=rows["cpu_ms_mean"] / 1000.0)
        rows = rows[rows["latency_s"].notna() | (~is_request & rows["_cpu_cell_s"].notna())]
        is_request = rows["row_kind"] == "request"
        has_requests = bool(is_request.any())
        if rows.empty:
            raise ValueError("target cpu: no rows carry cpu_ms (requests.csv) or cpu_ms_mean (cells.csv)")
    if has_requests:
        lat = rows[is_request].groupby(keys, sort=True)["latency_s"]
        if target in ("latency_s", "cpu"):
            y = lat.mean()
        elif target == "p50":
            y = lat.median()
        elif target == "p99":
            y = lat.quantile(0.99)  # linear interpolation, as numpy.percentile
        else:  # throughput: closed loop, `concurrency` workers each sending back to back
            conc = lat.mean().index.get_level_values("concurrency").to_numpy(float)
            y = lat.mean() / np.maximum(conc, 1.0)
        statistic = _STATISTIC.get(target)
        part = pd.DataFrame({"y": y, "n_rows": lat.size()})
        parts.append(part.join(_request_bounds(lat, statistic)))
    if not is_request.all():
        col = {
            "latency_s": "latency_s",
            "p50": "p50_s",
            "p99": "p99_s",
            "throughput": "throughput_rps",
            "cpu": "_cpu_cell_s",
        }[target]
        agg = rows[~is_request].copy()
        vals = agg[col].astype(float)
        agg["_v"] = 1.0 / vals if target == "throughput" else vals
        agg = agg[np.isfinite(agg["_v"]) & (agg["_v"] > 0)]
        bound_columns = CELL_BOUNDS.get(target)
        for side, column in zip(("lo", "hi"), bound_columns or (None, None), strict=True):
            agg[side] = agg[column].astype(float) if column and column in agg else np.nan
        grouped = agg.groupby(keys, sort=True)
        part = pd.DataFrame(
            {
                "y": grouped["_v"].mean(),
                "n_rows": grouped.size(),
                "lo": grouped["lo"].mean(),
                "hi": grouped["hi"].mean(),
                "n_requests": grouped["n_requests"].sum(min_count=1),
            }
        )
        if parts:  # a cell with per-request rows is measured from them, not from a summary of them
            part = part[~part.index.isin(parts[0].index)]
        parts.append(part)
    cells = pd.concat(parts).reset_index() if parts else pd.DataFrame(columns=[*keys, "y", "n_rows"])
    for col in ("mem_cap_gb", "concurrency", "rate"):
        cells[col] = cells[col].replace(-1.0, np.nan)
    return cells, has_requests


# each per-request target's per-cell statistic whose interval `_request_bounds` computes
_STATISTIC: dict[str, str | float] = {"latency_s": "mean", "p50": 0.5, "p99": 0.99, "cpu": "mean"}
# cells.csv's 95% interval of each target's statistic (a session before intervals has none: NaN)
CELL_BOUNDS: dict[str, tuple[str, str]] = {
    "latency_s": ("ci95_low_s", "ci95_high_s"),
    "p50": ("p50_lo_s", "p50_hi_s"),
    "p99": ("p99_lo_s", "p99_hi_s"),
}


def _request_bounds(grouped: Any, statistic: str | float | None) -> pd.DataFrame:
    """Each cell's 95% interval of its statistic from its per-request values (in the order they finished):
    the mean's by Student's t, a percentile's by `stats.quantile_interval` (order statistics at the
    sample's effective size); `lo`, `hi` NaN where not bounded, or for a statistic without one (None).
    `n_requests`: the values each cell has."""
    from tui_profiler.stats import quantile_interval, t_ci95

    def bounds(values: pd.Series) -> tuple[float, float]:
        data = values.to_numpy(float)
        if statistic == "mean":
            ci = t_ci95(data)
            return (ci[0], ci[1]) if ci else (math.nan, math.nan)
        if isinstance(statistic, float):
            iv = quantile_interval(data, statistic)
            return (
                math.nan if iv.lo is None else iv.lo,
                math.nan if iv.hi is None else iv.hi,
            )
        return math.nan, math.nan

    pairs = grouped.apply(bounds)
    return pd.DataFrame(
        {
            "lo": [p[0] for p in pairs],
            "hi": [p[1] for p in pairs],
            "n_requests": grouped.size().to_numpy(float),
        },
        index=pairs.index,
    )


def _token_cells(rows: pd.DataFrame, spec: TokenTarget) -> tuple[pd.DataFrame, bool]:
    """Cells of a generative target: one per (group, config, prompt length asked, output length asked),
    y the per-cell statistic of the per-request value (or cells.csv's), size the cell's median prompt
    (or context) tokens as counted per request, else as asked."""
    rows = host_class_rows(rows)
    for col in TOKEN_COLUMNS:
        rows[col] = pd.to_numeric(rows[col], errors="coerce")
    output_len = GenColumn.OUTPUT_LEN.value
    for col in ("mem_cap_gb", "concurrency", "rate", "token_len", output_len):  # -1: not recorded
        rows[col] = rows[col].astype(float).fillna(-1.0)
    asked_prompt = rows["token_len"].where(rows["token_len"] > 0)
    prompt = rows[GenColumn.PROMPT_TOKENS].where(rows[GenColumn.PROMPT_TOKENS] > 0, asked_prompt)
    if spec.size_column == CONTEXT_SIZE:
        asked_output = rows[output_len].where(rows[output_len] > 0)
        output = rows[GenColumn.OUTPUT_TOKENS].where(rows[GenColumn.OUTPUT_TOKENS] > 0, asked_output)
        rows["_size"] = prompt + output
    else:
        rows["_size"] = prompt
    keys = [*GROUP_KEYS, "cpu_cores", "mem_cap_gb", "token_len", output_len]
    usable = np.isfinite(rows["_size"]) & (rows["_size"] > 0)
    is_request = rows["row_kind"] == "request"
    parts = []
    req = rows[is_request & usable & (rows[spec.request_column] > 0)]
    if not req.empty:
        grouped = req.groupby(keys, sort=True)
        part = pd.DataFrame(
            {
                "y": grouped[spec.request_column].quantile(spec.quantile),
                "size": grouped["_size"].median(),
                "n_rows": grouped.size(),
            }
        )
        parts.append(part.join(_request_bounds(grouped[spec.request_column], spec.quantile)))
    agg = rows[~is_request & usable & (rows[spec.cell_column] > 0)].copy()
    if not agg.empty:
        for side in ("lo", "hi"):  # ttft_p99_s -> ttft_p99_lo_s, ttft_p99_hi_s
            column = f"{spec.cell_column.removesuffix('_s')}_{side}_s"
            agg[side] = agg[column].astype(float) if column in agg else np.nan
        grouped = agg.groupby(keys, sort=True)
        part = pd.DataFrame(
            {
                "y": grouped[spec.cell_column].mean(),
                "size": grouped["_size"].median(),
                "n_rows": grouped.size(),
                "lo": grouped["lo"].mean(),
                "hi": grouped["hi"].mean(),
                "n_requests": grouped["n_requests"].sum(min_count=1),
            }
        )
        if parts:  # a cell with per-request rows is measured from them, not from a summary of them
            part = part[~part.index.isin(parts[0].index)]
        parts.append(part)
    if not parts:
        raise ValueError(
            f"target: no cells carry {spec.request_column} or {spec.cell_column} (not a streamed, generative "
            "session?)"
        )
    cells = pd.concat(parts).reset_index()
    cells["size_column"] = spec.size_column
    for col in ("mem_cap_gb", "concurrency", "rate", "token_len", output_len):
        cells[col] = cells[col].replace(-1.0, np.nan)
    return cells, bool(is_request.any())


def _held_out_mape(
    form: Form,
    s: np.ndarray,
    c: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
) -> float:
    """One form's pooled held-out MAPE over the outer folds, without selection (NaN if it cannot fit)."""
    ys, ps = [], []
    for tr, te in folds:
        if not _min_cells(form, s[tr], c[tr]):
            return math.nan
        try:
            ps.append(form.fit(s[tr], c[tr], y[tr], w[tr]).predict(s[te], c[te]))
        except (ValueError, np.linalg.LinAlgError):
            return math.nan
        ys.append(y[te])
    return _mape(np.concatenate(ys), np.concatenate(ps))


def _group_key(cells: pd.DataFrame) -> dict[str, Any]:
    first = cells.iloc[0]
    host_class = (
        {HOST_CLASS: str(first[HOST_CLASS])} if first[HOST_CLASS] else {}
    )  # "": data without host classes
    return (
        {k: first[k] for k in ("model", "task", "gpu_mode")}
        | host_class
        | {k: (None if pd.isna(first[k]) else float(first[k])) for k in ("concurrency", "rate")}
    )


def host_class_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with a `host_class` label on every row ("" where none)."""
    rows = rows.copy()
    labels = rows[HOST_CLASS] if HOST_CLASS in rows else pd.Series("", index=rows.index)
    rows[HOST_CLASS] = labels.astype("string").fillna("").astype(str)
    return rows


def fit_group(cells: pd.DataFrame, target: str, selection: Selection | str) -> GroupFit:
    """Fit one group; `selection` says which split chooses the form (a bare split name: as if given)."""
    cells = cells.reset_index(drop=True)
    if isinstance(selection, str):
        selection = choose_selection(cells, selection)
    split = selection.split
    s, c, y = _xy(cells)
    lo, hi = _bounds(cells, "lo"), _bounds(cells, "hi")
    requests = cells["n_requests"] if "n_requests" in cells else cells["n_rows"]
    requests = requests.fillna(cells["n_rows"]).to_numpy(float)
    weights, weighting = cell_weights(y.tolist(), lo, hi, requests.tolist())
    cells["weight"] = weights
    w = weights
    size_column = str(cells["size_column"].iloc[0]) or None
    key = _group_key(cells)
    ranges = {"cpu_cores": (float(c.min()), float(c.max()))}
    if size_column:
        ranges[size_column] = (float(s.min()), float(s.max()))
    if cells["mem_cap_gb"].notna().any():
        ranges["mem_cap_gb"] = (float(cells["mem_cap_gb"].min()), float(cells["mem_cap_gb"].max()))
    caveats: list[str] = []
    if len(np.unique(c)) < 2:
        caveats.append("one CPU value only: the model has no CPU effect")

    fitted, scores = fit_selected(cells, split)
    train_pred = fitted.predict(s, c)

    # Nested held-out evaluation: on each outer fold, select by inner CV and fit on the training part only.
    folds = split_folds(cells, split)
    test_p, test_idx, chosen, train_metrics = [], [], [], []
    for tr, te in folds:
        f_tr, _ = fit_selected(cells.iloc[tr].reset_index(drop=True), split)
        chosen.append(f_tr.form)
        test_p.append(f_tr.predict(s[te], c[te]))
        test_idx.append(te)
        train_metrics.append(metrics(y[tr], f_tr.predict(s[tr], c[tr])))
    if folds:
        idx, pred = np.concatenate(test_idx), np.concatenate(test_p)
        test = metrics(y[idx], pred)
        train = {k: float(np.mean([m[k] for m in train_metrics])) for k in ("r2", "mae", "mape_pct")}
        train["n"] = len(cells)
        test_by_form = {name: _held_out_mape(form, s, c, y, w, folds) for name, form in FORMS.items()}
    else:
        idx, pred = np.arange(len(cells)), train_pred
        test = metrics(np.array([]), np.array([]))
        train = metrics(y, train_pred)
        test_by_form = dict.fromkeys(FORMS, math.nan)
        caveats.append(
            f"no held-out test for split {split} (too few configs or input sizes); residuals are training residuals"
        )
    rel = (pred - y[idx]) / y[idx] * 100.0
    mem = cells["mem_cap_gb"].to_numpy(float)
    worst = [
        {
            "cpu_cores": float(c[idx[i]]),
            "mem_cap_gb": float(mem[idx[i]]),
            "size": float(s[idx[i]]),
            "actual": float(y[idx[i]]),
            "predicted": float(pred[i]),
            "error_pct": float(rel[i]),
        }
        for i in np.argsort(-np.abs(rel))[:5]
    ]
    residuals = [(float(s[j]), float(r)) for j, r in zip(idx, rel, strict=True)]
    if target in P99_TARGETS and int(cells["n_rows"].min()) < 100:
        caveats.append(
            f"p99 from as few as {int(cells['n_rows'].min())} requests per cell: it is close to the maximum"
        )
    return GroupFit(
        key,
        size_column,
        target,
        split,
        len(cells),
        int(cells["n_rows"].sum()),
        ranges,
        fitted,
        scores,
        train,
        test,
        test_by_form,
        chosen,
        worst,
        residuals,
        selection,
        caveats,
        weighting,
        noise(y.tolist(), lo, hi),
    )


def _bounds(cells: pd.DataFrame, side: str) -> list[float | None]:
    """A side of the cells' intervals ('lo' or 'hi'); None where not bounded or not recorded."""
    if side not in cells:
        return [None] * len(cells)
    return [None if pd.isna(v) else float(v) for v in cells[side]]


def fit_frame(
    tidy: pd.DataFrame,
    target: str = "latency_s",
    split: str | None = None,
    sources: Sequence[str] = (),
    queries: Sequence[Query] = (),
    pool_hosts: bool = False,
) -> FitReport:
    """Fit every group. `split` None: each group's validation is chosen from `queries`, the points it
    will be asked about (`choose_selection`); a split given is used for every group. Groups are per host
    class unless `pool_hosts`: then one model spans the host classes (and says which it pooled)."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split: {split!r} — allowed: {', '.join(SPLITS)}")
    rows = fit_rows(tidy)
    if rows.empty:
        raise ValueError("data: no usable rows (all warm-up, failed, or without a latency)")
    rows, excluded = leave_out_saturated(rows)
    if rows.empty:
        raise ValueError(
            f"data: every cell is flagged saturated ({len(excluded)} cells): none measures the target"
        )
    cells, has_requests = build_cells(rows, target)
    if cells.empty:
        raise ValueError(f"target: no cells carry a value for {target}")
    pooled: dict[tuple[Any, ...], list[str]] = {}
    if pool_hosts:  # each host class's cells stay cells of their own, in one group
        for pair, part in cells.groupby(["model", "task", "gpu_mode"], sort=True):
            pooled[pair] = sorted(c for c in part[HOST_CLASS].unique() if c)
        cells[HOST_CLASS] = ""
    groups = []
    for _, part in cells.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        part = part.reset_index(drop=True)
        group = fit_group(part, target, choose_selection(part, split, queries))
        classes = pooled.get((group.key["model"], group.key["task"], group.key["gpu_mode"]), [])
        if len(classes) > 1:
            group.caveats.append(f"pooled over host classes {', '.join(classes)} (--pool-hosts)")
        groups.append(group)
    repetitions = [
        {"source": str(source), **row} for source in sources for row in repetition_rows(session_cells(source))
    ]
    return FitReport(target, split or "auto", groups, list(sources), has_requests, excluded, repetitions)


def leave_out_saturated(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The rows of cells whose `saturation` is empty, and one entry per cell left out (source, cell,
    flags, reason): a saturated cell's latency is the client's, an overloaded server's queue or another
    process's, not the target's steady state under its caps."""
    if SATURATION not in rows:
        return rows, []
    flags = rows[SATURATION].astype("string").fillna("").astype(str).str.strip()
    flagged = (flags != "") & (flags.str.lower() != "nan")
    if not flagged.any():
        return rows, []
    left = rows[flagged]
    cells = left["cell_index"] if "cell_index" in left else pd.Series(np.nan, index=left.index)
    sources = left["source"] if "source" in left else pd.Series("", index=left.index)
    excluded = []
    for (source, cell), part in left.groupby([sources, cells.fillna(-1)], sort=True):
        first = part.iloc[0]
        excluded.append(
            {
                "source": str(source),
                "cell_index": None if cell == -1 else int(cell),
                "saturation": str(first[SATURATION]),
                "reason": str(first.get(SATURATION_REASON, "") or ""),
            }
        )
    return rows[~flagged].reset_index(drop=True), excluded


def excluded_line(excluded: Sequence[Mapping[str, Any]]) -> str:
    """'left out 3 cells flagged saturated (client 2, server 1): ...'; '' when none."""
    if not excluded:
        return ""
    counts: dict[str, int] = {}
    for entry in excluded:
        for flag in str(entry["saturation"]).split("+"):
            counts[flag] = counts.get(flag, 0) + 1
    by_flag = ", ".join(f"{flag} {n}" for flag, n in sorted(counts.items()))
    noun = "cell" if len(excluded) == 1 else "cells"
    return (
        f"left out {len(excluded)} {noun} flagged saturated ({by_flag}): their latency is not the target's "
        "steady state under its caps (cells.csv saturation_reason says why)"
    )


def fit_paths(
    paths: Sequence[str | Path],
    target: str = "latency_s",
    split: str | None = None,
    queries: Sequence[Query] = (),
    pool_hosts: bool = False,
) -> FitReport:
    """Read every path (AC-Prof wide/long CSV, requests.csv, cells.csv, session folder) and fit per group."""
    tidy = read_paths(paths)
    sources = [str(p) for p in paths]
    return fit_frame(
        tidy, target=target, split=split, sources=sources, queries=queries, pool_hosts=pool_hosts
    )
