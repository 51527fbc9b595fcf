"""The session's schema, declared once: the column lists of requests.csv, cells.csv and samples.csv, the
cold-start phases, and the statuses a cell and a session end with.

The writer (`session.store`), the reader, the TUI, `plot`, `fit` and the importers all read these names
from here. The statuses a cell and a session end with are the events' own (`tui_profiler.events`),
named here too.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

from tui_profiler.events import CellStatus as CellStatus
from tui_profiler.events import SessionStatus as SessionStatus


class RequestStatus(StrEnum):
    """How a request ended (requests.csv `status`; the HTTP code is in `http_status`)."""

    OK = "ok"
    TIMEOUT = "timeout"  # no (whole) answer within load.timeout_s
    HTTP_ERROR = "http_error"  # an answer with a status the template does not expect
    CHECK_FAILED = "check_failed"  # the answer lacks the field the template's check asks for
    ERROR = "error"  # no answer: connection refused or reset, a protocol error, a stream error event
    DROPPED = "dropped"  # open loop: never sent, every connection was busy at its scheduled time


class StopReason(StrEnum):
    """Why a cell's timed load ended (cells.csv `stop_reason`)."""

    CONVERGED = "converged"  # every [load.stop] (or [load.stable_ci]) goal was met
    MAX_REQUESTS = "max_requests"  # a stop rule's cell reached its request cap before converging
    MAX_DURATION = "max_duration"  # a stop rule's cell reached its time cap before converging
    ERRORS = "errors"  # the load generator failed, or no timed request was answered
    REQUESTS = "requests"  # a fixed count (load.requests, no stop rule) was sent
    DURATION = "duration"  # a fixed duration (load.duration_s, no stop rule) ran out
    INTERRUPTED = "interrupted"  # stopped from outside (the user): such a cell writes no cells.csv row


# The percentile intervals of cells.csv (stats.quantile_interval; ITL's: stats.BatchedHistogram), why the
# load ended and the timed requests it took. Generative columns stay empty for other cells.
INTERVAL_CELL_COLUMNS: tuple[str, ...] = (
    "p50_lo_s",
    "p50_hi_s",
    "p90_lo_s",
    "p90_hi_s",
    "p99_lo_s",
    "p99_hi_s",
    "p99_n_needed",
    "latency_dependence",
    "stop_reason",
    "timed_requests",
    *(f"{m}_{p}_{b}_s" for m in ("ttft", "tpot", "itl") for p in ("p50", "p99") for b in ("lo", "hi")),
)


class GenColumn(StrEnum):
    """The columns of generative (token-streaming) answers, in the order the CSV files write them. Code
    that reads one (the TUI, `fit`) names it through this enum."""

    OUTPUT_LEN = "output_len"  # the output length asked for (requests.csv and cells.csv)
    # requests.csv
    TTFT_S = "ttft_s"  # time to first token
    TPOT_S = "tpot_s"  # time per output token after the first
    ITL_P50_S = "itl_p50_s"  # the request's inter-token gaps (cells.csv: every gap of the cell pooled)
    ITL_P99_S = "itl_p99_s"
    PROMPT_TOKENS = "prompt_tokens"
    OUTPUT_TOKENS = "output_tokens"
    OUTPUT_TOKENS_SOURCE = "output_tokens_source"  # 'usage' (the server's count) | 'events' (counted here)
    SERVER_PREFILL_MS = "server_prefill_ms"  # the server's own times, from its final event or Server-Timing
    SERVER_DECODE_MS = "server_decode_ms"
    # cells.csv
    TTFT_P50_S = "ttft_p50_s"
    TTFT_P99_S = "ttft_p99_s"
    TPOT_P50_S = "tpot_p50_s"
    TPOT_P99_S = "tpot_p99_s"
    OUTPUT_TOKENS_MEAN = "output_tokens_mean"
    OUTPUT_TOKENS_PER_S = "output_tokens_per_s"
    GOODPUT_RPS = "goodput_rps"  # requests/s meeting every SLO of [slo]
    SLO_MET_FRACTION = "slo_met_fraction"


G = GenColumn
# generative answers (streamed or whole): tokens and their timing, measured by the load generator
GENERATIVE_REQUEST_COLUMNS: tuple[str, ...] = tuple(
    c.value
    for c in (
        G.OUTPUT_LEN,
        G.TTFT_S,
        G.TPOT_S,
        G.ITL_P50_S,
        G.ITL_P99_S,
        G.PROMPT_TOKENS,
        G.OUTPUT_TOKENS,
        G.OUTPUT_TOKENS_SOURCE,
        G.SERVER_PREFILL_MS,
        G.SERVER_DECODE_MS,
    )
)
# token timing over the cell's answered requests, and goodput against [slo]
GENERATIVE_CELL_COLUMNS: tuple[str, ...] = tuple(
    c.value
    for c in (
        G.OUTPUT_LEN,
        G.TTFT_P50_S,
        G.TTFT_P99_S,
        G.TPOT_P50_S,
        G.TPOT_P99_S,
        G.ITL_P50_S,
        G.ITL_P99_S,
        G.OUTPUT_TOKENS_MEAN,
        G.OUTPUT_TOKENS_PER_S,
        G.GOODPUT_RPS,
        G.SLO_MET_FRACTION,
    )
)
del G

