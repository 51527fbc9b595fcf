"""TUI ingest benchmark: `bench.tui_ingest.measure_ingest`, run as `python -m tui_profiler.bench.tui_ingest N`
in a fresh process so its memory figure is the app's own (not this process's torch or earlier benchmarks)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from tui_profiler.bench.core import BenchReport, judge, measured

EVENTS_FULL = 1_000_000
EVENTS_QUICK = 50_000

INGEST_MODULE = "tui_profiler.bench.tui_ingest"


def ingest(n_events: int, timeout_s: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", INGEST_MODULE, str(n_events)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if out.returncode != 0:
        raise RuntimeError(f"measure_ingest failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run_tui_bench(report: BenchReport, *, quick: bool, say: Callable[[str], None]) -> None:
    n = EVENTS_QUICK if quick else EVENTS_FULL
    say(f"tui: pushing {n:,} request events through the live screen (headless)")
    r = ingest(n, timeout_s=1800)
    subject = f"live screen, {r.get('terminal', '?')} terminal"
    rate, redraws, rss = r["events_per_s"], r["redraws_per_s"], r["rss_mb_after"]
    rss_target = "≤ 200 MB" + (" (at 1,000,000)" if quick else "")
    rss_met = judge(rss, at_most=200.0 / 1.048576) if not quick else None  # 200 MB in MiB
    rows: list[tuple[str, float, str, str, bool | None, str]] = [
        # measure, value (one long run), unit, target, met, note
        ("events/s absorbed", rate, "events/s", "≥ 5,000 events/s", judge(rate, at_least=5000.0),
         f"{r['events']:,} events in {r['seconds']:.1f} s"),
        ("redraws/s meanwhile", redraws, "redraws/s", "≥ 4 redraws/s", judge(redraws, at_least=4.0),
         f"longest gap {r.get('max_redraw_gap_s')} s"),
        (f"app memory (RSS) after {r['events']:,} requests", rss, "MiB", rss_target, rss_met,
         f"{r['rss_mb_before']} MiB before the events"),
        ("redraw: prepare + plot render", r["redraw_prepare_ms"] + r["plot_render_ms_per_redraw"], "ms/redraw",
         "", None, ""),
    ]  # fmt: skip
    for measure, value, unit, target, met, note in rows:
        report.measures.append(
            measured("tui", measure, subject, [value], unit, target=target, met=met, note=note)
        )
    report.note(
        "tui",
        "`tui_profiler.bench.tui_ingest.measure_ingest` (the TUI's own benchmark) in a fresh "
        "process: the app runs headless (Textual's test driver) on the live screen while "
        f"{n:,} synthetic RequestDone events (a requests.csv-sized row each) are pushed through "
        "the engine's emit path as fast as the loop allows; one run (a long average)."
        + (" --quick: the memory target (at 1,000,000 requests) is not judged." if quick else ""),
    )
