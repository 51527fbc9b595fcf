"""What both runtimes share: free ports on 127.0.0.1, the owner token that tells a killed run's leftovers
from a live run's, the readiness probe, and turning the server's /healthz timeline into cold-start phases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_profiler.config.request import NoSuchField, dotted_path, json_at
from tui_profiler.runtime.base import PhaseCallback, ProbeRequest, ReadinessProbe, TargetFailed
from tui_profiler.session.schema import CellStatus, ColdStartPhaseName

_BOOT, _LOAD, _READY = ColdStartPhaseName.SERVER_BOOT, ColdStartPhaseName.MODEL_LOAD, ColdStartPhaseName.READY
# The phases a readiness wait is split into by the server's /healthz timeline, in order.
_SERVER_PHASES = (_BOOT, _LOAD, _READY)

LOOPBACK = "127.0.0.1"
MAX_POLL_INTERVAL_S = 0.01  # the readiness probe's polling resolution, stated in meta.json


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free on `host` a moment ago (the caller retries on a conflict)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def owner_id(pid: int | None = None) -> str:
    """'<hostname>:<pid>:<process start ticks>' of a profiler process (this one by default): every target
    carries its starter's, so a target whose starter no longer runs is known to be a leftover. The start
    ticks tell a reused pid from the original."""
    pid = pid or os.getpid()
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "?"
    return f"{os.uname().nodename}:{pid}:{start}"


def owner_alive(owner: str) -> bool:
    """Whether the profiler process an `owner_id` names still runs (a zombie does not). Another host's, or
    a token that is not an owner id, counts as alive: not ours to judge."""
    try:
        host, pid, start = owner.rsplit(":", 2)
        pid_number = int(pid)
    except ValueError:
        return True
    if host != os.uname().nodename:
        return True
    try:
        fields = Path(f"/proc/{pid_number}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return len(fields) > 19 and fields[0] != "Z" and fields[19] == start


async def report_phase(
    on_phase: PhaseCallback | None, phase: str, seconds: float | None, detail: str = ""
) -> None:
    if on_phase is None:
        return
    result = on_phase(phase, seconds, detail)
    if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
        await result


async def settle(coro: Awaitable[Any]) -> Any:
    """Await a thread-backed call to its end even if we are cancelled meanwhile, so its side effects
    (a container created, a process spawned) are known before the cancellation propagates."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise


@dataclass(slots=True)
class ProbeResult:
    elapsed_s: float  # from the probe's start to the first success (perf_counter)
    ready_epoch: float  # time.time() at the first success, to compare with the server's timeline
    # The server's own health document (its timeline, its runtime facts) when it is JSON: the answer of
    # an `http` probe; for a `request` probe, one GET of `path` after the request passed.
    body: dict[str, Any] | None
    polls: int


DeadCheck = Callable[[], Awaitable[TargetFailed | None]]  # the failure when the target is gone, else None