# Prompts (load.inputs.prompt_pool) and what the server said of them, per request: the prompt tokens it
# served from its prefix cache (`usage.prompt_tokens_details.cached_tokens`) and why it stopped generating
# (`finish_reason`: "length" when it reached the output length asked for).
PROMPT_REQUEST_COLUMNS: tuple[str, ...] = ("cached_prompt_tokens", "finish_reason")
# ... and per cell: how many different inputs its requests sent and whether one was sent twice, the mean
# cached prompt tokens, and whether every answer had the output length asked for (true / false; empty
# without output_len or without a count to judge by) with the number that fell short of it.
PROMPT_CELL_COLUMNS: tuple[str, ...] = (
    "distinct_inputs",
    "inputs_cycled",
    "cached_prompt_tokens_mean",
    "output_len_honoured",
    "output_short_requests",
)


# What explains a request's time beyond the model (issue 24): the server's own queue time (Server-Timing
# `queue`), and what the target's CPU did while the request was in flight (`sample.request_cpu`: its share
# of the cgroup's CPU time, throttled time and throttled periods; empty with `[load] per_request_cgroup =
# false`, for --url, or where the cgroup cannot be read).
TAIL_REQUEST_COLUMNS: tuple[str, ...] = ("queue_ms", "cpu_ms", "throttled_ms", "throttled_periods")
# ... and per cell: CPU time per request, how much of the tail was throttled (the slowest 10% of the timed
# requests), the p99 of the throttled and unthrottled requests, the verdict in words, and the server's own
# Prometheus metrics (`server_metrics`: a JSON object {metric: {"mean": ..., "peak": ...}}, empty without
# `[target] metrics`; one column, so the header never varies with the metrics chosen).
TAIL_CELL_COLUMNS: tuple[str, ...] = (
    "queue_ms_mean",
    "cpu_ms_p50",
    "cpu_ms_mean",
    "tail_throttled_share",
    "p99_throttled_s",
    "p99_unthrottled_s",
    "tail_verdict",
    "server_metrics",
)
# server_metrics.csv: the target's Prometheus metrics scraped during each cell (`sample.prometheus`);
# counters as rates (per second, `metric` suffixed `:rate`), histograms' buckets kept (`le` in labels).
SERVER_METRIC_COLUMNS: list[str] = ["cell_index", "t_s", "metric", "labels", "value"]


# The runs of columns that requests.csv and a cell's settings share (requests.csv interleaves them with
# the AC-Prof long format's own order).
_AC_PROF_SETTING = (
    "model_name",
    "cpu_cores",
    "gpu_mode",
    "mem_cap_gb",
    "batch_size",
    "token_len",
    "repeat_idx",
)
_WHERE_AND_SIZE = (
    "cell_index",
    "container_idx",
    "host",
    "host_class",
    "input_scale",
    "pixels",
    "height",
    "width",
    "concurrency",
    "rate",
)
_CAPS_ENFORCED = ("gpus", "cpus_enforced", "mem_enforced", "gpus_enforced", "cpuset")

# A cell's settings: the leading columns of its cells.csv row and of its requests.csv rows.
SETTING_COLUMNS: tuple[str, ...] = (
    *_AC_PROF_SETTING,
    *_WHERE_AND_SIZE,
    *_CAPS_ENFORCED,
    "output_len",
    "shared_prefix_tokens",  # prompts: the tokens every request of the cell shares at its start
)

# A request's own input (`load.inputs.Payload.as_row`): per request when a cell sends several inputs.
INPUT_COLUMNS: tuple[str, ...] = (
    "input_scale",
    "pixels",
    "height",
    "width",
    "token_len",
    "batch_size",
    "bytes_sent",
    "body_bytes",
    "input_index",
    "input_hash",
)

# What every requests.csv row of a cell shares, whatever its input: the writer formats these once a cell.
CELL_CONSTANT_COLUMNS: tuple[str, ...] = tuple(c for c in SETTING_COLUMNS if c not in INPUT_COLUMNS)

