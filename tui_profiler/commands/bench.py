"""`tui-profiler bench [client|payload|sampler|tui|sweep|stream|stop|fleet|all]`: show that the harness is negligible next to what
it measures, and faster than what users would pick instead. Writes bench.md (tables), bench.csv and
bench.json into --out-dir; see `tui_profiler/bench/` for how each benchmark measures."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from tui_profiler.errors import ExitCode

CHOICES = ("client", "payload", "sampler", "tui", "sweep", "stream", "stop", "fleet", "adaptive", "all")
# Benchmarks that need something only the user can name (`all` leaves them out): fleet needs --hosts,
# adaptive a fully measured grid (--grid).
ON_REQUEST = ("fleet", "adaptive")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark the harness: client vs wrk/hey, payload cost, sampler, TUI ingest, sweep overhead",
        description="Benchmarks with ratios from one run: our load generator vs wrk, hey, plain aiohttp and "
        "the reference style; payload encode/decode vs inference; the sampler's rate and CPU; the TUI's "
        "ingest rate and memory; a sweep's wall time vs its cold starts and requests; the client's cost "
        "per stream event and its TTFT / inter-token timing against a scheduled-event server. Writes bench.md, "
        "bench.csv and bench.json.",
    )
    p.add_argument(
        "which",
        nargs="*",
        default=["all"],
        metavar="BENCH",
        help=f"one or more of {', '.join(CHOICES)} (default: all)",
    )
    p.add_argument("--quick", action="store_true", help="fewer rounds, shorter runs, smaller inputs")
    p.add_argument(
        "--hosts",
        default="",
        metavar="URL,...|FLEET.toml",
        help="fleet: the engines to spread the plan over (as `run --hosts`); the first also runs it alone",
    )
    p.add_argument("--preset", default="", help="fleet: the plan to run (default: smoke)")
    p.add_argument(
        "--grid",
        default="",
        metavar="FILE",
        help="adaptive: a fully measured grid to replay (a session, its cells.csv, an AC-Prof wide or long file)",
    )
    p.add_argument(
        "--goal", choices=("model", "slo"), default="model", help="adaptive: what the plan is after"
    )
    p.add_argument(
        "--replay-hosts",
        default="",
        metavar="N,...",
        help="adaptive (goal model): also replay the plan on fleets of these many hosts, e.g. 1,2,4",
    )
    p.add_argument(
        "--out", dest="adaptive_out", default=None, metavar="FILE.csv", help="adaptive: one row per step"
    )
    p.add_argument(
        "--json", dest="json_out", default=None, metavar="OUT", help="also write the results as JSON here"
    )
    p.add_argument(
        "--out-dir",
        default=None,
        metavar="DIR",
        help="folder for bench.md, bench.csv, bench.json (default: output/bench-<time>)",
    )
    p.add_argument(
        "--install-tools",
        action="store_true",
        help="apt-get install the client benchmark's tools (wrk, hey, nginx-light) and exit",
    )
    p.set_defaults(func=_run)


def _err(msg: str) -> int:
    print(f"tui-profiler bench: {msg}", file=sys.stderr)
    return ExitCode.USAGE


def _adaptive(args: argparse.Namespace) -> int:
    """`bench adaptive`: the adaptive plan replayed against a fully measured grid (tui_profiler.bench.adaptive)."""
    from tui_profiler.bench.adaptive import run

    if not args.grid:
        return _err("adaptive needs --grid FILE (a session, its cells.csv, or an AC-Prof wide or long file)")
    try:
        hosts = [int(h) for h in args.replay_hosts.split(",") if h.strip()] if args.replay_hosts else []
    except ValueError:
        return _err(f"--replay-hosts {args.replay_hosts}: a comma-separated list of host counts, e.g. 1,2,4")
    if any(h < 1 or h > 64 for h in hosts):
        return _err(f"--replay-hosts {args.replay_hosts}: each host count from 1 to 64")
    if hosts and args.goal != "model":
        return _err(
            "--replay-hosts: replays goal model only (the SLO plan measures one configuration a host)"
        )
    try:
        lines = run(args.grid, args.goal, args.adaptive_out, hosts)
    except (OSError, ValueError) as exc:
        return _err(f"--grid {args.grid}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    print("\n".join(lines))
    if args.adaptive_out:
        print(f"rows: {args.adaptive_out}")
    return ExitCode.OK


def _run(args: argparse.Namespace) -> int:
    from tui_profiler.bench.client import BenchUnavailable, install_tools
    from tui_profiler.bench.core import BENCHES, BenchReport

    if args.install_tools:
        return install_tools()
    which: list[str] = []
    for w in args.which:
        for part in w.split(","):
            part = part.strip()
            if part not in CHOICES:
                return _err(f"{part!r}: allowed {', '.join(CHOICES)}")
            which.extend(BENCHES if part == "all" else [part])
    if "adaptive" in which:
        if which != ["adaptive"]:
            return _err("adaptive runs alone: tui-profiler bench adaptive --grid FILE [--goal model|slo]")
        return _adaptive(args)
    benches = [b for b in (*BENCHES, *ON_REQUEST) if b in which]
    out_dir = (
        Path(args.out_dir)
        if args.out_dir
        else Path("output") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}"
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _err(f"--out-dir {out_dir}: {exc.strerror or exc}")

    report = BenchReport(benches, args.quick)
    report.command = (
        "tui-profiler bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 1 and sys.argv[1] == "bench"
        else "tui-profiler bench " + " ".join(benches) + (" --quick" if args.quick else "")
    )
    t_all = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - t_all:7.1f}s] {text}", file=sys.stderr, flush=True)

    say(
        f"benches: {', '.join(benches)}{' (quick)' if args.quick else ''}; load average "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}; results -> {out_dir}"
    )
    failed = 0
    for bench in benches:
        module = __import__(f"tui_profiler.bench.{bench}", fromlist=["_"])
        fn = getattr(module, f"run_{bench}_bench")
        t0 = time.perf_counter()
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        try:
            extra = {"hosts": args.hosts, "preset": args.preset} if bench == "fleet" else {}
            fn(report, quick=args.quick, say=say, **extra)
        except BenchUnavailable as exc:
            report.errors[bench] = str(exc)
            print(f"tui-profiler bench {bench}: {exc}", file=sys.stderr)
            failed += 1
        except KeyboardInterrupt:
            report.errors[bench] = "interrupted"
            say("interrupted: writing what was measured")
            failed += 1
            break
        except Exception as exc:  # one benchmark's failure must not lose the others' results
            report.errors[bench] = (
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            )
            print(f"tui-profiler bench {bench}: failed: {report.errors[bench]}", file=sys.stderr)
            failed += 1
        report.note(bench, f"took {time.perf_counter() - t0:.0f} s; load average at its start {load}.")
    report.wall_s = time.perf_counter() - t_all
    report.load_avg_end = [round(x, 2) for x in os.getloadavg()]
    paths = report.write(out_dir, Path(args.json_out) if args.json_out else None)
    print(report.markdown())
    targets = [m for m in report.measures if m.target]
    met = sum(1 for m in targets if m.met)
    missed = [f"{m.bench}: {m.measure} — {m.subject}" for m in targets if m.met is False]
    print(f"targets met: {met} of {len(targets)}" + (f"; not met: {'; '.join(missed)}" if missed else ""))
    print("files: " + ", ".join(str(p) for p in paths.values()))
    return ExitCode.CELL_FAILED if failed else ExitCode.OK
