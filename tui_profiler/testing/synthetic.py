"""Deterministic synthetic event streams and session folders.

For the TUI's tests, snapshots, screenshots and the ingest benchmark only: they exercise the screens
with known data, independent of the host. Nothing here is ever shown as a measurement.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tui_profiler.events import (
    CellFinished,
    CellStarted,
    ColdStartDone,
    ColdStartPhase,
    Event,
    LogMessage,
    RequestDone,
    ResourceSample,
    SessionFinished,
    SessionStarted,
)
from tui_profiler.session.schema import CellStatus, ColdStartPhaseName, GenColumn, SessionStatus

CONFIGS = ((0.5, 1.0), (1.0, 2.0), (2.0, 4.0))
SCALES = (0.5, 1.0, 2.0)
PHASES: dict[str, float | None] = {  # seconds per cold-start phase; image_pull None: 'cached'
    ColdStartPhaseName.IMAGE_PULL.value: None,
    ColdStartPhaseName.CREATE.value: 0.08,
    ColdStartPhaseName.START.value: 0.35,
    ColdStartPhaseName.SERVER_BOOT.value: 1.9,
    ColdStartPhaseName.MODEL_LOAD.value: 0.6,
    ColdStartPhaseName.READY.value: 0.02,
    ColdStartPhaseName.FIRST_REQUEST.value: 0.15,
}


def model_latency(cpus: float, scale: float) -> float:
    """A plausible latency law: fixed cost + work growing with pixels, divided by the CPU share."""
    latency: float = 0.004 + 0.05 * scale**2 / min(cpus, 1.6) ** 0.9
    return latency


def cell_dicts() -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    for cpus, mem in CONFIGS:
        for scale in SCALES:
            cells.append(
                {
                    "index": len(cells),
                    "cpus": cpus,
                    "memory_gb": mem,
                    "gpus": 0,
                    "input_scale": scale,
                    "token_len": None,
                    "concurrency": 1,
                    "rate": None,
                    "repeat_idx": 0,
                }
            )
    return cells


def cell_summary(cell: dict[str, Any], latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)

    def q(p: float) -> float:
        pos = (len(ordered) - 1) * p
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    mean = sum(ordered) / len(ordered)
    return {
        "cell_index": cell["index"],
        "model_name": "mobilenet_v3_small",
        "cpu_cores": cell["cpus"],
        "mem_cap_gb": cell["memory_gb"],
        "gpu_mode": "off",
        "input_scale": cell["input_scale"],
        "pixels": int(224 * cell["input_scale"]) ** 2,
        "concurrency": 1,
        "n": len(ordered),
        "errors": 0,
        "mean_s": round(mean, 6),
        "p50_s": round(q(0.5), 6),
        "p90_s": round(q(0.9), 6),
        "p95_s": round(q(0.95), 6),
        "p99_s": round(q(0.99), 6),
        "max_s": round(ordered[-1], 6),
        "throughput_rps": round(1 / mean, 3),
        "peak_cpu_cores": round(min(cell["cpus"], 1.6) * 0.97, 3),
        "peak_mem_bytes": int((0.35 + 0.1 * cell["input_scale"]) * 1024**3),
        "throttled_periods": 12,
        "throttled_s": 0.42 if cell["cpus"] < 1 else 0.0,
        "oom_kills": 0,
        **{f"{k}_s": v for k, v in PHASES.items()},
        "cold_start_s": round(sum(v or 0 for v in PHASES.values()), 3),
        "wall_s": round(3.1 + sum(ordered), 3),
        "status": "ok",
    }


def event_stream(n_requests: int = 40, seed: int = 7, failed_cell: int | None = None) -> Iterator[Event]:
    """A whole small session: 9 cells (3 configs × 3 scales), cold starts, requests, samples, finishes."""
    rng = random.Random(seed)
    cells = cell_dicts()
    yield SessionStarted(
        "20250101-000000-synthetic",
        "output/20250101-000000-synthetic",
        "synthetic",
        "docker",
        "Docker engine reachable (synthetic data)",
        len(cells),
    )
    for cell in cells:
        i = cell["index"]
        yield CellStarted(i, len(cells), cell, eta_s=30.0 * (len(cells) - i))
        for phase, seconds in PHASES.items():
            yield ColdStartPhase(i, phase, seconds, "cached" if seconds is None else "")
        yield ColdStartDone(
            i,
            dict(PHASES),
            sum(v or 0 for v in PHASES.values()),
            {"cpus_enforced": True, "mem_enforced": True},
        )
        base = model_latency(cell["cpus"], cell["input_scale"])
        latencies = []
        t = 0.0
        for k in range(n_requests):
            latency = base * math.exp(rng.gauss(0, 0.08))
            t += latency
            warm = k < 2
            if not warm:
                latencies.append(latency)
            yield RequestDone(
                i, t, latency, True, warm, 200, server_total_ms=latency * 900, overhead_ms=latency * 100
            )
            if k % 4 == 0:
                cpu = min(cell["cpus"], 1.6) * (0.85 + 0.1 * rng.random())
                yield ResourceSample(
                    i,
                    t,
                    cpu_cores=cpu,
                    cpu_cap=cell["cpus"],
                    mem_bytes=int((0.3 + 0.1 * cell["input_scale"]) * 1024**3),
                    mem_cap_bytes=int(cell["memory_gb"] * 1024**3),
                    mem_peak_bytes=int((0.35 + 0.1 * cell["input_scale"]) * 1024**3),
                    throttled_periods=k,
                    throttled_s=0.01 * k,
                    source="cgroup-v1",
                )
        if failed_cell == i:
            yield LogMessage("error", f"cell {i + 1}: server exited (OOM kill)", i)
            yield CellFinished(
                i,
                CellStatus.OOM,
                "OOM kill at 1.0 GiB",
                {**cell_summary(cell, latencies), "status": CellStatus.OOM.value},
            )
        else:
            yield CellFinished(i, CellStatus.OK, "", cell_summary(cell, latencies))
    yield SessionFinished("output/20250101-000000-synthetic", SessionStatus.OK, len(cells), 0, 120.0)


def write_session(
    root: Path, name: str = "20250101-000000-synthetic", n_requests: int = 30, seed: int = 7
) -> Path:
    """A complete session folder in the store's format (requests/cells/samples CSV, meta.json)."""
    session = Path(root) / name
    session.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    cells = cell_dicts()
    request_rows, cell_rows, sample_rows = [], [], []
    for cell in cells:
        base = model_latency(cell["cpus"], cell["input_scale"])
        latencies = []
        t = 0.0
        for k in range(n_requests):
            latency = base * math.exp(rng.gauss(0, 0.08))
            t += latency
            warm = k < 2
            if not warm:
                latencies.append(latency)
            request_rows.append(
                {
                    "timestamp_ms": 1735689600000 + int(t * 1000),
                    "model_name": "mobilenet_v3_small",
                    "cpu_cores": cell["cpus"],
                    "gpu_mode": "off",
                    "mem_cap_gb": cell["memory_gb"],
                    "batch_size": 1,
                    "token_len": "",
                    "repeat_idx": 0,
                    "warmup": warm,
                    "latency_s": round(latency, 6),
                    "cold_start_s": 3.1,
                    "status": "ok",
                    "error": "",
                    "cell_index": cell["index"],
                    "input_scale": cell["input_scale"],
                    "pixels": int(224 * cell["input_scale"]) ** 2,
                    "concurrency": 1,
                    "rate": "",
                    "http_status": 200,
                    "server_total_ms": round(latency * 900, 3),
                    "overhead_ms": round(latency * 100, 3),
                    "t_send_s": round(t - latency, 6),
                    "t_recv_s": round(t, 6),
                }
            )
            sample_rows.append(
                {
                    "cell_index": cell["index"],
                    "t_s": round(t, 6),
                    "cpu_cores": round(min(cell["cpus"], 1.6) * 0.9, 3),
                    "cpu_cap": cell["cpus"],
                    "mem_bytes": int(0.3 * 1024**3),
                    "mem_cap_bytes": int(cell["memory_gb"] * 1024**3),
                    "vram_bytes": "",
                    "gpu_util_pct": "",
                    "source": "cgroup-v1",
                }
            )
        cell_rows.append(cell_summary(cell, latencies))
    _write_files(
        session,
        {"requests.csv": request_rows, "cells.csv": cell_rows, "samples.csv": sample_rows},
        {
            "session_id": name,
            "preset_name": "synthetic",
            "runtime": "docker",
            "status": "ok",
            "n_cells": len(cells),
            "wall_s": 120.0,
            "note": "synthetic data for TUI tests",
        },
    )
    return session


