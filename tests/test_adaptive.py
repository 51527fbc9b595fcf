"""The adaptive plan (issue 22): its design, its choice by uncertainty, its stops, its resume, its explanation
columns, its SLO answer, and the replay bench — all against a synthetic law, the known answer.

The law: L = t0 + (w0 + w1·pixels)·((1 − f) + f / C) — work-parallel, one of fit.py's forms — so a model
fitted to a few of its cells predicts the others exactly (noiseless) or to the noise (a seeded 3% scatter).
No latency is measured here: the "measure" function reads the law.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tui_profiler.analysis.adaptive import (
    DESIGN,
    SLO_BOUNDARY,
    STOP_BUDGET_CELLS,
    STOP_DECIDED,
    STOP_TARGET,
    UNCERTAINTY,
    GridPoint,
    Planner,
    config_cost,
)
from tui_profiler.config import Preset
from tui_profiler.events import CellFinished, MetaUpdated
from tui_profiler.plan import Cell, build_plan
from tui_profiler.session.schema import ADAPTIVE_COLUMNS, CELL_COLUMNS, CellStatus
from tui_profiler.sweep.adaptive import AdaptiveOrder

CPUS = [0.5, 1.0, 1.5, 2.0]
SCALES = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5]


def law(cpus: float, scale: float) -> float:
    return 0.004 + (0.002 + 0.02 * scale**2) * (0.2 + 0.8 / cpus)


def preset(**plan: object) -> Preset:
    return Preset.model_validate(
        {
            "name": "adaptive-test",
            "model": "mobilenet_v3_small",
            "input": {"scales": SCALES},
            "resources": {"cpus": CPUS, "memory_gb": [2]},
            "load": {"concurrency": [1], "requests": 4},
            "plan": {"strategy": "adaptive", **plan},
            **({"slo": {"e2e_s": 0.05, "percentile": 50}} if plan.get("goal") == "slo" else {}),
        }
    )


def row(cell: Cell, value: float, *, first: bool = False, status: str = "ok") -> dict[str, object]:
    return {
        "cell_index": cell.index,
        "status": status,
        "n": 4 if status == "ok" else 0,
        "mean_s": value,
        "p50_s": value,
        "cold_start_cell": int(first),
        "cold_start_s": 3.0,
        "load_wall_s": 1.0,
    }


def drive(order: AdaptiveOrder, measure=lambda c: law(c.cpus, c.input_scale)) -> list[tuple[Cell, dict]]:
    """run_local's loop without containers: groups of cells from the order, each 'measured' by `measure`."""
    ran = []
    while (first := order.next_cell()) is not None:
        cell: Cell | None = first
        while cell is not None:
            value = measure(cell)
            order.record(CellFinished(cell.index, CellStatus.OK, "", row(cell, value, first=cell is first)))
            ran.append((cell, order.explain(cell.index)))
            cell = order.next_cell(first.container_group)
    order.flush()
    return ran


def grid_points() -> list[GridPoint]:
    return [
        GridPoint(k, c, 2.0, s * s, config_cost(c, 2.0, 0.25)) for k, c in enumerate(CPUS) for s in SCALES
    ]


# ------------------------------------------------------------------------------------------- planner


def test_design_is_corners_and_centre_in_container_order() -> None:
    points = grid_points()
    planner = Planner(points)
    chosen = [(points[i].cpus, points[i].size) for i in planner.design]
    assert chosen == [(0.5, 0.25), (0.5, 6.25), (1.0, 1.5625), (2.0, 0.25), (2.0, 6.25)]
    first = planner.choose()
    assert first is not None and first.because == DESIGN and first.prediction is None


def test_noiseless_law_stops_at_the_target_with_exact_predictions() -> None:
    points = grid_points()
    planner = Planner(points, target_error_pct=1.0)
    while (choice := planner.choose()) is not None:
        p = points[choice.point]
        planner.tell(choice.point, law(p.cpus, math.sqrt(p.size)))
    assert planner.stop_reason == STOP_TARGET
    assert planner.n_measured <= 10  # 5 design cells and a few chosen: a third of the grid at most
    assert planner.model is not None
    errors = [
        abs(planner.model.predictions[i].value / law(p.cpus, math.sqrt(p.size)) - 1)
        for i, p in enumerate(points)
    ]
    assert max(errors) < 1e-3  # the law is one of the forms: known exactly


