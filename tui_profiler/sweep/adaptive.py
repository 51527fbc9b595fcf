"""The adaptive plan (`[plan] strategy = "adaptive"`): a `CellOrder` that measures the cells of the preset's
grid that a latency model of the grid — or the answer to "which is the cheapest configuration that meets
[slo]" — needs, and stops at a target or a budget.

The grid is the plan's: each resource configuration (one container group) × input size is a point of
`analysis.adaptive.Planner`, which chooses; this order turns its choices into the plan's own cells (their
indices, their container groups), so cells.csv, `fit` and `--resume` treat an adaptive session as any other.
While a configuration's container runs, the order asks the planner with that configuration preferred (its
start is paid); a choice elsewhere ends the group and is handed out as the next group's first cell.

A container start's cost in cells (`start_ratio`) is measured: the mean cold start over the mean cell's load
time, once a cell has paid one. Each chosen cell carries why (`chosen_because`: design, uncertainty,
slo-boundary) and the model's prediction there before it ran (`predicted_s`, `predicted_lo_s`,
`predicted_hi_s`), merged into its cells.csv row (`explain`). After each cell the plan's state (the model, its
estimated error over the grid, every point measured or predicted, the SLO's answer, the stop reason) goes out
as `MetaUpdated({"adaptive": ...})`, which meta.json keeps and the views draw.

On a fleet (`--hosts`) the order hands out whole groups (`next_group`): each free host gets one configuration
that no other host runs, chosen as above, with the input sizes the planner would measure in it in a row (each
handed-out cell believed at its predicted value until its result comes: `Planner.assume`), at most the
configuration's sizes. A host that finds nothing to choose waits for the others' results (the fleet's queue
asks again when a group ends), so each choice knows every result in by then. A fleet's choice runs in a
worker thread (a refit must not stall the loop that other hosts' cells are timed on): `record` only queues a
result (`_inbox`), and the planner takes it in at the next choice or `flush`, under `_plan_lock`; `publish`,
which emits the state without a refit, runs on the loop after each choice.

On `--resume`, the finished cells' rows are told to the planner again (in cell order), and the plan goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tui_profiler.analysis.adaptive import (
    DEFAULT_START_RATIO,
    STOP_BUDGET_MINUTES,
    STOP_REASONS,
    Choice,
    GridPoint,
    Planner,
    config_cost,
)
from tui_profiler.config.model import Preset
from tui_profiler.events import CellFinished, Event, LogMessage, MetaUpdated
from tui_profiler.plan import Cell
from tui_profiler.session.schema import CellStatus, csv_number

# cells.csv: which statistic the model fits — the mean (fit's default target), or for goal slo the
# percentile column nearest to slo.percentile
MODEL_STATISTIC = "mean_s"
PERCENTILE_COLUMNS = {50.0: "p50_s", 90.0: "p90_s", 95.0: "p95_s", 99.0: "p99_s"}


def statistic_column(preset: Preset) -> str:
    """The cells.csv column the plan models."""
    if preset.plan.goal == "slo" and preset.slo is not None:
        q = preset.slo.percentile
        return PERCENTILE_COLUMNS[min(PERCENTILE_COLUMNS, key=lambda p: abs(p - q))]
    return MODEL_STATISTIC


def check_adaptive(preset: Preset, plan: Sequence[Cell]) -> None:
    """What an adaptive plan can choose over: one cell per configuration × input size (one-line
    ValueErrors otherwise)."""
    axes: dict[str, set[Any]] = {
        "load levels (load.concurrency / load.rates)": {(c.concurrency, c.rate) for c in plan},
        "repetitions": {c.repeat_idx for c in plan},
        "output lengths (input.output_lens)": {c.output_len for c in plan},
        "shared prefixes (input.shared_prefix_tokens)": {c.shared_prefix_tokens for c in plan},
    }
    for name, values in axes.items():
        if len(values) > 1:
            raise ValueError(
                f"an adaptive plan chooses among resource configurations × input sizes: give one value of "
                f"{name} (it has {len(values)})"
            )


class AdaptiveOrder:
    """A `CellOrder` over the plan's cells, chosen by an `analysis.adaptive.Planner`. `emit` sends the
    plan's state (`MetaUpdated`) and its stop (`LogMessage`) once the cell's own event has gone out (at
    the next `next_cell`, or `flush`). `resumed`: the cells.csv rows of a resumed session's finished cells;
    `elapsed_s`: the time a resumed session already spent (for `budget_minutes`)."""

    chooses_as_it_measures = True

    def __init__(
        self,
        preset: Preset,
        plan: Sequence[Cell],
        emit: Callable[[Event], None],
        *,
        resumed: Sequence[Mapping[str, Any]] = (),
        elapsed_s: float = 0.0,
    ) -> None:
        check_adaptive(preset, plan)
        self.preset = preset
        self.settings = preset.plan
        self._emit = emit
        self.statistic = statistic_column(preset)
        self.cells = list(plan)
        self._point_of = {c.index: i for i, c in enumerate(self.cells)}
        self.points = [self._point(c) for c in self.cells]
        slo = preset.slo
        self.planner = Planner(
            self.points,
            goal=self.settings.goal,
            target_error_pct=self.settings.target_error,
            budget_cells=self.settings.budget_cells,
            slo_bound_s=slo.e2e_s if slo is not None and self.settings.goal == "slo" else None,
            slo_size=_model_size(self.settings.slo_size, None)
            if self.cells[0].input_scale is not None and self.settings.slo_size is not None
            else self.settings.slo_size,
            start_ratio=DEFAULT_START_RATIO,
        )
        self._explained: dict[int, dict[str, Any]] = {}  # cell index -> its explanation columns
        self._pending: Choice | None = None  # chosen outside the running group: the next group's first
        self._outstanding: set[int] = set()
        self._running: dict[int, set[int]] = {}  # on a fleet: configuration -> its cells out, unfinished
        self._inbox: list[CellFinished] = []  # results not yet told to the planner
        self._inbox_lock = threading.Lock()  # held briefly: `record` runs on the loop
        self._plan_lock = threading.RLock()  # the planner: a fleet's choice holds it in a worker thread
        self._cold: list[float] = []
        self._load: list[float] = []
        self._t0 = time.perf_counter() - elapsed_s
        self._dirty = True
        self._announced = False
        for row in sorted(resumed, key=lambda r: _int(r.get("cell_index"))):
            self._tell(row)

    def _point(self, cell: Cell) -> GridPoint:
        cost = config_cost(cell.cpus, cell.memory_gb, self.preset.plan.cost_per_gb)
        cpus = cell.cpus if cell.cpus is not None else 1.0  # uncapped: one configuration, nominally 1
        return GridPoint(
            cell.container_group, cpus, cell.memory_gb, _model_size(cell.input_scale, cell.token_len), cost
        )

    # ------------------------------------------------------------------------------------ CellOrder

    def next_cell(self, group: int | None = None) -> Cell | None:
        self.flush()  # takes in the results recorded since the last choice
        if self._outstanding:
            return None  # a cell of this plan has not finished (a group draining after its target failed)
        choice = self._pending or self._choose(group)
        self._pending = None
        if choice is None:
            self.flush()
            return None
        cell = self.cells[choice.point]
        if group is not None and cell.container_group != group:
            self._pending = choice  # the running container closes; the choice starts the next group
            return None
        self._explained[cell.index] = _explanation(choice)
        self._outstanding.add(cell.index)
        return cell

    def _check_budget(self) -> None:
        """The time budget, and a start's cost as measured so far, before a choice."""
        budget = self.settings.budget_minutes
        if budget is not None and not self.planner.stop_reason and self.elapsed_s >= 60 * budget:
            self.planner.stop_reason = STOP_BUDGET_MINUTES
        self.planner.start_ratio = self.start_ratio

    def _choose(self, group: int | None) -> Choice | None:
        self._check_budget()
        choice = self.planner.choose(group)
        if choice is None:
            self._dirty = True
        return choice

    def next_group(self) -> list[Cell]:
        """A fleet host's next container group: a configuration no other host runs, and the sizes to measure
        in it ([]: nothing to choose now — the plan stopped, or waits for the other hosts' results). Safe in
        a worker thread; it emits nothing (`flush` does, on the loop)."""
        with self._plan_lock:
            self._absorb()
            self._check_budget()
            stopped = self.planner.stop_reason
            with self._inbox_lock:
                busy = frozenset(self._running)
            chosen = self.planner.choose_group(busy)
            if not chosen:
                self._dirty = self._dirty or self.planner.stop_reason != stopped  # a stop to announce
                return []
            config = self.points[chosen[0].point].config
            cells = [self.cells[c.point] for c in chosen]
            for choice, cell in zip(chosen, cells, strict=True):
                self._explained[cell.index] = _explanation(choice)
            with self._inbox_lock:
                self._running[config] = {c.index for c in cells}
            self._dirty = True
            return sorted(cells, key=lambda c: c.index)  # a container group's cells in the plan's order

    def record(self, finished: CellFinished) -> None:
        """A cell finished: queued for the planner (cheap, on the loop), told at the next choice."""
        if finished.cell_index not in self._point_of:
            return
        config = self.points[self._point_of[finished.cell_index]].config
        with self._inbox_lock:
            running = self._running.get(config)
            if running is not None:
                running.discard(finished.cell_index)
                if not running:
                    del self._running[config]
            self._inbox.append(finished)

    def _absorb(self) -> None:
        """Tell the planner the results recorded since the last look (under `_plan_lock`)."""
        with self._inbox_lock:
            inbox, self._inbox = self._inbox, []
        for finished in inbox:
            if finished.status == CellStatus.INTERRUPTED:
                self.planner.release(self._point_of[finished.cell_index])
                continue
            self._outstanding.discard(finished.cell_index)
            self._tell(finished.summary)

    def _tell(self, row: Mapping[str, Any]) -> None:
        i = self._point_of.get(_int(row.get("cell_index"), -1))
        if i is None:
            return
        ok = str(row.get("status") or "ok") == CellStatus.OK
        value = csv_number(row.get(self.statistic)) if ok else None
        answered = _int(row.get("n"))
        self.planner.tell(i, value, config_broken=not ok and answered == 0)
        if (
            _int(row.get("cold_start_cell")) == 1
            and (cold := csv_number(row.get("cold_start_s"))) is not None
        ):
            self._cold.append(cold)
        if (load := csv_number(row.get("load_wall_s"))) is not None:
            self._load.append(load)
        self._dirty = True

    def explain(self, cell_index: int) -> dict[str, Any]:
        """The cells.csv columns that say why a cell was chosen (session.schema.ADAPTIVE_COLUMNS)."""
        return self._explained.get(cell_index, {})

    # ------------------------------------------------------------------------------------ the record

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self._t0

    @property
    def start_ratio(self) -> float:
        """A container start's cost in cells: mean cold start over mean load time (measured ones)."""
        if not self._cold or not self._load:
            return DEFAULT_START_RATIO
        load = sum(self._load) / len(self._load)
        return (sum(self._cold) / len(self._cold)) / load if load > 0 else DEFAULT_START_RATIO

    @property
    def stop_reason(self) -> str:
        return self.planner.stop_reason

    def describe(self) -> dict[str, Any]:
        """meta.json's `adaptive`: the settings, the planner's state, and every point measured or predicted."""
        state = self.planner.describe()
        grid = []
        for i, (cell, point) in enumerate(zip(self.cells, self.points, strict=True)):
            pred = self.planner.prediction(i)
            grid.append(
                {
                    "cell_index": cell.index,
                    "config": point.config,
                    "cpu_cores": cell.cpus,
                    "mem_cap_gb": cell.memory_gb,
                    "size": cell.input_scale if cell.input_scale is not None else cell.token_len,
                    "measured_s": self.planner.measured.get(i),
                    "failed": i in self.planner.failed,
                    "predicted_s": csv_number(pred.value) if pred else None,
                    "predicted_lo_s": csv_number(pred.lo) if pred else None,
                    "predicted_hi_s": csv_number(pred.hi) if pred else None,
                }
            )
        return {
            "strategy": "adaptive",
            **self.settings.model_dump(),
            **state,
            "statistic": self.statistic,
            "size_axis": "token_len" if self.cells and self.cells[0].token_len is not None else "input_scale",
            "start_ratio": self.start_ratio,
            "elapsed_s": self.elapsed_s,
            "running": {str(k): sorted(v) for k, v in self._running.items()},
            "grid": grid,
        }

    def flush(self) -> None:
        """Take in the recorded results; send the plan's state if it changed, and its stop once (on the
        loop's thread)."""
        with self._plan_lock:
            self._absorb()
            self.publish()

    def publish(self) -> None:
        """Send the plan's state if it changed, and its stop once, without taking in new results (a refit):
        a fleet calls it on the loop after each choice, whose worker thread took them in."""
        with self._plan_lock:
            if not self._dirty:
                return
            self._dirty = False
            self._emit(MetaUpdated({"adaptive": self.describe()}))
            if self.stop_reason and not self._announced:
                self._announced = True
                self._emit(LogMessage("info", self.stop_line()))

    def stop_line(self) -> str:
        """One line: why the plan stopped, after how many cells, and what it knows."""
        p = self.planner
        text = f"adaptive plan stopped: {STOP_REASONS.get(p.stop_reason, p.stop_reason or 'interrupted')}"
        text += f" after {p.n_measured} of {len(self.points)} cells"
        if p.goal == "model" and p.estimated_error_pct is not None:
            text += f"; estimated median error over the grid {p.estimated_error_pct:.1f}%"
            text += f" (target {self.settings.target_error:g}%)"
        if p.goal == "slo":
            a = p.slo_answer()
            if a.point is not None:
                pt = self.points[a.point]
                cell = self.cells[a.point]
                how = "measured" if a.measured else "predicted"
                text += (
                    f"; cheapest meeting {p.slo_bound_s:g} s: {cell.cpus} CPU / {cell.memory_gb} GB "
                    f"(cost {pt.cost:g}, {how} {a.value_s:.4g} s)"
                )
            else:
                text += "; no configuration meets the SLO"
        return text


def _model_size(scale: float | None, tokens: int | None) -> float:
    """The size the model fits: an image's pixels (scale², up to the base size's constant factor, which no
    form depends on), a token count as it is, 1 where the plan has one size of its own."""
    if scale is not None:
        return float(scale) ** 2
    return float(tokens) if tokens is not None else 1.0


def _explanation(choice: Choice) -> dict[str, Any]:
    p = choice.prediction
    return {
        "chosen_because": choice.because,
        "predicted_s": csv_number(p.value) if p else None,
        "predicted_lo_s": csv_number(p.lo) if p else None,
        "predicted_hi_s": csv_number(p.hi) if p else None,
    }


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default
