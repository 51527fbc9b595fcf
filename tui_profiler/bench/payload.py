"""Payload benchmark: what moving the input costs, next to what the model costs.

1. Scales 0.1–2.0 of a 667×1000 RGB image (the AC-Prof FCN input), float32: our default encoding (raw
   bytes + X-Tensor-Shape) against the reference scripts' JSON list (`{"tensor": [[[...]]]}`), each as
   client encode + server decode, plus the server's own encode of the answer. Counted against the
   inference time of FCN-ResNet50 (random weights) at the same scale, in the same process: the server's
   own code (`servers.model_server.ModelState`), no HTTP in between.
   The raw body is encoded once per cell by our load generator (never per request); it is counted here
   anyway, as if it were paid every request, so the share is an upper bound.
2. Every catalog model at its default input size: the server's decode + encode time as a share of its
   inference time, from the server's own per-request timings (`ModelState.handle`, as Server-Timing
   reports them). The big models run one or two requests.
"""

from __future__ import annotations

import functools
import gc
import json
import time
from collections.abc import Callable
from typing import Any

from tui_profiler.bench.core import BenchReport, judge, measured, median

BASE_HW = (667, 1000)
SCALES_FULL = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0)
SCALES_QUICK = (0.1, 0.25)
BIG_MODELS = ("fcn_resnet50", "deeplabv3_resnet50")
SHARE_TARGET = "≤ 1% of inference"


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


THREADS = "1"  # one torch thread: on a shared machine, intra-op threads make every time erratic


def _state(model: str, warmup: int = 1) -> Any:
    """Our server's model state, loaded in this process with random weights and one torch thread."""
    import os

    from servers.catalog import get_entry
    from servers.model_server import ModelState

    state = ModelState(
        entry=get_entry(model),
        weights="random",
        device_request="cpu",
        hub_repo=None,
        hub_model=None,
        warmup_runs=warmup,
    )
    before = os.environ.get("TUI_PROFILER_THREADS")
    os.environ["TUI_PROFILER_THREADS"] = THREADS
    try:
        state.load()
    finally:
        if before is None:
            os.environ.pop("TUI_PROFILER_THREADS", None)
        else:
            os.environ["TUI_PROFILER_THREADS"] = before
    return state


def _raw_request(array: Any) -> tuple[bytes, dict[str, str]]:
    return array.tobytes(), {
        "x-tensor-shape": ",".join(map(str, array.shape)),
        "x-tensor-dtype": array.dtype.name,
    }


def _one_scale(fcn: Any, s: float, quick: bool) -> list[Any]:
    """Raw vs JSON at one scale of 667×1000, against FCN-ResNet50's inference at that scale."""
    import numpy as np

    from tui_profiler.load.inputs import InputSpec, encode_input

    spec = InputSpec(kind="image", base_size=BASE_HW, scale=s, encoding="raw")
    enc = encode_input(spec)
    raw_body = enc.body
    headers = {k.lower(): v for k, v in enc.headers.items()}
    array = np.frombuffer(raw_body, dtype=np.float32).reshape(enc.shape)
    big = array.size > 2_000_000  # from ~0.7 of 667×1000: fewer repeats of the slow JSON path
    reps = (1 if big else 3) if quick else (2 if big else 5)

    def raw_decode() -> Any:
        return fcn.decode(raw_body, "application/octet-stream", headers)

    def json_encode() -> bytes:
        return json.dumps({"tensor": array.tolist()}).encode()

    # ours: client encode (tobytes, as the load generator does once per cell) + server decode
    raw_enc = [_timed(array.tobytes)[0] for _ in range(reps)]
    raw_dec = [_timed(raw_decode)[0] for _ in range(reps)]
    # the reference style: the array as a JSON list, dumped per request; the server parses it
    json_enc: list[float] = []
    json_body = b""
    for _ in range(reps):
        dt, json_body = _timed(json_encode)
        json_enc.append(dt)

    def json_decode() -> Any:
        return fcn.decode(json_body, "application/json", {})

    json_dec = [_timed(json_decode)[0] for _ in range(reps)]
    mb_raw, mb_json = len(raw_body) / 1e6, len(json_body) / 1e6
    json_body = b""
    gc.collect()
    # the model at this scale, through the server's own request path (decode, preprocess, infer, encode)
    n_inf = 1 if (big or quick) else 2
    runs = [
        fcn.handle(raw_body, "application/octet-stream", headers, time.perf_counter())[1]
        for _ in range(n_inf)
    ]
    server_enc = [r["encode"] for r in runs]
    inf_ms = float(median(r["infer"] for r in runs) or 0.0) * 1e3
    enc_ms = float(median(server_enc) or 0.0) * 1e3
    ours = [(a + b) * 1e3 for a, b in zip(raw_enc, raw_dec, strict=True)]
    theirs = [(a + b) * 1e3 for a, b in zip(json_enc, json_dec, strict=True)]
    h, w = spec.scaled_hw()
    label = f"×{s:g} ({h}×{w})"
    out = []
    m_ours = measured(
        "payload",
        f"{label} client encode + server decode",
        "ours (raw)",
        ours,
        "ms",
        note=f"{mb_raw:.1f} MB; client part paid once per cell, counted anyway",
    )
    m_json = measured(
        "payload",
        f"{label} client encode + server decode",
        "JSON list",
        theirs,
        "ms",
        note=f"{mb_json:.1f} MB",
    )
    m_json.ratio = (m_json.value / m_ours.value) if m_ours.value and m_json.value else None
    m_json.baseline = "ours (raw)"
    out += [m_ours, m_json]
    out.append(
        measured("payload", f"{label} server encode (answer)", "server", [e * 1e3 for e in server_enc], "ms")
    )
    for subject, per_req in (("ours (raw)", ours), ("JSON list", theirs)):
        shares = [100.0 * (x + enc_ms) / inf_ms for x in per_req] if inf_ms > 0 else []
        m = measured(
            "payload",
            f"{label} encode+decode share of inference",
            subject,
            shares,
            "%",
            baseline=f"FCN-ResNet50 infer {inf_ms:,.0f} ms ({n_inf} run{'s' if n_inf > 1 else ''})",
        )
        if subject == "ours (raw)":
            m.target = SHARE_TARGET
            m.met = judge(m.value, at_most=1.0)
        out.append(m)
    return out


