"""Fleet benchmark: the same plan on one engine, then spread over all the given engines, in one run.

`tui-profiler bench fleet --hosts FLEET.toml [--preset P]`: the ratio of the two sweeps' wall times (the
whole `SweepRunner.run`: hosts probed, container groups scheduled, images already in place). With two
hosts whose containers are confined to disjoint cores, a plan whose groups are bound by those cores should take well
under the one-host time: the target is ≤ 0.65×. Every image the plan needs is sent to every host before
the clock starts (a first-time send is not the schedule's cost), and both sweeps must end with every cell
`ok`, or the ratio would compare unlike work.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tui_profiler.bench.core import BenchReport, judge, measured

DEFAULT_PRESET = "smoke"
QUICK_OVERRIDES = ["load.requests=5"]


def run_fleet_bench(
    report: BenchReport, *, quick: bool, say: Callable[[str], None], hosts: str = "", preset: str = ""
) -> None:
    from tui_profiler.bench.client import BenchUnavailable
    from tui_profiler.config import FleetConfig, load_preset
    from tui_profiler.fleet.hosts import parse_hosts
    from tui_profiler.session.reader import read_rows
    from tui_profiler.session.store import recording
    from tui_profiler.sweep import SweepRunner

    if not hosts:
        raise BenchUnavailable("fleet: give --hosts URL,URL or a fleet TOML (two engines or more)")
    fleet = parse_hosts(hosts)
    if len(fleet.hosts) < 2:
        raise BenchUnavailable("fleet: --hosts needs two engines or more")
    overrides = QUICK_OVERRIDES if quick else []
    plan_preset = load_preset(preset or DEFAULT_PRESET, overrides, check_host=False)
    one = FleetConfig(hosts=fleet.hosts[:1], registry=fleet.registry, max_tries=fleet.max_tries)
    say(f"fleet: sending the images to {len(fleet.hosts)} hosts (outside the timing)")
    asyncio.run(_images_everywhere(plan_preset, fleet, say))

    walls: dict[str, float] = {}
    statuses: dict[str, str] = {}
    n_cells = 0
    for label, config in (("one host", one), (f"{len(fleet.hosts)} hosts", fleet)):
        out = Path(tempfile.mkdtemp(prefix="tui-profiler-bench-fleet-"))
        try:
            runner = SweepRunner(plan_preset, output_dir=out, fleet=config)
            n_cells = len(runner.plan)

            def emit(event: Any, label: str = label, n: int = n_cells) -> None:
                if type(event).__name__ == "CellFinished":
                    say(f"fleet ({label}): cell {event.cell_index + 1}/{n} {event.status} on {event.host}")

            t0 = time.perf_counter()
            finished = asyncio.run(runner.run(recording(emit)))
            walls[label] = time.perf_counter() - t0
            _, rows = read_rows(Path(finished.session_dir) / "cells.csv")
            ok = sum(1 for r in rows if r.get("status") == "ok")
            statuses[label] = f"{ok}/{len(rows)} cells ok"
        finally:
            shutil.rmtree(out, ignore_errors=True)

    subject = f"{plan_preset.name}: {n_cells} cells"
    add = report.measures.append
    for label, wall in walls.items():
        add(measured("fleet", f"wall time, {label}", subject, [wall], "s", note=statuses[label]))
    single, spread = walls["one host"], walls[f"{len(fleet.hosts)} hosts"]
    comparable = len(set(statuses.values())) == 1 and statuses["one host"].split("/")[0] == str(n_cells)
    m = measured(
        "fleet",
        f"wall time on {len(fleet.hosts)} hosts / on one",
        subject,
        [spread / single] if single > 0 and comparable else [],
        "×",
        target="≤ 0.65× (two hosts)",
        note="" if comparable else f"not comparable: {statuses}",
    )
    m.met = judge(m.value, at_most=0.65)
    add(m)
    names = ", ".join(f"{h.label} ({h.url}, cpuset {h.cpuset or 'all'})" for h in fleet.hosts)
    report.note(
        "fleet",
        f"One run of each sweep, one after the other: first on {fleet.hosts[0].label} alone, then over "
        f"{names}. Images were sent to every host first. "
        + ("--quick: " + " ".join(f"--set {o}" for o in QUICK_OVERRIDES) + "." if quick else ""),
    )


async def _images_everywhere(preset: Any, fleet: Any, say: Callable[[str], None]) -> None:
    from tui_profiler.sweep import targets
    from tui_profiler.sweep.schedule import open_hosts

    hosts = await open_hosts(fleet, preset, lambda level, text: say(text) if level != "debug" else None)
    source = targets.image_source(preset)
    image = source.name if isinstance(source, targets.GivenImage) else await asyncio.to_thread(source.build)
    for hs in hosts:
        if not hs.config.in_process:
            placed = await hs.ensure_image(image)
            say(f"fleet: {image} on {hs.name}: {placed.how}")
        hs.client.close()