# What the load generator measured of one answer (and when and how it sent the request), in requests.csv's
# order: a run of REQUEST_COLUMNS and part of LOAD_GENERATOR_COLUMNS below.
ANSWER_COLUMNS: tuple[str, ...] = (
    "http_status",
    "decode_ms",
    "preprocess_ms",
    "infer_ms",
    "encode_ms",
    "server_total_ms",
    "overhead_ms",
    "bytes_sent",
    "bytes_received",
    "t_send_s",
    "t_recv_s",
    "scheduled_delay_s",
    "worker",
)

REQUEST_COLUMNS = [
    # the AC-Prof long format, in its order (avg_power_w / peak_power_w / energy_j are not measured here)
    "timestamp_ms",
    *_AC_PROF_SETTING,
    "warmup",
    "latency_s",
    "cold_start_s",
    "status",
    "error",
    # tui-profiler's additions
    *_WHERE_AND_SIZE,
    *ANSWER_COLUMNS,
    *_CAPS_ENFORCED,
    # users' own inputs (load.sources): which input the request sent, a short hash of its source, and the
    # request body's size (bytes_sent is the whole request: head and body)
    "input_index",
    "input_hash",
    "body_bytes",
    *GENERATIVE_REQUEST_COLUMNS,
    "shared_prefix_tokens",
    *PROMPT_REQUEST_COLUMNS,
    *TAIL_REQUEST_COLUMNS,
]


# The columns of requests.csv that the load generator measures for each request (`RequestResult.as_row`);
# the others are the cell's (its settings, its payload) and its container's cold start.
LOAD_GENERATOR_COLUMNS: tuple[str, ...] = (
    "timestamp_ms",
    "warmup",
    "latency_s",
    "status",  # how the request ended (RequestStatus)
    "error",
    *ANSWER_COLUMNS,
    *(c for c in GENERATIVE_REQUEST_COLUMNS if c != GenColumn.OUTPUT_LEN),  # output_len is the cell's
    *PROMPT_REQUEST_COLUMNS,
    *TAIL_REQUEST_COLUMNS,
)


class ColdStartPhaseName(StrEnum):
    """The phases of a container's cold start, in the order they happen. `cold_start_s` is their sum."""

    IMAGE_PULL = "image_pull"
    CREATE = "create"
    START = "start"
    SERVER_BOOT = "server_boot"  # process start -> imports done (from the server's /healthz timeline)
    MODEL_LOAD = "model_load"  # imports done -> model loaded
    READY = "ready"  # until the readiness probe passed
    FIRST_REQUEST = "first_request"  # the first request's latency (cold caches, lazy init)


COLD_START_PHASES: tuple[str, ...] = tuple(p.value for p in ColdStartPhaseName)

# A cell's saturation and interference (sweep.saturation): whether its numbers are the target's. `saturation`:
# "", or `client`, `server`, `host` joined by "+"; the rest are what it was judged on (None: not available).
SATURATION_COLUMNS: tuple[str, ...] = (
    "saturation",
    "saturation_reason",
    "saturation_not_judged",
    "client_cpu_cores",
    "client_cpu_util",
    "client_loop_busy",
    "send_lag_p50_s",
    "send_lag_p99_s",
    "achieved_rate_rps",
    "scheduled_rate_rps",
    "latency_trend",
    "latency_trend_p",
    "host_busy_cpu_cores",
    "host_other_cpu_cores",
    "cpu_pressure_some_pct",
)

# Why the sweep ran a cell (sweep.adaptive): `chosen_because` is `grid` (every cell of the plan), `search` (a
# capacity search's level), or an adaptive plan's reason — `design`, `uncertainty`, `slo-boundary`; the adaptive
# model's prediction at the cell and its 95% interval before the cell ran (empty for design cells and grids).
ADAPTIVE_COLUMNS: tuple[str, ...] = ("chosen_because", "predicted_s", "predicted_lo_s", "predicted_hi_s")

CELL_COLUMNS = [
    "cell_index",
    "container_idx",
    "host",  # the test box that ran the cell (a fleet host's name; this machine's hostname on a one-host run)
    "host_class",  # the hardware label given to that host ("" when none): `fit` groups by it
    "model_name",
    "cpu_cores",
    "mem_cap_gb",
    "gpu_mode",
    "gpus",
    "input_scale",
    "pixels",
    "token_len",
    "batch_size",
    "concurrency",
    "rate",
    "repeat_idx",
    "n",
    "errors",
    "warmup_n",
    "mean_s",
    "std_s",
    "p50_s",
    "p90_s",
    "p95_s",
    "p99_s",
    "max_s",
    "throughput_rps",
    "ci95_low_s",
    "ci95_high_s",
    *INTERVAL_CELL_COLUMNS,
    "load_wall_s",
    "server_total_ms_mean",
    "overhead_ms_mean",
    "overhead_ms_p50",
    "overhead_ms_max",
    # cold start of the container serving this cell (measured once per container: cold_start_cell = 1 on
    # the cell that paid it; the container's later cells repeat the values with cold_start_cell = 0)
    "cold_start_cell",
    "cold_start_s",
    "cold_start_wall_s",
    *[f"{p}_s" for p in COLD_START_PHASES],
    "image_pull_detail",
    "image_pull_bytes",
    "image_size_bytes",
    "weight_bytes",
    # resources during the cell's load
    "peak_cpu_cores",
    "mean_cpu_cores",
    "peak_mem_bytes",
    "throttled_periods",
    "throttled_s",
    "oom_kills",
    "peak_vram_bytes",
    "gpu_util_max_pct",
    "sample_source",
    "sample_rate_hz",
    "cpus_enforced",
    "mem_enforced",
    "gpus_enforced",
    "cpuset",
    *GENERATIVE_CELL_COLUMNS,
    "shared_prefix_tokens",
    *PROMPT_CELL_COLUMNS,
    *SATURATION_COLUMNS,
    *TAIL_CELL_COLUMNS,
    *ADAPTIVE_COLUMNS,
    "status",
    "reason",
]