def test_choice_by_uncertainty_prefers_the_running_container() -> None:
    points = grid_points()
    planner = Planner(points, target_error_pct=None, start_ratio=1e6)  # a start costs ~forever: stay
    for i in planner.design:
        p = points[i]
        planner.tell(i, law(p.cpus, math.sqrt(p.size)) * (1.03 if i % 2 else 0.97))
    here = points[planner.design[-1]].config
    choice = planner.choose(here)
    assert choice is not None and choice.because == UNCERTAINTY
    assert points[choice.point].config == here
    assert (
        choice.prediction is not None
        and choice.prediction.lo < choice.prediction.value < choice.prediction.hi
    )
    free = Planner(points, target_error_pct=None, start_ratio=0.0)
    for i in planner.measured:
        free.tell(i, planner.measured[i])
    best = free.choose(None)
    assert best is not None
    sds = [free.prediction(i).model_sd for i in range(len(points)) if not free.done(i)]
    assert free.prediction(best.point).model_sd == pytest.approx(max(sds))  # the least sure point


def test_budget_cells_stops() -> None:
    points = grid_points()
    planner = Planner(points, target_error_pct=None, budget_cells=7)
    n = 0
    while (choice := planner.choose()) is not None:
        p = points[choice.point]
        planner.tell(choice.point, law(p.cpus, math.sqrt(p.size)))
        n += 1
    assert n == 7 and planner.stop_reason == STOP_BUDGET_CELLS


def test_slo_finds_the_cheapest_configuration_that_meets() -> None:
    points = grid_points()
    size = 2.0**2
    at_size = {p.cpus: law(p.cpus, 2.0) for p in points if p.size == size}
    bound = (at_size[1.0] + at_size[1.5]) / 2  # 1.5 CPUs meets, 1 does not
    planner = Planner(points, goal="slo", slo_bound_s=bound, slo_size=size)
    chosen = []
    while (choice := planner.choose()) is not None:
        p = points[choice.point]
        chosen.append(choice.because)
        planner.tell(choice.point, law(p.cpus, math.sqrt(p.size)))
    answer = planner.slo_answer()
    assert planner.stop_reason == STOP_DECIDED
    assert answer.decided and answer.measured and points[answer.point].cpus == 1.5
    assert chosen[:3] == [DESIGN] * 3 and set(chosen[3:]) <= {SLO_BOUNDARY}
    assert all(points[i].size == size for i in planner.measured)  # only the SLO's size is measured


# ------------------------------------------------------------------------------------------- the order


def test_order_explains_each_cell_and_records_the_plan_in_meta() -> None:
    events: list[object] = []
    order = AdaptiveOrder(preset(target_error=1.0), build_plan(preset()), events.append)
    ran = drive(order)
    assert order.stop_reason == STOP_TARGET
    assert [e["chosen_because"] for _, e in ran[:5]] == [DESIGN] * 5
    assert all(e["predicted_s"] is None for _, e in ran[:5])
    later = [e for _, e in ran[5:]]
    assert later and all(e["chosen_because"] == UNCERTAINTY for e in later)
    assert all(e["predicted_lo_s"] <= e["predicted_s"] <= e["predicted_hi_s"] for e in later)
    assert set(ran[0][1]) == set(ADAPTIVE_COLUMNS) and set(ADAPTIVE_COLUMNS) <= set(CELL_COLUMNS)
    meta = [e.fields["adaptive"] for e in events if isinstance(e, MetaUpdated)][-1]
    assert meta["stop_reason"] == STOP_TARGET and meta["cells_measured"] == len(ran)
    assert meta["model"]["form"] and meta["estimated_median_error_pct"] is not None
    assert len(meta["grid"]) == len(CPUS) * len(SCALES)
    assert sum(p["measured_s"] is not None for p in meta["grid"]) == len(ran)
    # a container group's cells run together: each group is entered a few times at most
    groups = [c.container_group for c, _ in ran]
    entries = sum(1 for a, b in zip([None, *groups], groups, strict=False) if a != b)
    assert entries <= len(CPUS) + 3


