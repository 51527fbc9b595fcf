"""`tui-profiler doctor`: can this machine profile, and which caps can it enforce?

Checks the Docker engine (reachable, version, cgroup driver and version, which caps the engine can
enforce), the process runtime (whether it can make cgroups here), GPUs through NVML ('not available' and
why), free disk for the output folder and the engine's data root, and the base and server images.
Exits 0 when at least one runtime is usable.

`doctor --hosts URL,...` (or a fleet TOML file) checks the hosts of a fleet instead: per host, whether its
engine answers (and which), the caps it enforces and what it lacks; exits 1 when a host is unreachable.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from tui_profiler.errors import ExitCode

Row = tuple[str, str, str]  # (check, status: ok|warn|fail|info, detail)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check the engine, cgroups, caps, GPUs and disk; exit 0 when usable")
    p.add_argument("--output", default="output", help="the session folder root to check for free disk")
    p.add_argument(
        "--hosts",
        default=None,
        metavar="URL,...",
        help="check these fleet hosts instead (engine URLs or docker context names, or a fleet TOML file); "
        "exit 1 when one is unreachable",
    )
    p.set_defaults(func=_run)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _disk(path: Path) -> str:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return f"{_gib(usage.free)} free of {_gib(usage.total)} ({probe})"


def collect(output_dir: str = "output") -> tuple[list[Row], bool]:
    """The checks as rows, and whether the machine is usable (some runtime works)."""
    from tui_profiler.cgroups import cgroup_label
    from tui_profiler.host import nvml_status
    from tui_profiler.runtime import _process_runtime_missing
    from tui_profiler.runtime.process import cgroup_writable

    rows: list[Row] = []
    docker_ok = False
    info: dict[str, Any] = {}
    client: Any = None
    try:
        from tui_profiler.runtime.docker import docker_client

        client = docker_client(timeout=10)
        version = client.version()
        info = client.info()
        docker_ok = True
        rows.append(("docker engine", "ok", f"{version.get('Version')} (API {version.get('ApiVersion')})"))
    except Exception as exc:
        rows.append(("docker engine", "fail", f"not reachable: {str(exc).splitlines()[0][:200]}"))

    rows.append(("cgroup (host)", "info", cgroup_label()))
    if docker_ok:
        rows.append(
            (
                "cgroup (engine)",
                "info",
                f"v{info.get('CgroupVersion', '?')}, driver {info.get('CgroupDriver', '?')}",
            )
        )
        caps = {
            "cpus (CFS quota)": info.get("CpuCfsQuota"),
            "cpuset": info.get("CPUSet"),
            "memory": info.get("MemoryLimit"),
            "memory+swap equal": info.get("SwapLimit"),
            "pids limit": info.get("PidsLimit"),
        }
        for cap, ok in caps.items():
            rows.append(
                (
                    f"docker cap: {cap}",
                    "ok" if ok else "warn",
                    "can be enforced" if ok else "cannot be enforced by this engine",
                )
            )
        runtimes = sorted((info.get("Runtimes") or {}).keys())
        gpu_rt = "nvidia" in runtimes or any(
            "nvidia" in str(v) for v in (info.get("Runtimes") or {}).values()
        )
        rows.append(
            (
                "docker cap: gpus",
                "info",
                f"runtimes: {', '.join(runtimes) or '?'}"
                + (
                    ""
                    if gpu_rt
                    else " (no nvidia runtime: GPU requests depend on the NVIDIA container toolkit)"
                ),
            )
        )

    missing = _process_runtime_missing()
    can_cg, cg_detail = cgroup_writable()
    if missing:
        rows.append(("process runtime", "warn", f"not usable: {missing}"))
    else:
        rows.append(("process runtime", "ok", "usable"))
    rows.append(
        (
            "process caps: cpus, memory",
            "ok" if can_cg else "warn",
            cg_detail if can_cg else f"NOT enforced: {cg_detail}",
        )
    )

    nv = nvml_status()
    if nv.available:
        rows.append(("gpus (NVML)", "ok", f"driver {nv.driver}; " + "; ".join(nv.gpus)))
    else:
        rows.append(("gpus (NVML)", "info", f"not available: {nv.reason}"))

    rows.append(("disk: output", "info", _disk(Path(output_dir).resolve())))
    if docker_ok:
        root = info.get("DockerRootDir") or ""
        try:
            rows.append(("disk: docker root", "info", _disk(Path(root))))
        except OSError as exc:
            rows.append(("disk: docker root", "info", f"{root}: not readable here ({exc.strerror})"))
        from tui_profiler.images import LOCAL_BASE, server_tag

        for label, tag in (("image: base", LOCAL_BASE), ("image: server", server_tag())):
            try:
                img = client.images.get(tag)
                rows.append((label, "ok", f"{tag} present ({_gib(img.attrs.get('Size') or 0)})"))
            except Exception:
                rows.append((label, "warn", f"{tag} missing (`tui-profiler images build` makes it)"))
    if client is not None:
        client.close()
    usable = docker_ok or not missing
    return rows, usable


def host_blocks(hosts_arg: str) -> tuple[list[str], bool]:
    """`doctor --hosts`: one block of lines per host (probed at once, each in a thread), and whether every
    host answered. Raises PresetError for a bad --hosts."""
    from concurrent.futures import ThreadPoolExecutor

    from tui_profiler.fleet.hosts import parse_hosts, probe_host, resolve_host

    fleet = parse_hosts(hosts_arg)
    hosts = [resolve_host(h) for h in fleet.hosts]
    with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
        probes = list(pool.map(probe_host, hosts))
    lines: list[str] = []
    for probe in probes:
        host = probe.host
        via = f" (context {host.context})" if host.context else ""
        lines.append(f"host {host.name}: {host.engine_url}{via}")
        if not probe.reachable:
            lines.append(f"  reachable: no — {probe.reason}")
            lines.append("")
            continue
        limits = probe.limits()
        lines.append(
            f"  reachable: yes — Docker engine {probe.engine_version} (API {probe.api_version}), "
            f"{probe.os}, kernel {probe.kernel}, {probe.arch}"
        )
        lines.append(
            f"  gives: {limits.cpus:g} cores"
            + (f" (cpuset {host.config.cpuset} of {probe.ncpu})" if host.config.cpuset else "")
            + f", {limits.memory_gb:g} GiB, {limits.gpus} GPU(s): {limits.gpu_reason}; "
            f"cgroup v{probe.cgroup_version or '?'} ({probe.cgroup_driver or '?'})"
        )
        lines.append(f"  enforces: {', '.join(probe.enforces()) or 'nothing'}")
        lines.append(f"  lacks: {'; '.join(probe.lacks()) or 'nothing'}")
        lines.append("")
    return lines, all(p.reachable for p in probes)


def _run_hosts(hosts_arg: str) -> int:
    from tui_profiler.config import PresetError

    try:
        lines, all_reachable = host_blocks(hosts_arg)
    except PresetError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    print("\n".join(lines).rstrip())
    if not all_reachable:
        print("hosts: not every host is reachable")
        return ExitCode.CELL_FAILED
    print("hosts: all reachable")
    return ExitCode.OK


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    if getattr(args, "hosts", None):
        return _run_hosts(args.hosts)
    rows, usable = collect(getattr(args, "output", None) or "output")
    table = Table(title="tui-profiler doctor", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    colours = {"ok": "green", "warn": "yellow", "fail": "red", "info": "cyan"}
    for check, status, detail in rows:
        table.add_row(check, f"[{colours[status]}]{status}[/]", detail)
    console = Console()
    console.print(table)
    if usable:
        console.print("usable: yes")
        return ExitCode.OK
    console.print("usable: no — neither a Docker engine nor the process runtime can run the model server")
    return ExitCode.CELL_FAILED
