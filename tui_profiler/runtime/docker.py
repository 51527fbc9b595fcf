"""The `docker` runtime: the model server in a container under real caps, through the docker SDK.

Every SDK call is blocking, so each runs in `asyncio.to_thread`; the event loop never waits on the engine.
Every container carries the label `tui-profiler.session=<session id>` and `tui-profiler.owner=<owner id>`
of the profiler that started it, and is removed on stop, on a failed start, and on cancellation (a Ctrl-C
mid-start). A SIGKILLed profiler cannot remove its container: `remove_orphans` (the next sweep's start, and
`tui-profiler clean`) finds it by its dead owner.

Hardening (`runtime.hardening`): no-new-privileges, all capabilities dropped, a read-only root filesystem
with a tmpfs at /tmp, a pids limit, the image's non-root user (or nobody when the image would run as root),
the published port bound to 127.0.0.1 only, and the Docker socket never mounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_profiler.cgroups import (
    CgroupPaths,
    affinity_cores,
    confirm_caps,
    cpuset_cores,
    cpuset_text,
    pinned_cores,
)
from tui_profiler.runtime.base import (
    SESSION_LABEL,
    EnforcedCaps,
    PhaseCallback,
    RunningTarget,
    TargetFailed,
    TargetSpec,
    gb_to_bytes,
)
from tui_profiler.runtime.common import (
    LOOPBACK,
    MAX_POLL_INTERVAL_S,
    free_port,
    owner_alive,
    owner_id,
    report_phase,
    report_ready_phases,
    settle,
    wait_ready,
)
from tui_profiler.runtime.hardening import check_mounts, hardened, target_user
from tui_profiler.sample.cgroup import find_container_cgroup
from tui_profiler.session.schema import CellStatus, ColdStartPhaseName

OWNER_LABEL = "tui-profiler.owner"  # the `owner_id` ("<hostname>:<pid>:<start ticks>") of the starter
LOG_TAIL = 20
PORT_CONFLICT = re.compile(r"port is already allocated|address already in use", re.I)


def docker_client(timeout: int = 120) -> Any:
    import docker

    return docker.from_env(timeout=timeout)


def _stats_client() -> Any:
    return docker_client(timeout=30)


def engine_status(timeout: int = 5) -> tuple[bool, str]:
    """(reachable, a plain-words description: version and API, or why not)."""
    try:
        client = docker_client(timeout=timeout)
        try:
            v = client.version()
        finally:
            client.close()
    except Exception as exc:
        return False, _one_line(exc)
    return True, f"Docker engine {v.get('Version', '?')} (API {v.get('ApiVersion', '?')})"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _container_name(session_id: str) -> str:
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", session_id)[:40].strip("-.") or "session"
    return f"tui-profiler-{safe}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class PullResult:
    image: Any
    seconds: float | None  # None: the image was already there ('cached')
    nbytes: int | None  # bytes downloaded (the layers' sizes as the engine reported them)


@dataclass(slots=True)
class Launched:
    """A target's container created and started, not yet known to be ready."""

    container: Any
    host_port: int  # the published port on 127.0.0.1, or the container's own port when not published
    started_epoch: float  # when the engine says it started (its own clock, as the server's timeline is)
    phases: dict[str, float | None]
    facts: dict[str, Any]
    enforced: EnforcedCaps