def test_resume_replays_the_measured_cells() -> None:
    plan = build_plan(preset())
    whole = AdaptiveOrder(preset(target_error=1.0), plan, lambda e: None)
    ran = drive(whole)
    # a session cut short after 6 cells: its rows are told again, and the plan goes on from there
    rows = [row(c, law(c.cpus, c.input_scale)) for c, _ in ran[:6]]
    resumed = AdaptiveOrder(preset(target_error=1.0), plan, lambda e: None, resumed=rows)
    assert resumed.planner.n_measured == 6
    assert resumed.planner.measured == {
        resumed._point_of[c.index]: law(c.cpus, c.input_scale) for c, _ in ran[:6]
    }
    rest = drive(resumed)
    # no container runs after a resume: its first choice is the least sure point anywhere, never a cell
    # already measured, and the plan ends as the uninterrupted one did
    assert rest and rest[0][1]["chosen_because"] == UNCERTAINTY
    assert {c.index for c, _ in rest}.isdisjoint(r["cell_index"] for r in rows)
    assert resumed.stop_reason == whole.stop_reason == STOP_TARGET


def test_a_configuration_that_cannot_start_is_left_out() -> None:
    plan = build_plan(preset())
    order = AdaptiveOrder(preset(target_error=1.0, budget_cells=12), plan, lambda e: None)
    ran = []
    while (cell := order.next_cell()) is not None:
        broken = cell.cpus == 2.0
        value = law(cell.cpus, cell.input_scale)
        order.record(
            CellFinished(
                cell.index,
                CellStatus.FAILED if broken else CellStatus.OK,
                "",
                row(cell, value, status="failed" if broken else "ok"),
            )
        )
        ran.append(cell)
    assert sum(1 for c in ran if c.cpus == 2.0) == 1  # one try, then that configuration is out


def test_adaptive_refuses_several_load_levels() -> None:
    p = Preset.model_validate(
        {
            "name": "x",
            "model": "mobilenet_v3_small",
            "load": {"concurrency": [1, 2]},
            "plan": {"strategy": "adaptive"},
        }
    )
    with pytest.raises(ValueError, match="one value of load levels"):
        AdaptiveOrder(p, build_plan(p), lambda e: None)


def test_a_grid_ignores_the_adaptive_keys() -> None:
    """`--set plan.strategy=grid` on an adaptive preset measures its grid in full."""
    p = preset(target_error=5.0, budget_cells=3).model_copy(deep=True)
    grid = Preset.model_validate({**p.to_dict(), "plan": {**p.plan.model_dump(), "strategy": "grid"}})
    assert grid.plan.strategy == "grid" and len(build_plan(grid)) == len(CPUS) * len(SCALES)


# ------------------------------------------------------------------------------------------- the bench


def test_bench_replay_on_a_synthetic_wide_grid(tmp_path: Path) -> None:
    """An AC-Prof wide file written from the law (a seeded 2% scatter): the model's true error falls as cells
    are added and is small once the design and a few more are in; every SLO case is answered correctly."""
    from tui_profiler.bench.adaptive import load_grid, model_report, slo_report

    rng = np.random.default_rng(7)
    configs = [(1, 2), (2, 4), (3, 6), (4, 8), (6, 12)]
    pixels = [int(224 * 224 * s * s) for s in SCALES]
    lines = ["Pixels," + ",".join(f"CPU{c}+Mem{m}" for c, m in configs)]
    for px, s in zip(pixels, SCALES, strict=True):
        lines.append(
            f"{px}," + ",".join(f"{law(c, s) * (1 + 0.02 * rng.standard_normal()):.6f}" for c, _ in configs)
        )
    path = tmp_path / "synthetic.csv"
    path.write_text("\n".join(lines) + "\n")
    grid = load_grid(path)
    assert len(grid.points) == 40
    rows, text = model_report(grid, max_fraction=0.5)
    adaptive = [r for r in rows if r["strategy"] == "adaptive"]
    assert [r["cells_measured"] for r in adaptive] == list(range(1, 21))
    final = adaptive[-1]["median_abs_pct_error"]
    assert final is not None and final < 5.0  # the law's own form, 2% scatter: a few % at most
    assert any(r["strategy"] == "random" for r in rows) and any("Target" in line for line in text)
    slo, _ = slo_report(grid)
    mine = [r for r in slo if r["strategy"] == "adaptive"]
    assert mine and sum(r["found"] for r in mine) / len(mine) >= 0.8
    assert all(r["cost_ratio"] is None or r["cost_ratio"] >= 1 - 1e-9 or r["found"] == 0 for r in mine)