def _write_files(session: Path, tables: dict[str, list[dict[str, Any]]], meta: dict[str, Any]) -> None:
    """Each table as a CSV file (columns in its first row's order), and meta.json."""
    import csv

    for filename, rows in tables.items():
        with (session / filename).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    (session / "meta.json").write_text(json.dumps(meta, indent=2))


# ------------------------------------------------------------------------------------------ generative

GEN_CONFIGS = ((1.0, 2.0), (2.0, 4.0))
PROMPT_LENS = (32, 256, 1024)
OUTPUT_LEN = 32
GEN_MODEL = "decoder_small"


def model_ttft(cpus: float, prompt_tokens: float) -> float:
    """A plausible prefill law: fixed cost + work linear in the prompt, mostly parallel."""
    return 0.01 + 2.5e-4 * prompt_tokens * (0.2 + 0.8 / cpus)


def model_tpot(cpus: float, context_tokens: float) -> float:
    """A plausible decode law: per token a fixed cost + attention over the context."""
    return 0.012 + 2e-5 * context_tokens * (0.3 + 0.7 / cpus)


def generative_cell_dicts() -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    for cpus, mem in GEN_CONFIGS:
        for prompt in PROMPT_LENS:
            cells.append(
                {
                    "index": len(cells),
                    "cpus": cpus,
                    "memory_gb": mem,
                    "gpus": 0,
                    "input_scale": None,
                    "token_len": prompt,
                    GenColumn.OUTPUT_LEN.value: OUTPUT_LEN,
                    "concurrency": 1,
                    "rate": None,
                    "repeat_idx": 0,
                }
            )
    return cells