async def wait_ready(
    host: str,
    port: int,
    probe: ReadinessProbe,
    is_dead: DeadCheck,
    *,
    log_lines: Callable[[], Awaitable[str]] | None = None,
    request: ProbeRequest | None = None,
    dead_check_every_s: float = 0.2,
) -> ProbeResult:
    """Poll until the probe succeeds, at most `probe.interval_s` (<= 10 ms) between tries. Kinds: `http`
    (GET `path` answers `status`, and `json_field` has `json_value` when given), `request` (the preset's
    own `request` passes its template's check: the model answers), `log` (a line matches `log_pattern`),
    `tcp` (a connection stays open). Raises TargetFailed(TIMEOUT) after probe.timeout_s, naming the last
    answer, or the failure `is_dead` returns (checked every `dead_check_every_s` without slowing the poll)."""
    interval = min(max(probe.interval_s, 0.001), MAX_POLL_INTERVAL_S)
    t0 = time.perf_counter()
    deadline = t0 + probe.timeout_s
    polls = 0
    last_dead_check = t0
    check_task: asyncio.Task[TargetFailed | None] | None = None
    compiled = re.compile(probe.log_pattern) if probe.kind == "log" and probe.log_pattern else None
    if probe.kind == "log" and (compiled is None or log_lines is None):
        raise TargetFailed(CellStatus.FAILED, "readiness probe 'log' needs log_pattern and a log source")
    if probe.kind == "request" and request is None:
        raise TargetFailed(CellStatus.FAILED, "readiness probe 'request' needs the preset's request")
    if probe.kind not in ("http", "request", "log", "tcp"):
        raise TargetFailed(
            CellStatus.FAILED, f"unknown readiness probe kind {probe.kind!r} (http, request, tcp, log)"
        )
    session = None
    if probe.kind in ("http", "request"):
        import aiohttp

        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=2.0, sock_connect=0.5),
            connector=aiohttp.TCPConnector(limit=1),
        )
    base_url = f"http://{host}:{port}"
    last = "no answer yet"
    try:
        while True:
            polls += 1
            body: dict[str, Any] | None = None
            ok = False
            if probe.kind == "http":
                assert session is not None
                ok, body, last = await _http_try(session, base_url, probe)
            elif probe.kind == "request":
                assert session is not None and request is not None
                ok, said = await _request_try(session, base_url, request, deadline)
                # a last try the deadline cut short says nothing about the server: keep its previous answer
                cut_short = not ok and said.startswith("no answer") and time.perf_counter() >= deadline
                if not cut_short or last == "no answer yet":
                    last = said
            elif probe.kind == "tcp":
                ok = await _tcp_alive(host, port)
            else:
                assert log_lines is not None and compiled is not None
                ok = bool(compiled.search(await log_lines()))
            now = time.perf_counter()
            if ok:
                ready_epoch = time.time()
                if probe.kind == "request":  # after the success time: the server's timeline and facts
                    assert session is not None
                    body = await _health_document(session, base_url + probe.path)
                return ProbeResult(now - t0, ready_epoch, body, polls)
            if check_task is not None and check_task.done():
                death = check_task.result()
                check_task = None
                if death is not None:
                    raise death
            if check_task is None and now - last_dead_check >= dead_check_every_s:
                last_dead_check = now
                check_task = asyncio.ensure_future(is_dead())
            if now >= deadline:
                told = f"; last: {last}" if probe.kind in ("http", "request") else ""
                raise TargetFailed(
                    CellStatus.TIMEOUT, f"not ready after {probe.timeout_s:g} s ({probe.kind} probe{told})"
                )
            await asyncio.sleep(interval)
    finally:
        if check_task is not None and not check_task.done():
            check_task.cancel()
            with contextlib.suppress(BaseException):
                await check_task
        if session is not None:
            await session.close()


async def _http_try(
    session: Any, base_url: str, probe: ReadinessProbe
) -> tuple[bool, dict[str, Any] | None, str]:
    """One GET of the probe's path: (ready, the JSON document, what the answer said)."""
    try:
        async with session.get(base_url + probe.path) as resp:
            raw = await resp.read()
            status = resp.status
    except Exception as exc:  # not up yet: refused, reset by the proxy, timed out
        return False, None, _no_answer(exc)
    doc: Any = None
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        doc = json.loads(raw)
    body = doc if isinstance(doc, dict) else None
    if status != probe.status:
        return False, body, f"HTTP {status} (expected {probe.status})"
    if probe.json_field:
        try:
            value = json_at(doc, dotted_path(probe.json_field))
        except NoSuchField:
            return False, body, f"no field {probe.json_field!r} in the answer"
        if not probe.json_matches(value):
            return False, body, f"{probe.json_field} is {value!r} (expected {probe.json_value!r})"
    return True, body, "ready"


