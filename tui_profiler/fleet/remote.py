"""One container group on a fleet host: its target through that host's engine, its measuring container
beside it.

Latency measured across the network would measure the network, so on a remote host the load generator
and the samplers run there: `run_on_host` creates and starts the target through the host's engine
(timing image_pull — an image the host lacks is sent to it —, create and start), then a container of the
measuring image in the target's network namespace (`network_mode="container:<id>"`), with the host's
cgroup tree mounted read-only and the host's cpuset. That container runs the container group's cells
(`tui_profiler.sweep.measure`) and writes every event as a JSON line; they are streamed back over the
engine's log stream, decoded, given the host's name and handed to `on_event`. Both containers are removed
in a `finally`, always. An engine that stops answering mid-group (the engine gone, an SSH link cut, a
silent network) raises `HostLost`, for the schedule to give the container group to another host.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tui_profiler.config.model import HostConfig
from tui_profiler.events import Event, EventDecodeError, LogMessage, event_from_json
from tui_profiler.fleet.group_doc import GROUP_ENV, GroupDoc
from tui_profiler.fleet.transfer import ImageSent
from tui_profiler.runtime.adopted import HOST_CGROUP_MOUNT, AdoptedTarget
from tui_profiler.runtime.base import SESSION_LABEL, TargetFailed, TargetSpec
from tui_profiler.runtime.common import owner_id
from tui_profiler.runtime.docker import OWNER_LABEL, DockerRuntime
from tui_profiler.runtime.hardening import hardened
from tui_profiler.session.schema import ColdStartPhaseName

ROLE_LABEL = "tui-profiler.role"  # "measure" on a measuring container (the target has none)
HEARTBEAT_S = 5.0  # how often the engine is pinged while a container group streams
HEARTBEAT_MISSES = 2  # pings in a row that fail before the host counts as lost


class HostLost(Exception):
    """The host's engine stopped answering mid-group; the container group goes to another host."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


@dataclass
class HostSession:
    """One fleet host for the length of a session: its engine client, its runtime (its cpuset), the
    measuring image, and the images already sent there (the first group that needs one pays for it)."""

    name: str
    config: HostConfig
    client: Any
    runtime: DockerRuntime
    measure_image: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    send: Callable[[str], ImageSent] | None = None  # blocking: bring an image the host lacks
    _sent: dict[str, ImageSent] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def host_class(self) -> str:
        return self.config.host_class

    async def ensure_image(self, ref: str) -> ImageSent:
        """The image on this host: sent once (timed), 'present' afterwards."""
        async with self._lock:
            if ref in self._sent:
                return ImageSent(None, None, "present")
            if self.send is None:
                placed = ImageSent(None, None, "present")
            else:
                placed = await asyncio.to_thread(self.send, ref)
            self._sent[ref] = placed
            return placed


@dataclass(slots=True)
class GroupRun:
    """How one measuring container ended."""

    exit_code: int | None
    stderr_tail: str = ""


def measure_kwargs(hs: HostSession, target_id: str, session_id: str, group_json: str) -> dict[str, Any]:
    """The measuring container: hardened like a target, no network of its own (the target's), the host's
    cgroup tree read-only, the host's cores."""
    kwargs: dict[str, Any] = dict(
        image=hs.measure_image,
        environment={GROUP_ENV: group_json},
        labels={OWNER_LABEL: owner_id(), SESSION_LABEL: session_id, ROLE_LABEL: "measure"},
        detach=True,
        **hardened(tmpfs_size="1g", pids_limit=256),
        init=True,
        network_mode=f"container:{target_id}",
        volumes={"/sys/fs/cgroup": {"bind": HOST_CGROUP_MOUNT, "mode": "ro"}},
    )
    if hs.config.cpuset:
        kwargs["cpuset_cpus"] = hs.config.cpuset
    return kwargs