# ------------------------------------------------------------------------------------------- end to end


def test_adaptive_run_against_a_running_server_then_resume(
    mobilenet_server: tuple[str, int], tmp_path: Path
) -> None:
    """`run --url` over six input scales (one configuration: a running server has its own caps), adaptive
    with a budget of four cells: three design cells (smallest, largest, middle scale), one by uncertainty;
    the end line says why it stopped; a resume replays them and chooses nothing more."""
    from tests.test_cli import cli
    from tui_profiler.session.reader import load_meta, read_rows

    args = [
        "run", "--url", mobilenet_server[0], "--headless", "--output", str(tmp_path),
        "--requests", "3", "--set", "load.warmup=1", "--set", "input.scales=0.25,0.5,0.75,1,1.25,1.5",
        "--set", "plan.strategy=adaptive", "--set", "plan.budget_cells=4",
    ]  # fmt: skip
    out = cli(*args, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "adaptive: stopped at budget_cells after 4 of 6 cells" in " ".join(out.stdout.split())
    (session,) = list(tmp_path.iterdir())
    cells = read_rows(session / "cells.csv")[1]
    assert [c["chosen_because"] for c in cells] == ["design"] * 3 + ["uncertainty"]
    assert [c["input_scale"] for c in cells[:3]] == ["0.25", "1.5", "0.75"]
    last = cells[-1]
    assert float(last["predicted_lo_s"]) <= float(last["predicted_s"]) <= float(last["predicted_hi_s"])
    meta = load_meta(session)["adaptive"]
    assert meta["stop_reason"] == "budget_cells" and meta["cells_measured"] == 4
    again = cli("run", "--resume", str(session), "--headless", "--url", mobilenet_server[0], timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert len(read_rows(session / "cells.csv")[1]) == 4


# ------------------------------------------------------------------------------------------- the views


def test_live_state_and_heat_map_tell_measured_from_predicted() -> None:
    from tui_profiler.tui.live_state import LiveState
    from tui_profiler.tui.widgets.heatmap import heatmap_text

    events: list[object] = []
    order = AdaptiveOrder(preset(target_error=1.0, budget_cells=6), build_plan(preset()), events.append)
    drive(order)
    state = LiveState()
    for event in events:
        state.ingest(event)  # type: ignore[arg-type]
    assert state.adaptive["cells_measured"] == 6
    text = heatmap_text(state.adaptive).plain
    assert text.count("■") == 6 + 1  # six measured cells and the legend's
    assert text.count("~") == len(CPUS) * len(SCALES) - 6 + 1
    assert "stopped: budget_cells" in text


# ------------------------------------------------------------------------------------------- a fleet


def run_fleet(order: AdaptiveOrder, hosts: int, measure=lambda c: law(c.cpus, c.input_scale)):
    """FleetDriver's loop without engines: `hosts` workers take groups from the real GroupQueue (asking the
    order for each one once the queue is empty), a cell takes one tick, and each result is recorded as the
    cell finishes. Returns the groups as handed out: (host, cells), and the configurations running at once
    whenever a group was handed out."""
    import asyncio

    from tui_profiler.sweep.schedule import GroupQueue

    handed: list[tuple[str, list[Cell]]] = []
    overlaps: list[list[int]] = []
    running: dict[str, int] = {}

    async def worker(name: str, queue: GroupQueue) -> None:
        while (group := await queue.take(name)) is not None:
            config = group.cells[0].container_group
            assert {c.container_group for c in group.cells} == {config}
            running[name] = config
            overlaps.append(sorted(running.values()))
            handed.append((name, group.cells))
            for i, cell in enumerate(group.cells):
                await asyncio.sleep(0.001 * (1 + hash(name) % 3))
                order.record(
                    CellFinished(cell.index, CellStatus.OK, "", row(cell, measure(cell), first=i == 0))
                )
            del running[name]
            queue.done()

    async def scenario() -> None:
        async def more() -> list[Cell]:  # as FleetDriver asks: the choice in a thread, its events here
            cells = await asyncio.to_thread(order.next_group)
            order.publish()
            return cells

        queue = GroupQueue([], max_tries=2, hosts=hosts, more=more)
        async with asyncio.TaskGroup() as tasks:
            for h in range(hosts):
                tasks.create_task(worker(f"h{h}", queue))
        order.flush()

    asyncio.run(scenario())
    return handed, overlaps


def test_a_fleet_gets_one_configuration_per_free_host_and_every_cell_once() -> None:
    plan = build_plan(preset())
    events: list[object] = []
    order = AdaptiveOrder(preset(target_error=1.0), plan, events.append)
    handed, overlaps = run_fleet(order, hosts=3)
    cells = [c for _, group in handed for c in group]
    assert len({c.index for c in cells}) == len(cells)  # no cell handed out twice
    assert all(len(set(at_once)) == len(at_once) for at_once in overlaps)  # never one config on two hosts
    assert max(len(at_once) for at_once in overlaps) >= 2  # the hosts did run at once
    assert len({h for h, _ in handed}) >= 2
    assert order.stop_reason == STOP_TARGET
    assert order.planner.n_measured == len(cells) and not order.planner.pending
    # the design first, spread over the hosts; then choices by uncertainty, each explained
    why = [order.explain(c.index)["chosen_because"] for c in cells]
    assert why[:5].count(DESIGN) == 5 and set(why[5:]) <= {UNCERTAINTY}
    later = [order.explain(c.index) for c in cells[5:]]
    assert all(e["predicted_lo_s"] <= e["predicted_s"] <= e["predicted_hi_s"] for e in later)
    meta = [e.fields["adaptive"] for e in events if isinstance(e, MetaUpdated)][-1]
    assert meta["cells_measured"] == len(cells) and meta["cells_pending"] == 0 and meta["running"] == {}
    # the model it ends with knows the law (the plan's stop is the same rule as on one host)
    assert order.planner.model is not None
    errors = [
        abs(order.planner.prediction(i).value / law(p.cpus, math.sqrt(p.size)) - 1)
        for i, p in enumerate(order.points)
    ]
    assert max(errors) < 1e-3


def test_a_pending_point_is_believed_so_the_next_host_looks_elsewhere() -> None:
    points = grid_points()
    planner = Planner(points, target_error_pct=None)
    for i in planner.design:
        p = points[i]
        planner.tell(i, law(p.cpus, math.sqrt(p.size)) * (1.03 if i % 2 else 0.97))
    first = planner.choose()
    assert first is not None and first.because == UNCERTAINTY
    sd_before = planner.prediction(first.point).model_sd
    planner.assume(first.point)
    assert planner.pending[first.point] == pytest.approx(first.prediction.value)
    assert planner._choosing is not None
    assert planner._choosing.predictions[first.point].model_sd < sd_before  # believed: less unsure there
    busy = frozenset({points[first.point].config})
    second = planner.choose(None, busy)
    assert second is not None and points[second.point].config not in busy
    twin = (points[first.point].cpus, points[first.point].size)
    assert (points[second.point].cpus, points[second.point].size) != twin
    # the stop rules see measured cells only: the estimate is the one before the assumption
    assert planner.n_measured == len(planner.design)
    planner.release(first.point)
    assert not planner.pending and planner._choosing is None


def test_a_fleet_spends_no_more_than_the_cell_budget() -> None:
    plan = build_plan(preset())
    order = AdaptiveOrder(preset(target_error=0.001, budget_cells=9), plan, lambda e: None)
    handed, _ = run_fleet(order, hosts=4)
    assert sum(len(g) for _, g in handed) == 9
    assert order.stop_reason == STOP_BUDGET_CELLS


def test_a_fleet_slo_plan_decides_as_one_host_does() -> None:
    plan = build_plan(preset(goal="slo"))
    order = AdaptiveOrder(preset(goal="slo"), plan, lambda e: None)
    run_fleet(order, hosts=2)
    one = AdaptiveOrder(preset(goal="slo"), plan, lambda e: None)
    drive(one)
    assert order.stop_reason == one.stop_reason == STOP_DECIDED
    assert order.planner.slo_answer().point == one.planner.slo_answer().point


def test_bench_replays_the_plan_on_fleets_in_cell_time() -> None:
    """`bench adaptive --replay-hosts`: on the noiseless law, every fleet size measures each cell once, in
    order of its results, and brings the true error within the target; more hosts never take longer (in
    simulated cell time: a cell is one unit, a start one more — no clock involved)."""
    from tui_profiler.bench.adaptive import Grid, fleet_report, model_verdict, replay_fleet

    points = grid_points()
    grid = Grid("law", points, {i: law(p.cpus, math.sqrt(p.size)) for i, p in enumerate(points)})
    walls = {}
    for hosts in (1, 2, 4):
        rows = replay_fleet(grid, hosts, max_fraction=0.5)
        assert [r["cells_measured"] for r in rows] == list(range(1, 17))  # the budget: half of 32
        assert all(r["hosts"] == hosts for r in rows)
        times = [r["wall_cells"] for r in rows]
        assert times == sorted(times) and times[0] >= 2.0  # a start and a cell before the first result
        first = model_verdict(rows, 10.0)["first_within_target"]
        assert first is not None
        walls[hosts] = first["wall_cells"]
    assert walls[4] <= walls[2] <= walls[1]
    _, lines = fleet_report(grid, [1, 2])
    assert sum(1 for line in lines if line.startswith("| 1 |") or line.startswith("| 2 |")) == 2


def test_the_grid_error_estimate_weighs_unmeasured_configurations_by_their_share() -> None:
    """The estimate over the grid: leave-one-cell-out for cells of measured configurations, leave-one-
    configuration-out for the rest, weighted by their share of the grid; none while fewer than three
    configurations are measured and others remain (the CPU dependence cannot be held out)."""
    from tui_profiler.analysis.adaptive import fit_model

    points = grid_points()  # 4 configurations × 8 sizes
    rng = np.random.default_rng(3)
    value = {
        i: law(p.cpus, math.sqrt(p.size)) * (1 + 0.05 * rng.standard_normal()) for i, p in enumerate(points)
    }
    by_config = {k: [i for i, p in enumerate(points) if p.config == k] for k in range(4)}
    two = fit_model(points, {i: value[i] for k in (0, 1) for i in by_config[k]})
    assert two is not None and two.cell_error_pct is not None
    assert two.config_error_pct is None and two.median_error_pct is None and two.unmeasured_share == 0.5
    three = fit_model(points, {i: value[i] for k in (0, 1, 3) for i in by_config[k]})
    assert three is not None and three.cell_error_pct is not None and three.config_error_pct is not None
    assert three.unmeasured_share == 0.25
    assert three.median_error_pct == pytest.approx(
        0.75 * three.cell_error_pct + 0.25 * three.config_error_pct
    )
    every = fit_model(points, value)
    assert every is not None and every.unmeasured_share == 0.0
    assert every.median_error_pct == every.cell_error_pct
    d = every.to_dict()
    assert {"cell_heldout_error_pct", "config_heldout_error_pct", "unmeasured_config_share"} <= set(d)