def generative_request(cell: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One streamed answer's generative columns (and its end-to-end latency)."""
    prompt = int(cell["token_len"])
    ttft = model_ttft(cell["cpus"], prompt) * math.exp(rng.gauss(0, 0.06))
    tpot = model_tpot(cell["cpus"], prompt + OUTPUT_LEN) * math.exp(rng.gauss(0, 0.04))
    return {
        "latency_s": round(ttft + tpot * (OUTPUT_LEN - 1), 6),
        GenColumn.TTFT_S.value: round(ttft, 6),
        GenColumn.TPOT_S.value: round(tpot, 6),
        GenColumn.ITL_P50_S.value: round(tpot * 0.97, 6),
        GenColumn.ITL_P99_S.value: round(tpot * (1.5 + 0.3 * rng.random()), 6),
        GenColumn.PROMPT_TOKENS.value: prompt,
        GenColumn.OUTPUT_TOKENS.value: OUTPUT_LEN,
        GenColumn.OUTPUT_TOKENS_SOURCE.value: "usage",
        GenColumn.OUTPUT_LEN.value: OUTPUT_LEN,
    }


def generative_cell_summary(cell: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    def q(values: list[float], p: float) -> float:
        ordered = sorted(values)
        pos = (len(ordered) - 1) * p
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo), 6)

    latencies = [r["latency_s"] for r in rows]
    mean = sum(latencies) / len(latencies)
    ttft = [r[GenColumn.TTFT_S] for r in rows]
    tpot = [r[GenColumn.TPOT_S] for r in rows]
    return {
        "cell_index": cell["index"],
        "model_name": GEN_MODEL,
        "cpu_cores": cell["cpus"],
        "mem_cap_gb": cell["memory_gb"],
        "gpu_mode": "off",
        "token_len": cell["token_len"],
        "concurrency": 1,
        "n": len(rows),
        "errors": 0,
        "mean_s": round(mean, 6),
        "p50_s": q(latencies, 0.5),
        "p99_s": q(latencies, 0.99),
        "max_s": round(max(latencies), 6),
        "throughput_rps": round(1 / mean, 3),
        "peak_cpu_cores": round(cell["cpus"] * 0.97, 3),
        "peak_mem_bytes": int((0.6 + 0.0002 * cell["token_len"]) * 1024**3),
        "throttled_s": 0.3 if cell["cpus"] < 2 else 0.0,
        "oom_kills": 0,
        "status": "ok",
        GenColumn.OUTPUT_LEN.value: OUTPUT_LEN,
        GenColumn.TTFT_P50_S.value: q(ttft, 0.5),
        GenColumn.TTFT_P99_S.value: q(ttft, 0.99),
        GenColumn.TPOT_P50_S.value: q(tpot, 0.5),
        GenColumn.TPOT_P99_S.value: q(tpot, 0.99),
        GenColumn.ITL_P50_S.value: q([r[GenColumn.ITL_P50_S] for r in rows], 0.5),
        GenColumn.ITL_P99_S.value: q([r[GenColumn.ITL_P99_S] for r in rows], 0.99),
        GenColumn.OUTPUT_TOKENS_PER_S.value: round(OUTPUT_LEN / mean, 3),
    }


