"""The hosts of a fleet: `--hosts` parsed, each host resolved to a Docker engine client, and what it can enforce.

A host is a Docker engine reached the way Docker reaches it: `unix://`, `tcp://` (TLS with `tls_verify` /
`cert_path`), `ssh://user@host` (paramiko, reading `~/.ssh/config` and `~/.ssh/known_hosts`), or a
`docker context` name, resolved here to its endpoint. What a host can give (cores, memory, GPUs) and which
caps its engine enforces come from the engine's own `info()`: nothing of ours runs on the box to ask.
Blocking throughout (docker SDK calls): async callers run these in a thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tui_profiler.cgroups import cpuset_cores
from tui_profiler.config.errors import PresetError
from tui_profiler.config.files import read_toml
from tui_profiler.config.model import FleetConfig, HostConfig
from tui_profiler.errors import ProfilerError
from tui_profiler.host import HostLimits

ENGINE_SCHEMES = ("unix://", "tcp://", "ssh://", "http://", "https://", "npipe://")
HOSTS_SOURCE = "--hosts"  # how errors name a comma list given on the command line


class HostUnreachable(ProfilerError, RuntimeError):
    """A host whose engine did not answer: the message says which and why, in one line."""


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


# ---------------------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class FleetHost:
    """A host resolved to its engine: `engine_url` is what the SDK connects to (a context's endpoint when
    `config.url` names a context)."""

    config: HostConfig
    name: str
    engine_url: str
    context: str = ""  # the docker context it came from, "" for a URL
    # A context's TLS settings (docker.tls.TLSConfig), used instead of tls_verify / cert_path.
    context_tls: Any = field(default=None, compare=False, repr=False)

    def tls_config(self) -> Any:
        """The docker.tls.TLSConfig this host needs, None for a plain connection."""
        if self.context_tls is not None:
            return self.context_tls
        cfg = self.config
        if not (cfg.tls_verify or cfg.cert_path):
            return None
        import docker.tls

        folder = Path(cfg.cert_path or os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
        cert, key, ca = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
        return docker.tls.TLSConfig(
            client_cert=(str(cert), str(key)) if cert.exists() and key.exists() else None,
            ca_cert=str(ca) if cfg.tls_verify else None,
            verify=cfg.tls_verify,
        )

    def client(self, timeout: int = 120) -> Any:
        """A docker SDK client for this host's engine (blocking; ssh:// goes through paramiko)."""
        import docker

        return docker.DockerClient(base_url=self.engine_url, tls=self.tls_config() or False, timeout=timeout)


def resolve_host(cfg: HostConfig) -> FleetHost:
    """The host's engine endpoint: its URL as given, or the endpoint of the docker context it names."""
    if cfg.url.startswith(ENGINE_SCHEMES):
        return FleetHost(config=cfg, name=cfg.label, engine_url=cfg.url)
    from docker.context import ContextAPI

    try:
        ctx = ContextAPI.get_context(cfg.url)
        known = [c.Name for c in ContextAPI.contexts()]
    except Exception as exc:  # a context store that cannot be read
        raise PresetError(
            HOSTS_SOURCE, "hosts.url", cfg.url, f"a readable docker context ({_one_line(exc)})"
        ) from None
    if ctx is None or not ctx.Host:
        raise PresetError(
            HOSTS_SOURCE,
            "hosts.url",
            cfg.url,
            f"an engine URL ({', '.join(s for s in ENGINE_SCHEMES[:3])}) or a docker context "
            f"(known: {', '.join(known) or 'none'})",
        )
    return FleetHost(
        config=cfg, name=cfg.label, engine_url=ctx.Host, context=cfg.url, context_tls=ctx.TLSConfig
    )


# ------------------------------------------------------------------------------------------ parsing


