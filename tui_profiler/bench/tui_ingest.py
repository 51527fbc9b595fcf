"""How many request events per second the live screen absorbs while it keeps redrawing.

`measure_ingest(n_events)` runs the app headless (Textual's test driver), opens the live screen and
pushes synthetic `RequestDone` events through the same `emit` path the engine uses (`LiveState.ingest`),
yielding to the event loop between batches as the engine does between network reads. It reports the
absorbed rate, the redraws that happened meanwhile and the process's resident memory. `tui-profiler
bench tui` runs `python -m tui_profiler.bench.tui_ingest N` (one JSON line out); it asserts nothing itself.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import tempfile
import time
from typing import Any

from tui_profiler.events import CellStarted, ColdStartDone, RequestDone, ResourceSample, SessionStarted
from tui_profiler.session.schema import ColdStartPhaseName


def rss_mb() -> float:
    """Current resident set size (MiB), from /proc; falls back to the peak from getrusage."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _row(i: int) -> dict[str, Any]:
    # A requests.csv-sized row: the engine attaches one to every event.
    return {
        "timestamp_ms": 1735689600000 + i,
        "model_name": "synthetic",
        "cpu_cores": 2.0,
        "gpu_mode": "off",
        "mem_cap_gb": 4.0,
        "batch_size": 1,
        "token_len": None,
        "repeat_idx": 0,
        "warmup": False,
        "latency_s": 0.001,
        "cold_start_s": 3.0,
        "status": "ok",
        "error": "",
        "cell_index": 0,
        "input_scale": 1.0,
        "pixels": 50176,
        "concurrency": 64,
        "rate": None,
        "http_status": 200,
        "decode_ms": 0.01,
        "preprocess_ms": 0.1,
        "infer_ms": 0.8,
        "encode_ms": 0.01,
        "server_total_ms": 0.92,
        "overhead_ms": 0.08,
        "bytes_sent": 602112,
        "bytes_received": 80,
        "t_send_s": i * 1e-4,
        "t_recv_s": i * 1e-4 + 0.001,
    }


async def _measure(n_events: int, batch: int, size: tuple[int, int], rate: float | None) -> dict[str, Any]:
    from tui_profiler.tui.app import make_app
    from tui_profiler.tui.screens.live import LiveScreen
    from tui_profiler.tui.widgets.plots import LinePlot

    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(output_dir=tmp)
        async with app.run_test(size=size) as pilot:
            await pilot.press("f3")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, LiveScreen)
            state = app.live_state
            cell = {
                "index": 0,
                "cpus": 2.0,
                "memory_gb": 4.0,
                "gpus": 0,
                "input_scale": 1.0,
                "concurrency": 64,
            }
            state.ingest(SessionStarted("bench", tmp, "bench", "docker", "synthetic events", 1))
            state.ingest(CellStarted(0, 1, cell))
            state.ingest(
                ColdStartDone(
                    0,
                    {
                        ColdStartPhaseName.CREATE: 0.1,
                        ColdStartPhaseName.START: 0.3,
                        ColdStartPhaseName.READY: 1.0,
                    },
                    1.4,
                )
            )
            await pilot.pause(0.3)
            plots = list(screen.query(LinePlot))
            render_before = sum(p.render_s for p in plots)
            prep_before = screen.redraw_cpu_s
            rss_before = rss_mb()
            redraws_before = screen.redraws
            plot_refreshes_before = screen.plot_refreshes
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            emitted = 0
            while emitted < n_events:
                end = min(n_events, emitted + batch)
                for i in range(emitted, end):
                    t = i * 1e-4
                    # A fresh row per event, as the engine sends: memory must not grow with them.
                    state.ingest(
                        RequestDone(
                            0,
                            t,
                            0.001 + (i % 97) * 1e-5,
                            True,
                            False,
                            200,
                            server_total_ms=0.92,
                            overhead_ms=0.08,
                            row=_row(i),
                        )
                    )
                    if i % 500 == 0:  # samples arrive at ~20 Hz against thousands of requests
                        state.ingest(
                            ResourceSample(
                                0,
                                t,
                                cpu_cores=1.8,
                                cpu_cap=2.0,
                                mem_bytes=400 << 20,
                                mem_cap_bytes=4 << 30,
                                source="synthetic",
                            )
                        )
                emitted = end
                if rate:
                    ahead = emitted / rate - (time.perf_counter() - t0)
                    await asyncio.sleep(max(0.0, ahead))
                else:
                    await asyncio.sleep(0)
            elapsed = time.perf_counter() - t0
            cpu_s = time.process_time() - cpu0
            redraws = screen.redraws - redraws_before
            times = [t for t in screen.redraw_times if t >= t0]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            await pilot.pause(0.3)  # the last redraw shows the final state
            result = {
                "events": n_events,
                "seconds": round(elapsed, 3),
                "events_per_s": round(n_events / elapsed, 1),
                "offered_rate": rate,
                # CPU this process got meanwhile: on a shared machine, wall-clock rates understate the UI
                "cpu_s": round(cpu_s, 3),
                "cpu_share_of_one_core": round(cpu_s / elapsed, 2),
                "redraws": redraws,
                "redraws_per_s": round(redraws / elapsed, 2),
                "plot_refreshes_per_s": round((screen.plot_refreshes - plot_refreshes_before) / elapsed, 2),
                "max_redraw_gap_s": round(max(gaps), 3) if gaps else None,
                "redraw_prepare_ms": round(1e3 * (screen.redraw_cpu_s - prep_before) / max(redraws, 1), 2),
                "plot_render_ms_per_redraw": round(
                    1e3 * (sum(p.render_s for p in plots) - render_before) / max(redraws, 1), 2
                ),
                "rss_mb_before": round(rss_before, 1),
                "rss_mb_after": round(rss_mb(), 1),
                "latency_points_kept": len(state.latencies),
                "terminal": f"{size[0]}x{size[1]}",
                "batch": batch,
            }
            await pilot.press("ctrl+q")
    return result


def measure_ingest(
    n_events: int = 100_000, *, batch: int = 200, size: tuple[int, int] = (120, 40), rate: float | None = None
) -> dict[str, Any]:
    """Push `n_events` RequestDone events through the live screen headless; report events/s, redraws/s
    and resident memory. `rate` paces the producer (events/s); None pushes as fast as the loop allows."""
    return asyncio.run(_measure(n_events, batch, size, rate))


if __name__ == "__main__":
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(json.dumps(measure_ingest(n)))