def generative_event_stream(n_requests: int = 24, seed: int = 11) -> Iterator[Event]:
    """A small generative session: 2 CPU configs × 3 prompt lengths, streamed answers of 32 tokens."""
    rng = random.Random(seed)
    cells = generative_cell_dicts()
    yield SessionStarted(
        "20250102-000000-synthetic-llm",
        "output/20250102-000000-synthetic-llm",
        "synthetic_llm",
        "docker",
        "Docker engine reachable (synthetic data)",
        len(cells),
    )
    for cell in cells:
        i = cell["index"]
        yield CellStarted(i, len(cells), cell, eta_s=20.0 * (len(cells) - i))
        if i % len(PROMPT_LENS) == 0:  # one container per resource config
            for phase, seconds in PHASES.items():
                yield ColdStartPhase(i, phase, seconds, "cached" if seconds is None else "")
            yield ColdStartDone(
                i,
                dict(PHASES),
                sum(v or 0 for v in PHASES.values()),
                {"cpus_enforced": True, "mem_enforced": True},
            )
        rows = []
        t = 0.0
        for k in range(n_requests):
            row = generative_request(cell, rng)
            latency = row["latency_s"]
            t += latency
            warm = k < 2
            if not warm:
                rows.append(row)
            yield RequestDone(i, t, latency, True, warm, 200, row=row)
            if k % 2 == 0:
                yield ResourceSample(
                    i,
                    t,
                    cpu_cores=cell["cpus"] * (0.85 + 0.1 * rng.random()),
                    cpu_cap=cell["cpus"],
                    mem_bytes=int((0.55 + 0.0002 * cell["token_len"]) * 1024**3),
                    mem_cap_bytes=int(cell["memory_gb"] * 1024**3),
                    mem_peak_bytes=int((0.6 + 0.0002 * cell["token_len"]) * 1024**3),
                    source="cgroup-v2",
                )
        yield CellFinished(i, CellStatus.OK, "", generative_cell_summary(cell, rows))
    yield SessionFinished("output/20250102-000000-synthetic-llm", SessionStatus.OK, len(cells), 0, 90.0)


def write_generative_session(
    root: Path, name: str = "20250102-000000-synthetic-llm", n_requests: int = 24, seed: int = 11
) -> Path:
    """A complete generative session folder: requests.csv and cells.csv with the generative columns."""
    session = Path(root) / name
    session.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    request_rows, cell_rows = [], []
    for cell in generative_cell_dicts():
        rows = []
        t = 0.0
        for k in range(n_requests):
            row = generative_request(cell, rng)
            t += row["latency_s"]
            warm = k < 2
            if not warm:
                rows.append(row)
            request_rows.append(
                {
                    "timestamp_ms": 1735776000000 + int(t * 1000),
                    "model_name": GEN_MODEL,
                    "cpu_cores": cell["cpus"],
                    "gpu_mode": "off",
                    "mem_cap_gb": cell["memory_gb"],
                    "batch_size": 1,
                    "token_len": cell["token_len"],
                    "repeat_idx": 0,
                    "warmup": warm,
                    "status": "ok",
                    "error": "",
                    "cell_index": cell["index"],
                    "concurrency": 1,
                    "http_status": 200,
                    **row,
                }
            )
        cell_rows.append(generative_cell_summary(cell, rows))
    _write_files(
        session,
        {"requests.csv": request_rows, "cells.csv": cell_rows},
        {
            "session_id": name,
            "preset_name": "synthetic_llm",
            "runtime": "docker",
            "status": "ok",
            "n_cells": len(cell_rows),
            "wall_s": 90.0,
            "note": "synthetic generative data for TUI tests",
        },
    )
    return session