async def _request_try(
    session: Any, base_url: str, request: ProbeRequest, deadline: float
) -> tuple[bool, str]:
    """One send of the preset's request: (its answer passed the template's check, what it said)."""
    import aiohttp

    remaining = max(0.05, deadline - time.perf_counter())
    timeout = aiohttp.ClientTimeout(total=min(request.timeout_s, remaining), sock_connect=0.5)
    try:
        async with session.request(
            request.method,
            base_url + request.path,
            data=request.body or None,
            headers=dict(request.headers),
            timeout=timeout,
        ) as resp:
            raw = await resp.read()
            status = resp.status
    except Exception as exc:  # not up yet, or the model still loading behind a request that timed out
        return False, _no_answer(exc)
    failure = request.check.failure(status, raw)
    return failure is None, failure or "ready"


async def _health_document(session: Any, url: str) -> dict[str, Any] | None:
    """The JSON document a GET of `url` answers with 200, else None (a server without one)."""
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                return None
            doc = json.loads(await resp.read())
    except Exception:
        return None
    return doc if isinstance(doc, dict) else None


def _no_answer(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"no answer ({type(exc).__name__}{': ' + text[0][:120] if text else ''})"


async def _tcp_alive(host: str, port: int) -> bool:
    """A connect that stays open. Docker's userland proxy accepts at once and then closes when nothing
    listens inside the container, so a connect alone proves nothing: wait briefly for an EOF."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except (TimeoutError, OSError):
        return False
    try:
        data = await asyncio.wait_for(reader.read(1), 0.05)
        return data != b""  # a server that greets first is alive; an EOF means the proxy gave up
    except TimeoutError:
        return True
    except OSError:
        return False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def report_ready_phases(
    probe: ProbeResult,
    started_epoch: float,
    ready_wait_s: float,
    kind: str,
    on_phase: PhaseCallback | None,
    phases: dict[str, float | None],
    facts: dict[str, Any],
) -> None:
    """After a readiness probe passed: the wait split by the server's timeline (server_boot, model_load,
    ready) into `phases`, each reported; the probe's facts (and the server's runtime facts) into `facts`."""
    split, tl_facts = timeline_phases(probe.body, started_epoch, probe.ready_epoch, ready_wait_s)
    facts.update(tl_facts)
    facts["ready_polls"] = probe.polls
    facts["ready_probe"] = kind
    for key in _SERVER_PHASES:
        phases[key] = split[key]
        await report_phase(on_phase, key, split[key], "" if split[key] is not None else "not reported")
    runtime_facts = (probe.body or {}).get("runtime")
    if isinstance(runtime_facts, dict):
        facts["server_runtime"] = runtime_facts


def timeline_phases(
    body: dict[str, Any] | None, started_epoch: float, ready_epoch: float, ready_wait_s: float
) -> tuple[dict[str, float | None], dict[str, Any]]:
    """Split the wait between 'process started' and 'first 200' into disjoint phases:
    server_boot = started → imports_done (the runtime's hand-over to the interpreter plus imports),
    model_load = imports_done → model_loaded, ready = the rest (warm-up and probe latency).
    Without a timeline, server_boot and model_load are None and ready is the whole wait.
    Returns (phases, facts)."""
    timeline = (body or {}).get("timeline") if isinstance(body, dict) else None
    facts: dict[str, Any] = {"ready_wait_s": ready_wait_s}
    if not isinstance(timeline, dict):
        return {_BOOT: None, _LOAD: None, _READY: ready_wait_s}, facts
    facts["timeline"] = timeline

    def num(key: str) -> float | None:
        v = timeline.get(key)
        return float(v) if isinstance(v, (int, float)) else None

    imports_done, model_loaded, warmup_done = num("imports_done"), num("model_loaded"), num("warmup_done")
    boot = max(0.0, imports_done - started_epoch) if imports_done is not None else None
    load = (
        max(0.0, model_loaded - imports_done)
        if model_loaded is not None and imports_done is not None
        else None
    )
    if warmup_done is not None and model_loaded is not None:
        facts["warmup_s"] = max(0.0, warmup_done - model_loaded)
    rest = ready_wait_s - (boot or 0.0) - (load or 0.0)
    return {_BOOT: boot, _LOAD: load, _READY: max(0.0, rest)}, facts
