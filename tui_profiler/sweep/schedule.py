"""The fleet's schedule: the container groups to run, the queue hosts take them from, and opening the hosts.

A container group is one resource configuration in one repetition: its target and its cells (see
`tui_profiler.plan`). Each host takes one group at a time, so groups never share a host's cores. A group
whose host drops mid-way goes back to the front of the queue with its unfinished cells, for another host,
at most `fleet.max_tries` times in all; the runner records each drop in meta.json (`host_drops`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tui_profiler.config.files import check_host_caps
from tui_profiler.config.model import FleetConfig, Preset
from tui_profiler.events import Level
from tui_profiler.fleet.hosts import FleetHost, HostProbe
from tui_profiler.fleet.remote import HostSession
from tui_profiler.fleet.transfer import ImageSent, send_image
from tui_profiler.plan import Cell

Log = Callable[[Level, str], None]


@dataclass(slots=True)
class QueuedGroup:
    cells: list[Cell]
    tries: int = 0  # how many hosts dropped it so far
    tried: list[str] = field(default_factory=list)  # those hosts, in order

    def retry(self, cells: list[Cell], lost_on: str) -> QueuedGroup:
        return QueuedGroup(cells, self.tries + 1, [*self.tried, lost_on])


class GroupQueue:
    """The container groups still to run. `take` waits while the queue is empty but a group is still running
    somewhere (it may come back); it returns None once nothing is left to run or to come back.

    `more`: where further groups come from once the queue is empty, asked again each time a group ends (an
    adaptive plan chooses each host's next group from the results in by then; [] while it has none). One
    host asks at a time; a host whose answer was [] asks again if a group ended while it was asking."""

    def __init__(
        self,
        groups: list[list[Cell]],
        max_tries: int,
        hosts: int = 1,
        more: Callable[[], Awaitable[list[Cell]]] | None = None,
    ) -> None:
        self._groups: deque[QueuedGroup] = deque(QueuedGroup(cells) for cells in groups if cells)
        self.max_tries = max_tries
        self.hosts_left = hosts
        self._more = more
        self._asking = asyncio.Lock()  # one host asks `more` at a time
        self._busy = 0
        self._changes = 0  # groups ended, put back, hosts gone: what a host's question may not have seen
        self._changed = asyncio.Event()

    async def take(self, host: str) -> QueuedGroup | None:
        while True:
            for group in self._groups:
                if host not in group.tried:
                    self._groups.remove(group)
                    self._busy += 1
                    return group
            seen = self._changes
            if self._more is not None:
                async with self._asking:
                    cells = await self._more()
                if cells:
                    self._busy += 1
                    return QueuedGroup(cells)
                if self._changes != seen:
                    continue  # a group ended (or came back) while it asked: ask again with that in
            if self._busy == 0:
                return None
            self._changed.clear()
            await self._changed.wait()

    def done(self) -> None:
        self._busy -= 1
        self._changes += 1
        self._changed.set()

    def put_back(self, group: QueuedGroup) -> None:
        self._groups.appendleft(group)
        self._changes += 1
        self._changed.set()

    def host_gone(self, host: str) -> None:
        self.hosts_left -= 1
        self._changes += 1
        self._changed.set()

    def stranded(self) -> list[QueuedGroup]:
        """The container groups no host is left to run."""
        left = list(self._groups)
        self._groups.clear()
        return left


async def open_hosts(fleet: FleetConfig, preset: Preset, log: Log) -> list[HostSession]:
    """Reach every host, record its facts, refuse (naming the host) a cap it cannot give, and make the
    measuring image ready for the remote ones. Raises ValueError with one line when a host is unreachable."""
    from tui_profiler.fleet.hosts import probe_host, resolve_host

    resolved = [resolve_host(h) for h in fleet.hosts]
    probes = await asyncio.gather(*(asyncio.to_thread(probe_host, h) for h in resolved))
    source = str(preset.path or preset.name)
    for host, probe in zip(resolved, probes, strict=True):
        if not probe.reachable:
            raise ValueError(f"--hosts: {host.name} ({host.config.url}): not reachable — {probe.reason}")
        check_host_caps(preset, source, probe.limits(), where=f"fleet host {host.name} ({host.config.url})")
    remote = [h for h in resolved if not h.config.in_process]
    measure_image = ""
    local_client: Any = None
    if remote:
        if preset.input.files or preset.input.folder:
            raise ValueError(
                "input.files / input.folder: the fleet's remote hosts cannot read this machine's input "
                "files (not built yet): run this preset on one host, or on hosts with measure = 'in-process'"
            )
        from tui_profiler.fleet.image import ensure_measure_image
        from tui_profiler.runtime.docker import docker_client

        log("info", "fleet: making the measuring image ready (built once, then sent to each host)")

        def build_step(line: str) -> None:  # the build's own steps only, not every line it prints
            if line.startswith(("Step ", "built ")):
                log("debug", line)

        measure_image = await asyncio.to_thread(ensure_measure_image, build_step)
        local_client = await asyncio.to_thread(docker_client)
    # each host opened at once: its client, the measuring image sent there, its own facts
    return list(
        await asyncio.gather(
            *(
                _open_host(host, probe, measure_image, local_client, fleet.registry, log)
                for host, probe in zip(resolved, probes, strict=True)
            )
        )
    )


async def _open_host(
    host: FleetHost, probe: HostProbe, measure_image: str, local_client: Any, registry: str, log: Log
) -> HostSession:
    from tui_profiler.runtime.docker import DockerRuntime

    try:
        client = await asyncio.to_thread(host.client)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise ValueError(
            f"--hosts: {host.name} ({host.config.url}): not reachable — "
            f"{text[0][:200] if text else type(exc).__name__}"
        ) from exc
    hs = HostSession(
        name=host.name,
        config=host.config,
        client=client,
        runtime=DockerRuntime(client, cpuset=host.config.cpuset, label=host.name),
        measure_image=measure_image,
        facts=probe.as_facts(),
    )
    if host.config.in_process:
        from tui_profiler.host import host_facts

        hs.facts["machine"] = await asyncio.to_thread(host_facts)
        return hs
    loop = asyncio.get_running_loop()

    def progress(line: str) -> None:  # from the sending thread: the log's consumers live on the loop
        loop.call_soon_threadsafe(log, "info", f"fleet: {hs.name}: {line}")

    hs.send = _sender(local_client, client, registry, progress)
    placed = await hs.ensure_image(measure_image)
    if placed.seconds is not None:
        log(
            "info",
            f"fleet: sent the measuring image to {hs.name}: {placed.nbytes} bytes in "
            f"{placed.seconds:.1f} s ({placed.how})",
        )
    hs.facts["measuring_image_sent"] = {"seconds": placed.seconds, "bytes": placed.nbytes}
    hs.facts["machine"] = await _machine_facts(hs)
    return hs


# How an image got to a host that was not sent from here: the host's own pull, timed as its image_pull.
LEFT_TO_THE_HOST = "left to the host's own pull"


def _sender(
    source: Any, target: Any, registry: str, progress: Callable[[str], None]
) -> Callable[[str], ImageSent]:
    import docker.errors

    def send(ref: str) -> ImageSent:
        try:
            source.images.get(ref)
        except docker.errors.ImageNotFound:  # e.g. a registry image this machine never pulled
            return ImageSent(None, None, LEFT_TO_THE_HOST)
        return send_image(source, target, ref, registry=registry, progress=progress)

    return send


async def _machine_facts(hs: HostSession) -> dict[str, Any]:
    """The host's own facts (CPU model, cores, memory, cgroup version), read by the measuring image on
    it: no agent, one short container."""
    from tui_profiler.runtime.hardening import hardened

    def run() -> dict[str, Any]:
        out = hs.client.containers.run(
            hs.measure_image,
            ["--facts"],
            remove=True,
            network_mode="none",
            **hardened(),
            labels={"tui-profiler.role": "facts"},
        )
        data = json.loads(out.decode() if isinstance(out, bytes) else str(out))
        if not isinstance(data, dict):
            return {}
        machine = data.get("host")
        if isinstance(machine, dict):  # a container's hostname is its id: the engine knows the host's
            machine["hostname"] = hs.client.info().get("Name") or None
        return data

    with contextlib.suppress(Exception):
        return await asyncio.wait_for(asyncio.to_thread(run), 60)
    return {"note": "not available (the measuring image could not report them)"}