def parse_hosts(arg: str) -> FleetConfig:
    """`run --hosts` / `doctor --hosts`: engine URLs or context names separated by commas, or the path of a
    fleet TOML file (top-level `[[hosts]]`, or a `[fleet]` table). Bad input: a one-line PresetError that
    names the field."""
    text = arg.strip()
    path = Path(text).expanduser()
    table: Any
    prefix: tuple[str, ...]
    if text.endswith(".toml") or path.is_file():
        data = read_toml(path)
        source = str(path)
        if "fleet" in data:
            extra = sorted(k for k in data if k != "fleet")
            if extra:  # a preset's other tables belong to the preset, not here
                raise PresetError(
                    source, extra[0], "unknown section", "a fleet file holds [fleet] or [[hosts]]"
                )
            table, prefix = data["fleet"], ("fleet",)
        else:
            table, prefix = data, ()
    else:
        source = HOSTS_SOURCE
        items = [item.strip() for item in text.split(",")]
        if not text or any(not item for item in items):
            raise PresetError(
                source, "hosts", arg, "engine URLs or docker context names separated by commas, none empty"
            )
        table, prefix = {"hosts": [{"url": item} for item in items]}, ()
    try:
        fleet = FleetConfig.model_validate(table)
    except ValidationError as exc:
        raise PresetError.from_validation(exc, source, table, FleetConfig, prefix) from None
    for host in fleet.hosts:
        try:
            resolve_host(host)
        except PresetError as exc:
            where = ".".join((*prefix, "hosts", "url"))
            raise PresetError(source, where, host.url, exc.allowed) from None
    return fleet


# ------------------------------------------------------------------------------------------ probing

# The caps a run sets, and the engine's info() flag that says whether the kernel lets it enforce them.
_CAPS: tuple[tuple[str, str], ...] = (
    ("CpuCfsQuota", "cpus (CPU CFS quota)"),
    ("CPUSet", "cpuset (pinning to cores)"),
    ("MemoryLimit", "memory limit"),
    ("SwapLimit", "memory+swap limit (no swap beyond the memory cap)"),
    ("PidsLimit", "pids limit"),
)


@dataclass(frozen=True)
class HostProbe:
    """What one host's engine says about itself (`client.info()`, `client.version()`); None: not said."""

    host: FleetHost
    reachable: bool
    reason: str = ""  # why not reachable
    engine_id: str | None = None  # the engine's ID (engines sharing /etc/docker share it)
    data_root: str | None = None  # DockerRootDir: tells two engines on one machine apart
    engine_version: str | None = None
    api_version: str | None = None
    os: str | None = None
    kernel: str | None = None
    arch: str | None = None
    ncpu: int | None = None
    mem_total: int | None = None  # bytes
    cgroup_version: str | None = None  # "1" / "2"
    cgroup_driver: str | None = None
    caps: dict[str, bool | None] = field(default_factory=dict)  # info() flag -> enforced?
    runtimes: tuple[str, ...] = ()
    nvidia_runtime: bool = False
    gpu_count: int | None = None  # from the engine's generic resources, when it declares them
    seconds: float | None = None  # how long the probe took

    @property
    def cpuset(self) -> list[int]:
        return cpuset_cores(self.host.config.cpuset) if self.host.config.cpuset else []

    def _missing_cores(self) -> list[int]:
        return [c for c in self.cpuset if self.ncpu is not None and c >= self.ncpu]

    def limits(self) -> HostLimits:
        """What the host can give a target: the cores of its cpuset (all when none), its memory, GPUs."""
        if not self.reachable or self.ncpu is None or self.mem_total is None:
            raise HostUnreachable(f"{self.host.name}: not reachable ({self.reason or 'no engine facts'})")
        cores = len([c for c in self.cpuset if c < self.ncpu]) if self.cpuset else self.ncpu
        if self.gpu_count is not None and self.nvidia_runtime:
            gpus, reason = self.gpu_count, f"{self.gpu_count} GPU(s) declared by the engine (nvidia runtime)"
        elif self.nvidia_runtime:
            gpus, reason = (
                0,
                "not available (an nvidia runtime is there, but the engine declares no GPU count)",
            )
        else:
            gpus, reason = 0, "not available (the engine has no nvidia runtime)"
        return HostLimits(
            cpus=float(cores), memory_gb=round(self.mem_total / 2**30, 2), gpus=gpus, gpu_reason=reason
        )

    def enforces(self) -> list[str]:
        """The caps this engine enforces, in plain words."""
        if not self.reachable:
            return []
        said = [words for flag, words in _CAPS if self.caps.get(flag)]
        if self.nvidia_runtime:
            said.append("GPU requests (nvidia runtime)")
        return said

    def lacks(self) -> list[str]:
        """What this host cannot do that a run may ask of it, in plain words."""
        if not self.reachable:
            return [f"a reachable engine ({self.reason})"]
        said = [f"{words}: not enforced by this engine" for flag, words in _CAPS if not self.caps.get(flag)]
        if not self.nvidia_runtime:
            said.append("GPUs: no nvidia runtime")
        missing = self._missing_cores()
        if missing:
            cores = ",".join(map(str, missing))
            said.append(f"cpuset {self.host.config.cpuset}: cores {cores} do not exist (it has {self.ncpu})")
        return said

    def as_facts(self) -> dict[str, Any]:
        """This host in meta.json. CPU model: not said by the engine (the measuring container reads it)."""
        cfg = self.host.config
        facts: dict[str, Any] = {
            "name": self.host.name,
            "url": cfg.url,
            "engine_url": self.host.engine_url,
            "context": self.host.context or None,
            "host_class": cfg.host_class or None,
            "cpuset": cfg.cpuset or None,
            "reachable": self.reachable,
            "reason": self.reason or None,
            "engine_id": self.engine_id,
            "data_root": self.data_root,
            "engine_version": self.engine_version,
            "api_version": self.api_version,
            "os": self.os,
            "kernel": self.kernel,
            "arch": self.arch,
            "cpu_count": self.ncpu,
            "memory_bytes": self.mem_total,
            "cgroup_version": f"v{self.cgroup_version}" if self.cgroup_version else None,
            "cgroup_driver": self.cgroup_driver,
            "runtimes": list(self.runtimes),
            "enforces": self.enforces(),
            "lacks": self.lacks(),
            "probe_seconds": self.seconds,
        }
        if self.reachable:
            limits = self.limits()
            facts |= {
                "usable_cores": limits.cpus,
                "memory_gb": limits.memory_gb,
                "gpus": limits.gpus,
                "gpu": limits.gpu_reason,
            }
        return facts