def run_payload_bench(report: BenchReport, *, quick: bool, say: Callable[[str], None]) -> None:
    import torch

    scales = SCALES_QUICK if quick else SCALES_FULL
    add = report.measures.append
    say("payload: loading FCN-ResNet50 (random weights) in-process")
    fcn = _state("fcn_resnet50")
    for s in scales:
        say(f"payload: scale {s:g} of {BASE_HW[0]}×{BASE_HW[1]}")
        report.measures.extend(_one_scale(fcn, s, quick))
        gc.collect()
    del fcn
    gc.collect()

    from servers.catalog import CATALOG, example_input_array

    for name, entry in CATALOG.items():
        if entry.source == "hub":
            continue  # needs a network repository; not a catalog model of its own
        if quick and name in BIG_MODELS:
            continue
        say(f"payload: {name} at {'×'.join(map(str, entry.default_size))}")
        try:
            state = _state(name)
        except Exception as exc:  # a model that cannot load here is reported, not fatal
            report.note("payload", f"{name}: not measured ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        x = example_input_array(entry.default_size, entry.input_kind, seed=1)
        n = (1 if quick else 2) if name in BIG_MODELS else (2 if quick else 5)
        shares: list[float] = []
        infers: list[float] = []
        client_enc: list[float] = []
        for _ in range(n):
            t_enc, (body, headers) = _timed(functools.partial(_raw_request, x))
            _, t = state.handle(body, "application/octet-stream", headers, time.perf_counter())
            shares.append(100.0 * (t["decode"] + t["encode"]) / t["infer"])
            infers.append(t["infer"] * 1e3)
            client_enc.append(t_enc * 1e3)
        m = measured(
            "payload",
            "server decode+encode share of inference (default size)",
            name,
            shares,
            "%",
            baseline=f"its inference {median(infers):,.1f} ms",
            target=SHARE_TARGET,
            note=f"input {'×'.join(map(str, entry.default_size))}, torch threads {torch.get_num_threads()}",
        )
        m.met = judge(m.value, at_most=1.0)
        add(m)
        add(
            measured(
                "payload",
                "client encode, once per cell (default size)",
                name,
                client_enc,
                "ms",
                note="the load generator encodes the body once per cell and sends the same bytes every request",
            )
        )
        del state
        gc.collect()

    report.note(
        "payload",
        "In-process: the model server's own decode/encode/infer code "
        "(`servers.model_server.ModelState`), random weights, CPU, one torch thread (TUI_PROFILER_THREADS=1, steadier on a shared machine); every "
        "time is perf_counter. "
        "Per scale, shares count client encode + server decode + server encode; per catalog "
        "model, the server's decode + encode (what the target names: the load generator encodes "
        "once per cell, shown beside it). Both are timed as in a request, right after an "
        "inference: with cold caches each torch op then costs several times its warm cost. "
        "Targets are judged on the median (the range shows the worst run).",
    )
    report.note(
        "payload",
        f"Scale repeats: encode/decode 5 runs (2 above 2 M values; quick 3/1), FCN inference "
        f"{'1 run' if quick else '2 runs (1 above 2 M values)'} per scale; catalog models 5 "
        f"requests (2 for {', '.join(BIG_MODELS)}, which --quick skips; quick 2).",
    )