SAMPLE_COLUMNS = [
    "cell_index",
    "container_idx",
    "t_s",
    "cpu_cores",
    "cpu_cap",
    "mem_bytes",
    "mem_cap_bytes",
    "mem_peak_bytes",
    "throttled_periods",
    "throttled_s",
    "gpu_util_pct",
    "vram_bytes",
    "source",
]


# What makes two cells the same measured configuration, wherever cells are matched (repetitions of one
# session, or the cells of two sessions that `compare` lines up): where, the caps, the input and the load.
CONFIGURATION_COLUMNS: tuple[str, ...] = (
    "host_class",
    "cpu_cores",
    "mem_cap_gb",
    "gpu_mode",
    "gpus",
    "input_scale",
    "pixels",
    "token_len",
    "output_len",
    "shared_prefix_tokens",
    "batch_size",
    "concurrency",
    "rate",
)

# repetitions.csv (`session.repetitions`): one row per configuration measured in several repetitions.
# A configuration: the cells.csv rows that differ only in `repeat_idx` (and their cell and container).
REPETITION_CONFIG_COLUMNS: tuple[str, ...] = ("model_name", *CONFIGURATION_COLUMNS)
REPETITION_COLUMNS: tuple[str, ...] = (
    *REPETITION_CONFIG_COLUMNS,
    "repetitions",  # how many repetitions of the configuration ended ok with a p50
    "cell_indices",  # their cells, by repeat_idx, separated by spaces
    "p50_median_s",  # the median of the repetitions' p50s, and its 95% interval (empty: not bounded)
    "p50_median_lo_s",
    "p50_median_hi_s",
    "p50_cv",  # the repetitions' p50s: standard deviation over the mean
    "p99_cv",
    "disagree",  # 1: the repetitions' own p50 intervals share no point (drift beyond noise); empty: no intervals
    "disagree_cells",  # the cells whose p50 interval excludes the median of the p50s
    "disagree_reason",
)

# capacity.csv: one row per resource configuration (and repetition) and input size of a capacity search
# (`load.search = "slo"`, `run --find-max-load`): the largest load whose SLO percentile met [slo].
CAPACITY_COLUMNS = [
    "model_name",
    "host",
    "host_class",
    "cpu_cores",
    "mem_cap_gb",
    "gpu_mode",
    "gpus",
    "repeat_idx",
    "container_idx",
    "input_scale",
    "pixels",
    "token_len",
    "output_len",
    "load_kind",  # 'concurrency' (closed loop) or 'rate' (open loop, requests/s)
    "max_load",  # the largest level that met the SLO (empty: none did)
    "next_load",  # the smallest level that failed it (empty: none did)
    "slo_metric",  # 'e2e', 'ttft' or 'tpot': the objective closest to its bound at max_load
    "slo_percentile",
    "slo_bound_s",  # the [slo] bound of that objective
    "slo_value_s",  # its percentile at max_load, with the 95% interval
    "slo_lo_s",
    "slo_hi_s",
    "slo_n",  # timed requests judged at max_load
    "throughput_rps",  # answered requests/s at max_load
    "throughput_per_core",  # throughput_rps / cpu_cores (empty when the CPUs were not capped)
    "decided",  # 1: every step's interval lay clear of the bound; 0: a step was decided at the request cap
    "stop_reason",  # resolved | ceiling | lowest_fails | no_requests
    "reason",
    "steps",  # every level tried, in order: 'LEVEL meets|fails|unsure (n=N[, note])'
    "cells",  # the cell indices the search ran (cells.csv), space-separated
]


def csv_number(value: Any) -> float | None:
    """A CSV field (or a row's value) as a number; None for 'not available': None, '', NaN, ±inf, text."""
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
