"""`tui-profiler clean`: remove every container labelled `tui-profiler.session` (and kill any orphaned
process-runtime server), saying how many and which. `--dry-run` only lists them. `--hosts` cleans the
engines of a fleet's hosts instead (targets and measuring containers alike)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from tui_profiler.errors import ExitCode


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("clean", help="remove every container (and process) tui-profiler left behind")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.add_argument(
        "--hosts",
        default=None,
        metavar="URL,...|FLEET.toml",
        help="clean these engines (as `run --hosts` names them) instead of the local one",
    )
    p.set_defaults(func=_run)


def clean(dry_run: bool = False) -> tuple[list[str], list[str], str | None]:
    """(containers, processes, engine error or None): what both runtimes' `remove_orphans` find when the
    targets of live runs are included. Runs its own event loop: call it where none is running."""
    return asyncio.run(_clean(dry_run))


async def _clean(dry_run: bool) -> tuple[list[str], list[str], str | None]:
    from tui_profiler.runtime.docker import DockerRuntime
    from tui_profiler.runtime.process import ProcessRuntime

    containers: list[str] = []
    engine_error = None
    try:
        containers = await DockerRuntime().remove_orphans(include_live=True, dry_run=dry_run)
    except Exception as exc:
        engine_error = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    processes = await ProcessRuntime().remove_orphans(include_live=True, dry_run=dry_run)
    return containers, processes, engine_error


def clean_hosts(hosts: str, dry_run: bool = False) -> list[tuple[str, list[str], str | None]]:
    """Per fleet host: (its name, the containers found, its engine error or None)."""
    from tui_profiler.fleet.hosts import parse_hosts, resolve_host
    from tui_profiler.runtime.docker import DockerRuntime

    found: list[tuple[str, list[str], str | None]] = []
    for cfg in parse_hosts(hosts).hosts:
        host = resolve_host(cfg)
        try:
            client = host.client(timeout=60)
            try:
                names = asyncio.run(DockerRuntime(client).remove_orphans(include_live=True, dry_run=dry_run))
            finally:
                client.close()
            found.append((host.name, names, None))
        except Exception as exc:
            found.append((host.name, [], str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__))
    return found


def _run_hosts(args: argparse.Namespace) -> int:
    from tui_profiler.config import PresetError

    try:
        found = clean_hosts(args.hosts, dry_run=args.dry_run)
    except PresetError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    verb = "would remove" if args.dry_run else "removed"
    for name, containers, error in found:
        if error:
            print(f"{name}: engine not reachable ({error}); no containers checked")
            continue
        print(
            f"{name}: {verb} {len(containers)} container(s) labelled tui-profiler.session"
            + (":" if containers else "")
        )
        for c in containers:
            print(f"  {c}")
    return ExitCode.CELL_FAILED if any(error for _, _, error in found) else ExitCode.OK


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "hosts", None):  # callers that build their own Namespace may leave it out
        return _run_hosts(args)
    containers, processes, engine_error = clean(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    if engine_error:
        print(f"docker: engine not reachable ({engine_error}); no containers checked")
    else:
        print(
            f"{verb} {len(containers)} container(s) labelled tui-profiler.session"
            + (":" if containers else "")
        )
        for name in containers:
            print(f"  {name}")
    if processes:
        print(f"{'would kill' if args.dry_run else 'killed'} {len(processes)} orphaned server process(es):")
        for p in processes:
            print(f"  {p}")
    return ExitCode.CELL_FAILED if engine_error and not processes else ExitCode.OK