async def run_on_host(
    hs: HostSession, spec: TargetSpec, group: GroupDoc, on_event: Callable[[Event], None]
) -> GroupRun:
    """Start `spec` on the host, run `group`'s cells next to it, stream its events to `on_event` (their
    `host` filled in). Raises TargetFailed when the target cannot be started (the caller records it for
    the group's cells), HostLost when the engine stops answering. Both containers are always removed."""
    placed = await _ensure_images(hs, spec.image)
    try:
        launched = await hs.runtime.launch(spec, None, publish=False)
    except TargetFailed as exc:  # the engine gone before the target started: the host's drop, not the cell's
        if not await _engine_answers(hs):
            raise HostLost(hs.name, f"engine not answering while starting the target ({exc.reason})") from exc
        raise
    target = launched.container
    measurer: Any = None
    try:
        phases = dict(launched.phases)
        details = {ColdStartPhaseName.CREATE.value: str(launched.facts.get("container_name", ""))}
        pull = ColdStartPhaseName.IMAGE_PULL.value
        if placed.seconds is not None:  # sent to this host now: that is this cold start's image pull
            phases[pull] = placed.seconds
            details[pull] = f"sent {placed.nbytes} bytes to {hs.name} ({placed.how})"
            launched.facts.update(image_pull="sent", image_pull_bytes=placed.nbytes, image_sent=placed.how)
        elif launched.facts.get("image_pull") == "pulled":  # the host pulled it (not sent from here)
            details[pull] = f"pulled by {hs.name}: {launched.facts.get('image_pull_bytes')} bytes"
        else:
            details[pull] = f"cached on {hs.name}"
        adopted = AdoptedTarget(
            container_id=target.id,
            port=spec.port,
            started_epoch=launched.started_epoch,
            phases=phases,
            details=details,
            facts={**launched.facts, "fleet_host": hs.name},
            host_config=dict(target.attrs.get("HostConfig") or {}),
        )
        group.target = adopted.as_dict()
        kwargs = measure_kwargs(hs, target.id, spec.session_id, group.to_json())
        measurer = await asyncio.to_thread(hs.client.containers.create, **kwargs)
        await asyncio.to_thread(measurer.start)
        return await _stream(hs, measurer, on_event)
    finally:
        await asyncio.shield(_remove_both(hs, measurer, launched))


async def _ensure_images(hs: HostSession, image: str) -> ImageSent:
    try:
        await hs.ensure_image(hs.measure_image)
        return await hs.ensure_image(image)
    except Exception as exc:
        if not await _engine_answers(hs):
            raise HostLost(hs.name, f"engine not answering while sending an image ({_line(exc)})") from exc
        from tui_profiler.session.schema import CellStatus

        raise TargetFailed(
            CellStatus.PULL_FAILED, f"could not send {image} to {hs.name}: {_line(exc)}"
        ) from exc


async def _stream(hs: HostSession, measurer: Any, on_event: Callable[[Event], None]) -> GroupRun:
    """Decode the measuring container's output line by line until it exits, watching the engine."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()

    def pump() -> None:  # a thread: the SDK's log stream blocks
        pending = b""
        try:
            for chunk in measurer.logs(stream=True, follow=True, stdout=True, stderr=False):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    loop.call_soon_threadsafe(lines.put_nowait, line)
            if pending:
                loop.call_soon_threadsafe(lines.put_nowait, pending)
            loop.call_soon_threadsafe(lines.put_nowait, None)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lines.put_nowait, exc)

    pumping = loop.run_in_executor(None, pump)
    watch = asyncio.ensure_future(_watch_engine(hs))
    try:
        while True:
            getter = asyncio.ensure_future(lines.get())
            done, _ = await asyncio.wait({getter, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch in done:
                getter.cancel()
                watch.result()  # raises HostLost
            item = getter.result()
            if item is None:
                break
            if isinstance(item, BaseException):
                if not await _engine_answers(hs):
                    raise HostLost(hs.name, f"the event stream broke ({_line(item)})")
                break  # the stream ended with an error but the engine answers: the container's exit says
            if not item.strip():
                continue
            try:
                event = event_from_json(item, host=hs.name)
            except EventDecodeError as exc:
                on_event(LogMessage("warning", f"measuring side: {exc}", host=hs.name))
                continue
            on_event(event)
    finally:
        watch.cancel()
        with contextlib.suppress(BaseException):
            await watch
    try:
        state = await asyncio.wait_for(asyncio.to_thread(measurer.wait, timeout=60), 90)
    except Exception as exc:
        if not await _engine_answers(hs):
            raise HostLost(hs.name, f"engine gone at the container group's end ({_line(exc)})") from exc
        raise
    with contextlib.suppress(Exception):
        await pumping
    code = state.get("StatusCode") if isinstance(state, dict) else None
    tail = ""
    if code not in (0, None):
        with contextlib.suppress(Exception):
            raw = await asyncio.to_thread(measurer.logs, stdout=False, stderr=True, tail=5)
            tail = " | ".join(raw.decode(errors="replace").strip().splitlines()[-5:])
    return GroupRun(exit_code=code if isinstance(code, int) else None, stderr_tail=tail)


async def _watch_engine(hs: HostSession) -> None:
    """Return never; raise HostLost after HEARTBEAT_MISSES failed pings in a row (a silent network)."""
    misses = 0
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        if await _engine_answers(hs):
            misses = 0
            continue
        misses += 1
        if misses >= HEARTBEAT_MISSES:
            raise HostLost(hs.name, f"engine not answering for {misses * HEARTBEAT_S:.0f} s")


async def _engine_answers(hs: HostSession) -> bool:
    try:
        await asyncio.wait_for(asyncio.to_thread(hs.client.ping), HEARTBEAT_S)
        return True
    except Exception:
        return False


async def _remove_both(hs: HostSession, measurer: Any, launched: Any) -> None:
    """The measuring container first (it holds the target's network namespace), then the target."""
    if measurer is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.to_thread(measurer.remove, force=True, v=True), 30)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.to_thread(launched.container.remove, force=True, v=True), 30)


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