class DockerRuntime:
    """Starts model servers as containers. One instance may serve many starts (not concurrently per spec)."""

    name = "docker"

    def __init__(
        self,
        client: Any | None = None,
        *,
        pids_limit: int = 1024,
        tmpfs_size: str = "512m",
        use_init: bool = True,
        cpuset: str = "",
        label: str = "",
    ) -> None:
        self._client = client
        # a fleet host's cores: every container of this runtime is confined to them ("" = all)
        self.cpuset = cpuset
        self.label = label  # the engine's name in messages ("" for the local engine)
        self.pids_limit = pids_limit
        self.tmpfs_size = tmpfs_size
        self.use_init = (
            use_init  # a tiny init as PID 1 forwards SIGTERM, so a stop takes ms, not the 3 s grace
        )

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    # ---------------------------------------------------------------- start

    async def start(self, spec: TargetSpec, on_phase: PhaseCallback | None = None) -> RunningTarget:
        launched = await self.launch(spec, on_phase, publish=True)
        container, host_port, phases, facts, enforced = (
            launched.container,
            launched.host_port,
            launched.phases,
            launched.facts,
            launched.enforced,
        )
        try:
            probe = await wait_ready(
                LOOPBACK,
                host_port,
                spec.readiness,
                lambda: self._death(container),
                log_lines=lambda: self._logs(container, tail=200),
                request=spec.probe_request,
            )
            await report_ready_phases(
                probe, launched.started_epoch, probe.elapsed_s, spec.readiness.kind, on_phase, phases, facts
            )

            await asyncio.to_thread(container.reload)
            state = container.attrs.get("State") or {}
            pid = int(state.get("Pid") or 0)
            paths = await asyncio.to_thread(find_container_cgroup, container.id, pid)
            await asyncio.to_thread(
                confirm_container_caps, container.attrs.get("HostConfig") or {}, paths, spec, enforced
            )
            pids = await asyncio.to_thread(_cgroup_pids, paths) or ([pid] if pid else [])
            return RunningTarget(
                base_url=f"http://{LOOPBACK}:{host_port}",
                ident=container.id,
                enforced=enforced,
                phases=phases,
                cgroup_dir=paths.v2_dir,
                cgroup_v1_dirs=dict(paths.v1_dirs),
                pids=pids,
                facts=facts,
                stats_client=_stats_client,
            )
        except TargetFailed as exc:
            tail = await self._log_tail(container)
            if tail:
                exc.add_detail(f"last log lines: {tail}")
            await self._remove_quietly(container)
            raise
        except BaseException:
            await asyncio.shield(self._remove_quietly(container))
            raise

    async def launch(
        self, spec: TargetSpec, on_phase: PhaseCallback | None = None, *, publish: bool = True
    ) -> Launched:
        """Create and start the target's container (its image pulled when missing), timing each phase;
        not yet ready. `publish`: its port on 127.0.0.1 of this machine (the local engine); a fleet host's
        target publishes nothing, since its measuring container joins its network namespace."""
        check_mounts(spec.mounts)
        if self._client is None:
            self._client = await asyncio.to_thread(docker_client)
        phases: dict[str, float | None] = {}
        facts: dict[str, Any] = {"runtime": "docker", "ready_poll_interval_s": MAX_POLL_INTERVAL_S}

        pulled = await self.ensure_image(spec.image, on_phase)
        image = pulled.image
        phases[ColdStartPhaseName.IMAGE_PULL] = pulled.seconds
        facts[ColdStartPhaseName.IMAGE_PULL] = "cached" if pulled.seconds is None else "pulled"
        if pulled.nbytes is not None:
            facts["image_pull_bytes"] = pulled.nbytes
        facts["image_size_bytes"] = image.attrs.get("Size")
        facts["image_id"] = image.id
        image_user = (image.attrs.get("Config") or {}).get("User") or ""
        user = target_user(spec.user, image_user)
        facts["user"] = user

        enforced = EnforcedCaps.asked_by(spec)
        kwargs = self._create_kwargs(spec, user, enforced)
        container = None
        name = ""
        try:
            for attempt in range(1, 6):
                host_port = free_port() if publish else spec.port
                name = _container_name(spec.session_id)
                kwargs["name"] = name
                extra = {p: free_port() for p in spec.extra_ports} if publish else {}
                if publish:
                    kwargs["ports"] = {
                        f"{spec.port}/tcp": (LOOPBACK, host_port),
                        **{f"{p}/tcp": (LOOPBACK, hp) for p, hp in extra.items()},
                    }
                t0 = time.perf_counter()
                try:
                    container = await settle(asyncio.to_thread(self.client.containers.create, **kwargs))
                except Exception as exc:
                    raise TargetFailed(
                        CellStatus.CREATE_FAILED, f"docker create: {_api_reason(exc)}"
                    ) from exc
                t_create = time.perf_counter() - t0
                phases[ColdStartPhaseName.CREATE] = t_create
                await report_phase(on_phase, ColdStartPhaseName.CREATE, t_create, name)
                t0 = time.perf_counter()
                try:
                    await settle(asyncio.to_thread(container.start))
                except Exception as exc:
                    reason = _api_reason(exc)
                    await self._remove_quietly(container)
                    container = None
                    if PORT_CONFLICT.search(reason) and attempt < 5:
                        facts.setdefault("port_retries", []).append(f"{host_port}: {reason}")
                        continue
                    if PORT_CONFLICT.search(reason):
                        raise TargetFailed(
                            CellStatus.PORT_CONFLICT, f"no free port on {LOOPBACK} after 5 tries: {reason}"
                        ) from exc
                    if spec.gpus and re.search(r"device driver|gpu|nvidia", reason, re.I):
                        raise TargetFailed(
                            CellStatus.GPU_UNAVAILABLE, f"the engine refused the GPU request: {reason}"
                        ) from exc
                    raise TargetFailed(CellStatus.START_FAILED, f"docker start: {reason}") from exc
                started_epoch = time.time()
                t_start = time.perf_counter() - t0
                break
            assert container is not None
            if not publish:  # another host: its own clock says when the container started
                await asyncio.to_thread(container.reload)
                started_epoch = engine_epoch((container.attrs.get("State") or {}).get("StartedAt")) or (
                    started_epoch
                )
            assert container is not None
            phases[ColdStartPhaseName.START] = t_start
            await report_phase(on_phase, ColdStartPhaseName.START, t_start, "")
            facts.update(container_id=container.id, container_name=name, host_port=host_port)
            if extra:  # container port -> the host port it is published on (a metrics endpoint's)
                facts["published_ports"] = {str(p): hp for p, hp in extra.items()}
            return Launched(container, host_port, started_epoch, phases, facts, enforced)
        except TargetFailed as exc:
            if container is not None:
                tail = await self._log_tail(container)
                if tail:
                    exc.add_detail(f"last log lines: {tail}")
                await self._remove_quietly(container)
            raise
        except BaseException:
            if container is not None:
                await asyncio.shield(self._remove_quietly(container))
            elif name:
                await asyncio.shield(self._remove_by_name(name))
            raise

    def _create_kwargs(self, spec: TargetSpec, user: str, enforced: EnforcedCaps) -> dict[str, Any]:
        import docker.types

        command = spec.command
        if command is None and spec.model:
            command = ["--model", spec.model, "--weights", spec.weights]
        env = {"TUI_PROFILER_THREADS": spec.threads, **spec.env}
        kwargs: dict[str, Any] = dict(
            image=spec.image,
            command=command,
            environment=env,
            labels={OWNER_LABEL: owner_id(), **spec.labels, SESSION_LABEL: spec.session_id},
            detach=True,
            **hardened(user, tmpfs_size=self.tmpfs_size, pids_limit=self.pids_limit),
            init=self.use_init,
            volumes={h: {"bind": c, "mode": "ro"} for h, c in spec.mounts},
        )
        # the cores this engine's containers may use: a fleet host's cpuset, else this machine's
        cores = cpuset_cores(self.cpuset) if self.cpuset else affinity_cores()
        if self.cpuset:
            kwargs["cpuset_cpus"] = self.cpuset
        if spec.cpus:
            kwargs["nano_cpus"] = round(spec.cpus * 1e9)
            if spec.cpuset:
                pinned = pinned_cores(spec.cpus, cores)
                if len(pinned) < spec.cpus:
                    enforced.notes.append(
                        f"cpuset: {math.ceil(spec.cpus)} cores asked, the host gives {len(cores)}; "
                        "pinned to all of them"
                    )
                kwargs["cpuset_cpus"] = cpuset_text(pinned)
        if spec.memory_gb:
            mem = gb_to_bytes(spec.memory_gb)
            kwargs["mem_limit"] = mem
            kwargs["memswap_limit"] = mem  # equal: swap never hides memory pressure
        if spec.gpus:
            kwargs["device_requests"] = [docker.types.DeviceRequest(count=spec.gpus, capabilities=[["gpu"]])]
        return kwargs

    async def ensure_image(self, ref: str, on_phase: PhaseCallback | None = None) -> PullResult:
        """The image, pulled when it is not present locally: the pull timed (perf_counter) with the bytes
        the engine downloaded; a local image is 'cached' (seconds None). Reports the image_pull phase."""
        import docker.errors

        if self._client is None:
            self._client = await asyncio.to_thread(docker_client)
        try:
            image = await asyncio.to_thread(self.client.images.get, ref)
        except docker.errors.ImageNotFound:
            image = None
        if image is not None:
            await report_phase(on_phase, ColdStartPhaseName.IMAGE_PULL, None, "cached")
            return PullResult(image, None, None)
        t0 = time.perf_counter()
        nbytes = await asyncio.to_thread(self._pull, ref)
        seconds = time.perf_counter() - t0
        image = await asyncio.to_thread(self.client.images.get, ref)
        await report_phase(on_phase, ColdStartPhaseName.IMAGE_PULL, seconds, f"{nbytes} bytes")
        return PullResult(image, seconds, nbytes)

    def _pull(self, ref: str) -> int:
        """Pull, returning the bytes downloaded (sum of the layers' sizes as the engine reported them)."""
        from docker.utils import parse_repository_tag

        repo, tag = parse_repository_tag(ref)
        layer_bytes: dict[str, int] = {}
        try:
            for event in self.client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if "error" in event:
                    raise TargetFailed(CellStatus.PULL_FAILED, f"pull {ref}: {event['error']}")
                detail = event.get("progressDetail") or {}
                if event.get("status") == "Downloading" and detail.get("total"):
                    layer_bytes[event.get("id", "")] = int(detail["total"])
        except TargetFailed:
            raise
        except Exception as exc:
            raise TargetFailed(CellStatus.PULL_FAILED, f"pull {ref}: {_api_reason(exc)}") from exc
        return sum(layer_bytes.values())

    # ---------------------------------------------------------------- failure, logs, stop

    async def _death(self, container: Any) -> TargetFailed | None:
        """How the container died while starting, or None while it runs."""
        import docker.errors

        try:
            await asyncio.to_thread(container.reload)
        except docker.errors.NotFound:
            return TargetFailed(CellStatus.CRASHED, "the container disappeared")
        except Exception:
            return None  # a hiccup talking to the engine is not the target's death
        state = container.attrs.get("State") or {}
        if state.get("Status") in ("exited", "dead"):
            code = state.get("ExitCode")
            if state.get("OOMKilled"):
                return TargetFailed(CellStatus.OOM, f"OOM-killed during start (exit code {code})")
            return TargetFailed(CellStatus.CRASHED, f"exited during start with code {code}")
        return None

    async def _log_tail(self, container: Any) -> str:
        """The last five log lines, joined with ' | '."""
        logs = await self._logs(container, tail=LOG_TAIL)
        return " | ".join(line for line in logs.strip().splitlines()[-5:])

    async def _logs(self, container: Any, tail: int = LOG_TAIL) -> str:
        try:
            raw = await asyncio.to_thread(container.logs, tail=tail)
        except Exception:
            return ""
        text: str = raw.decode(errors="replace")
        return text

    async def _remove_quietly(self, container: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(container.remove, force=True, v=True)

    async def _remove_by_name(self, name: str) -> None:
        with contextlib.suppress(Exception):
            c = await asyncio.to_thread(self.client.containers.get, name)
            await asyncio.to_thread(c.remove, force=True, v=True)

    async def stop(self, target: RunningTarget) -> dict[str, Any]:
        """Stop (SIGTERM, then SIGKILL after 3 s) and always remove. Returns the exit facts."""
        import docker.errors

        facts: dict[str, Any] = {"exit_code": None, "oom_killed": None, "last_logs": "", "removed": False}
        try:
            container = await asyncio.to_thread(self.client.containers.get, target.ident)
        except docker.errors.NotFound:
            facts["note"] = "already gone"
            return facts
        try:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(container.stop, timeout=3)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(container.reload)
            state = container.attrs.get("State") or {}
            facts["exit_code"] = state.get("ExitCode")
            facts["oom_killed"] = state.get("OOMKilled")
            facts["last_logs"] = await self._logs(container)
        finally:
            try:
                await asyncio.shield(asyncio.to_thread(container.remove, force=True, v=True))
                facts["removed"] = True
            except docker.errors.NotFound:
                facts["removed"] = True
        return facts

    async def cleanup_session(self, session_id: str) -> int:
        return len(await asyncio.to_thread(remove_labelled, f"{SESSION_LABEL}={session_id}", self._client))

    async def remove_orphans(self, *, include_live: bool = False, dry_run: bool = False) -> list[str]:
        """Containers whose profiler no longer runs (or, `include_live`, every labelled one): removed
        unless `dry_run`; one line each, 'name (session id)'."""

        def is_orphan(labels: dict[str, str]) -> bool:
            owner = labels.get(OWNER_LABEL)
            return include_live or (owner is not None and not owner_alive(owner))

        return await asyncio.to_thread(remove_labelled, SESSION_LABEL, self._client, dry_run, is_orphan)


def confirm_container_caps(
    host_config: dict[str, Any], paths: CgroupPaths, spec: TargetSpec, enforced: EnforcedCaps
) -> None:
    """Record a cap as enforced only when the engine's HostConfig says so and, where the cgroup files
    are readable, the kernel agrees (`cgroups.confirm_caps`)."""
    memory_bytes = gb_to_bytes(spec.memory_gb) if spec.memory_gb else None
    kernel = confirm_caps(paths, cpus=spec.cpus, memory_bytes=memory_bytes, cpuset=spec.cpuset)
    if spec.cpus:
        nano = round(spec.cpus * 1e9)
        engine = int(host_config.get("NanoCpus") or 0) == nano
        engine_note = f"cpus: HostConfig NanoCpus={host_config.get('NanoCpus')} != {nano}"
        enforced.cpus_enforced = _engine_and_kernel_agree(
            "cpus", (engine, engine_note), (kernel.cpus, kernel.cpus_note), paths, enforced.notes
        )
        if spec.cpuset:
            enforced.cpuset = kernel.cpuset or host_config.get("CpusetCpus") or None
    if memory_bytes:
        engine = int(host_config.get("Memory") or 0) == memory_bytes
        engine_note = f"memory: HostConfig Memory={host_config.get('Memory')} != {memory_bytes}"
        enforced.memory_enforced = _engine_and_kernel_agree(
            "memory", (engine, engine_note), (kernel.memory, kernel.memory_note), paths, enforced.notes
        )
        if int(host_config.get("MemorySwap") or 0) != memory_bytes:
            enforced.notes.append(f"memory: swap limit {host_config.get('MemorySwap')} != memory limit")
    if spec.gpus:
        reqs = host_config.get("DeviceRequests") or []
        enforced.gpus_enforced = bool(reqs) and _gpu_visible()
        if not enforced.gpus_enforced:
            enforced.notes.append("gpus: requested, but no GPU is visible to NVML on this host")


def _engine_and_kernel_agree(
    cap: str, engine: tuple[bool, str], kernel: tuple[bool, str], paths: CgroupPaths, notes: list[str]
) -> bool:
    """One cap: the engine's HostConfig must have it, then the kernel's cgroup files must agree, unless
    they cannot be read from here (then the engine's word is taken, and said so). Each (ok, why not)."""
    if not engine[0]:
        notes.append(engine[1])
        return False
    if not paths.found:
        notes.append(f"{cap}: confirmed from HostConfig only (cgroup not readable)")
        return True
    if not kernel[0]:
        notes.append(kernel[1])
    return kernel[0]


def engine_epoch(stamp: Any) -> float | None:
    """An engine timestamp ('2026-12-01T10:00:00.123456789Z', nanoseconds) as epoch seconds."""
    if not isinstance(stamp, str) or not stamp or stamp.startswith("0001-"):
        return None
    from datetime import datetime

    head, _, frac = stamp.rstrip("Z").partition(".")
    try:
        whole = datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return None
    digits = "".join(ch for ch in frac if ch.isdigit())
    return whole + (int(digits) / 10 ** len(digits) if digits else 0.0)


def _api_reason(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return _one_line(Exception(explanation)) if explanation else _one_line(exc)


def _cgroup_pids(paths: CgroupPaths) -> list[int]:
    d = paths.controller_dir("memory") or paths.controller_dir("cpu") or paths.v2_dir
    try:
        return [int(x) for x in Path(d, "cgroup.procs").read_text().split()] if d else []
    except OSError:
        return []


def _gpu_visible() -> bool:
    from tui_profiler.host import nvml_status

    return nvml_status().available


def remove_labelled(
    label_filter: str = SESSION_LABEL,
    client: Any | None = None,
    dry_run: bool = False,
    select: Callable[[dict[str, str]], bool] | None = None,
) -> list[str]:
    """Remove (force) every container matching the label filter whose labels `select` accepts (all, by
    default); returns 'name (session id)' for each. Blocking: call in a thread."""
    own = client is None
    client = client or docker_client(timeout=60)
    try:
        # the plain list, no inspect per container: on a shared engine another session may remove one of
        # its containers meanwhile (an inspect would then fail the whole look-up with 404)
        found = []
        for c in client.api.containers(all=True, filters={"label": label_filter}):
            labels = c.get("Labels") or {}
            if select is None or select(labels):
                name = (c.get("Names") or ["?"])[0].lstrip("/")
                found.append((c["Id"], f"{name} ({labels.get(SESSION_LABEL, '')})"))
        if not dry_run:
            for ident, _ in found:
                with contextlib.suppress(Exception):
                    client.api.remove_container(ident, force=True, v=True)
        return [name for _, name in found]
    finally:
        if own:
            client.close()


def docker_engine_version() -> str:
    """The Docker engine's version, or why it is not available (blocking)."""
    try:
        client = docker_client(timeout=10)
        try:
            v = client.version()
            return f"{v.get('Version')} (API {v.get('ApiVersion')})"
        finally:
            client.close()
    except Exception as exc:
        return f"not available ({type(exc).__name__})"