def _gpu_count(info: dict[str, Any]) -> int | None:
    """GPUs the engine declares as generic resources (daemon.json `node-generic-resources`), else None."""
    resources = info.get("GenericResources")
    if not resources:
        return None
    count = 0
    for res in resources:
        spec = res.get("DiscreteResourceSpec") or res.get("NamedResourceSpec") or {}
        if "gpu" in str(spec.get("Kind", "")).lower():
            count += int(spec.get("Value", 1)) if "DiscreteResourceSpec" in res else 1
    return count or None


def probe_host(host: FleetHost, timeout: int = 20) -> HostProbe:
    """Ask the host's engine what it is and what it enforces (blocking). Unreachable: reachable=False and why."""
    import time

    t0 = time.perf_counter()
    try:
        client = host.client(timeout=timeout)
    except Exception as exc:
        return HostProbe(host=host, reachable=False, reason=_one_line(exc))
    try:
        version = client.version()
        info = client.info()
    except Exception as exc:
        return HostProbe(host=host, reachable=False, reason=_one_line(exc))
    finally:
        client.close()
    runtimes = tuple(sorted((info.get("Runtimes") or {}).keys()))
    nvidia = any(
        "nvidia" in name or "nvidia" in str(spec) for name, spec in (info.get("Runtimes") or {}).items()
    )
    cgroup_version = info.get("CgroupVersion")
    return HostProbe(
        host=host,
        reachable=True,
        engine_id=info.get("ID"),
        data_root=info.get("DockerRootDir"),
        engine_version=version.get("Version"),
        api_version=version.get("ApiVersion"),
        os=info.get("OperatingSystem"),
        kernel=info.get("KernelVersion"),
        arch=info.get("Architecture"),
        ncpu=info.get("NCPU"),
        mem_total=info.get("MemTotal"),
        cgroup_version=str(cgroup_version) if cgroup_version else None,
        cgroup_driver=info.get("CgroupDriver"),
        caps={flag: info.get(flag) for flag, _ in _CAPS},
        runtimes=runtimes,
        nvidia_runtime=nvidia,
        gpu_count=_gpu_count(info),
        seconds=time.perf_counter() - t0,
    )
