"""`tui-profiler run`: run a preset's sweep (or profile a running server with --url), headless or in the TUI.

Headless shows a live progress display (cell i/n, ETA, live p50/p99, the cold-start phase), then a summary
table; it exits with an `ExitCode` (`tui_profiler.errors`): CELL_FAILED (1) when a cell failed,
INTERRUPTED (130) when interrupted (the session can be resumed), USAGE (2) on bad input.
SIGINT, SIGTERM and SIGHUP stop gracefully (target removed, files flushed, session resumable); a second
Ctrl-C forces (cancels the clean-up waits; containers are still removed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from tui_profiler import formatting
from tui_profiler.errors import ExitCode
from tui_profiler.session.schema import CellStatus, SessionStatus


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run a preset's sweep (headless or in the TUI), or profile a running server with --url",
        description="Run a preset: start the model's container under each resource cap, measure its cold "
        "start, send timed requests per input size and load level, and write the session folder.",
    )
    p.add_argument("preset", nargs="?", help="preset name (see `tui-profiler presets list`) or a .toml path")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a preset field, lists by comma (e.g. resources.cpus=0.5,2); repeatable",
    )
    p.add_argument("--headless", action="store_true", help="no TUI: a progress display and a summary table")
    p.add_argument(
        "--runtime",
        choices=["docker", "process"],
        default=None,
        help="how to start targets (default: docker when an engine is reachable, else process)",
    )
    p.add_argument("--output", default="output", help="folder for session folders (default: ./output)")
    p.add_argument(
        "--resume",
        metavar="SESSION_DIR",
        default=None,
        help="continue an interrupted session: finished cells are kept, the rest are run",
    )
    p.add_argument(
        "--url",
        default=None,
        help="profile a server that is already running (no container): with a preset, its template and "
        "inputs (the preset needs no model or [target])",
    )
    p.add_argument(
        "--hosts",
        default=None,
        metavar="URL,...|FLEET.toml",
        help="run on several test boxes: Docker engine URLs (unix://, tcp://, ssh://user@host) or `docker "
        "context` names, comma-separated, or a fleet TOML file ([[hosts]] with url, name, host_class, "
        "cpuset); each host runs one resource configuration at a time, measured next to its target",
    )
    p.add_argument(
        "--concurrency", type=int, default=None, help="with --url: concurrent clients (closed loop)"
    )
    p.add_argument("--requests", type=int, default=None, help="with --url: timed requests per level")
    p.add_argument(
        "--find-max-load",
        action="store_true",
        help="per resource configuration and input size, search for the largest concurrency (or rate) "
        "that meets the preset's [slo] at slo.percentile, and write capacity.csv (load.search = 'slo')",
    )
    p.add_argument(
        "--events",
        metavar="FILE",
        default=None,
        help="with --headless: also write every event as one JSON line to FILE (a recording that "
        "`tui_profiler.session.store.replay` turns back into the session's files)",
    )
    p.set_defaults(func=_run)


def _err(msg: str) -> int:
    print(f"tui-profiler run: {msg}", file=sys.stderr)
    return ExitCode.USAGE


def _load(args: argparse.Namespace) -> Any:
    """The preset to run (raises PresetError with one line)."""
    import json
    from pathlib import Path

    from tui_profiler.config import apply_overrides, load_preset, preset_from_dict

    overrides = list(args.overrides)
    if args.concurrency is not None:
        overrides.append(f"load.concurrency={args.concurrency}")
    if args.requests is not None:
        overrides.append(f"load.requests={args.requests}")
    if args.resume and not args.preset:
        meta = json.loads((Path(args.resume) / "meta.json").read_text(encoding="utf-8"))
        data = meta.get("preset_toml") or {}
        if overrides:
            data = apply_overrides(data, overrides)
        return preset_from_dict(data, str(Path(args.resume) / "meta.json"), for_url=bool(args.url))
    if args.preset:
        # with --url there is no container to start: the preset needs neither `model` nor [target]
        return load_preset(args.preset, overrides, for_url=bool(args.url))
    # --url without a preset: a generic image request to our own server's protocol
    data = apply_overrides({"model": "external", "name": "url", "input": {"kind": "image"}}, overrides)
    return preset_from_dict(data, "--url", for_url=True)


def _run(args: argparse.Namespace) -> int:
    from tui_profiler.config import PresetError
    from tui_profiler.load.sources import open_sources
    from tui_profiler.plan import build_plan

    if getattr(args, "find_max_load", False):  # the flag is the preset key, for the TUI's run too
        args.overrides = [*args.overrides, "load.search=slo"]
    if not args.preset and not args.url and not args.resume:
        return _err(
            "give a preset name or path (see `tui-profiler presets list`), --url URL, or --resume DIR"
        )
    if (args.concurrency is not None or args.requests is not None) and not args.url and not args.preset:
        return _err("--concurrency / --requests go with --url (or use --set load.concurrency=N)")
    try:
        preset = _load(args)
        build_plan(preset)  # a plan with no cell is refused here, not run to an "ok" end
        open_sources(preset)  # the user's input files, checked before any container starts
        args.fleet = _fleet(args)
    except PresetError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except (OSError, ValueError) as exc:
        return _err(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if args.resume and not _is_session(args.resume):
        return _err(f"--resume {args.resume}: not a session folder (no meta.json)")

    if not args.headless and not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("note: no terminal for the TUI (not a tty); running headless", file=sys.stderr)
        args.headless = True
    if not args.headless:
        try:
            from tui_profiler.tui.app import make_app
        except ImportError as exc:
            print(f"note: the terminal UI is not available ({exc}); running headless", file=sys.stderr)
        else:
            if args.url or args.resume:
                print("note: --url and --resume run headless", file=sys.stderr)
            else:
                app = make_app(
                    output_dir=args.output,
                    preset=args.preset,
                    start_live=True,
                    overrides=args.overrides,
                    runtime=args.runtime,
                    fleet=args.fleet,
                )
                app.run()
                return int(app.return_code or 0)
    # uvloop when installed: about half the load generator's own per-request cost
    from tui_profiler.load.client import run as run_on_fastest_loop

    return run_on_fastest_loop(_headless(preset, args))


def _fleet(args: argparse.Namespace) -> Any:
    """The hosts to run on: --hosts, else (on a resume) the session's own; None: the preset's or here."""
    if args.hosts and args.url:
        raise ValueError("--hosts and --url: a running server is profiled from here, on no fleet")
    if args.hosts and args.runtime == "process":
        raise ValueError(
            "--hosts and --runtime process: a fleet's hosts run containers through their engines"
        )
    if args.hosts:
        from tui_profiler.fleet.hosts import parse_hosts

        return parse_hosts(args.hosts)
    if args.resume:
        import json
        from pathlib import Path

        from tui_profiler.config import FleetConfig

        meta = json.loads((Path(args.resume) / "meta.json").read_text(encoding="utf-8"))
        if meta.get("fleet"):
            return FleetConfig.model_validate(meta["fleet"])
    return None


def _is_session(path: str) -> bool:
    from pathlib import Path

    return (Path(path) / "meta.json").is_file()


# ------------------------------------------------------------------------------------------ headless


class _Progress:
    """Consumes engine events; renders a compact live view with rich."""

    def __init__(self, console: Any) -> None:
        from tui_profiler import events

        self.ev = events  # imported here, not at module level: every CLI command imports this module
        self.console = console
        self.session = ""
        self.runtime = ""
        self.n_cells = 0
        self.done = 0
        self.failed = 0
        self.cell: dict[str, Any] | None = None
        self.cell_index: int | None = None
        self.cells: dict[int, dict[str, Any]] = {}  # every started cell (a fleet runs several at once)
        self.eta: float | None = None
        self.phase = ""
        self.latencies: deque[float] = deque(maxlen=2000)
        self.n_req = 0
        self.n_err = 0
        self.n_finished = (
            0  # every request of this run that finished (warm-up included): each is a row on disk
        )
        self.logs: deque[str] = deque(maxlen=4)
        self.t0 = time.perf_counter()
        self.stopping = ""
        self.searching = False  # a capacity search: n_cells is only an upper bound
        self.adaptive: dict[str, Any] = {}  # an adaptive plan's state (meta.json `adaptive`)

    def __call__(self, event: Any) -> None:
        ev = self.ev
        if type(event) is ev.RequestDone:  # first: thousands a second against a fast server
            self.n_finished += 1
            if not event.warmup:
                self.n_req += 1
                if event.ok and event.latency_s is not None:
                    self.latencies.append(event.latency_s)
                else:
                    self.n_err += 1
        elif isinstance(event, ev.SessionStarted):
            self.session, self.runtime, self.n_cells = event.session_dir, event.runtime, event.n_cells
            self.done = event.resumed_cells
            self.searching = bool(event.meta.get("search") or event.meta.get("adaptive"))
            self.adaptive = event.meta.get("adaptive") or {}
            self._print(f"session {event.session_dir}")
            self._print(f"runtime: {event.runtime} — {event.runtime_reason}")
            if event.meta.get("search"):
                self._print(_search_line(event.meta["search"]))
            if self.adaptive:
                self._print(_adaptive_line(self.adaptive))
        elif isinstance(event, ev.MetaUpdated):
            if "adaptive" in event.fields:
                self.adaptive = event.fields["adaptive"] or {}
        elif isinstance(event, ev.CellStarted):
            self.cell, self.cell_index, self.eta = event.cell, event.cell_index, event.eta_s
            self.cells[event.cell_index] = event.cell
            self.latencies.clear()
            self.n_req = self.n_err = 0
            self.phase = ""
        elif isinstance(event, ev.ColdStartPhase):
            secs = formatting.seconds(event.seconds) if event.seconds is not None else (event.detail or "n/a")
            self.phase = f"cold start: {event.phase} {secs}"
        elif isinstance(event, ev.ColdStartDone):
            self.phase = f"cold start {formatting.seconds(event.total_s)}"
            parts = ", ".join(
                f"{k} {formatting.seconds(v)}" for k, v in event.phases.items() if v is not None
            )
            where = f"cell {event.cell_index + 1} on {event.host}: " if event.host else ""
            self._print(f"  {where}cold start {formatting.seconds(event.total_s)} ({parts})")
        elif isinstance(event, ev.CellFinished):
            if event.status == CellStatus.INTERRUPTED:
                return
            self.done += 1
            if event.status != CellStatus.OK:
                self.failed += 1
            s = event.summary
            p50, p99 = _with_interval(s, "p50"), _with_interval(s, "p99")
            label = formatting.cell_label(self.cells.get(event.cell_index) or self.cell or {})
            mark = "[green]ok[/]" if event.status == CellStatus.OK else f"[red]{event.status}[/]"
            extra = f" — {_escape(event.reason)}" if event.reason else ""
            where = f" on {event.host}" if event.host else ""
            flags = formatting.saturation(s.get(SATURATION))
            saturated = (
                f" [yellow]saturated: {flags} — {_escape(str(s.get(SATURATION_REASON) or ''))}[/]"
                if flags
                else ""
            )
            of = "" if self.searching else f"/{self.n_cells}"
            why = f" [dim]({s.get('chosen_because')})[/]" if self.adaptive and s.get("chosen_because") else ""
            self._print(
                f"cell {event.cell_index + 1}{of}{where} {label}: {mark} n={s.get('n')} "
                f"p50 {p50} p99 {p99}{saturated}{extra}{why}"
            )
            tail = formatting.tail_line(s)
            if tail:  # what explains the tail: CPU per request, throttling, the server's queue
                self._print(f"  [dim]tail:[/] {_escape(tail)}")
        elif isinstance(event, ev.CapacityFound):
            r = event.row
            cells = formatting.capacity_cells({k: "" if v is None else v for k, v in r.items()})
            self._print(
                f"[bold]capacity[/] {_config_label(r)}: max load {cells[4]} "
                f"({cells[5]}: {cells[6]}; {cells[7]} req/s) — {cells[-1]}"
            )
        elif isinstance(event, ev.LogMessage):
            style = {"error": "red", "warning": "yellow"}.get(event.level, "dim")
            self._print(f"[{style}]{event.text}[/]")

    def _print(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # the terminal may be gone (SIGHUP)
            self.console.print(text, highlight=False)

    def render(self) -> Any:
        from rich.table import Table

        from tui_profiler.stats import percentile

        grid = Table.grid(padding=(0, 1))
        lat = list(self.latencies)
        cell = formatting.cell_label(self.cell or {}) if self.cell else "starting…"
        idx = f"{(self.cell_index or 0) + 1}/{self.n_cells}" if self.cell else f"0/{self.n_cells}"
        eta = formatting.duration(self.eta)
        if self.searching:  # the cells are made (or chosen) as it goes: only an upper bound is known
            word = "adaptive" if self.adaptive else "searching"
            done = self.adaptive.get("cells_measured", 0) if self.adaptive else None
            n = done if done is not None else ((self.cell_index or 0) + 1 if self.cell else 0)
            idx = f"{n} ({word}, at most {self.n_cells})"
            eta = word
        elapsed = formatting.duration(time.perf_counter() - self.t0)
        grid.add_row(f"[bold]cell {idx}[/]", cell, f"[dim]ETA {eta}  elapsed {elapsed}[/]")
        grid.add_row(
            "",
            f"requests {self.n_req} (errors {self.n_err})  p50 {formatting.latency(percentile(lat, 50))}  "
            f"p99 {formatting.latency(percentile(lat, 99))}",
            f"[dim]{self.phase}[/]",
        )
        if self.stopping:
            grid.add_row("", f"[yellow]{self.stopping}[/]", "")
        return grid


SATURATION = "saturation"  # cells.csv: the saturation flags ('' none; client, server, host joined by '+')
SATURATION_REASON = "saturation_reason"


def _escape(text: str) -> str:
    """Text shown as it is by rich (no '[...]' read as markup)."""
    from rich.markup import escape

    return escape(text)


def _with_interval(row: Any, stat: str) -> str:
    """A cell's percentile with its 95% interval ('41.0 ms [37.0, –] needs 368'), escaped for rich."""
    return _escape(formatting.row_percentile(row, stat))


def _search_line(search: dict[str, Any]) -> str:
    bounds = ", ".join(f"{m} ≤ {formatting.latency(b)}" for m, b in search.get("bounds_s", {}).items())
    return (
        f"searching the largest {search.get('load_kind')} whose p{formatting.number(search.get('percentile'))} "
        f"meets {bounds}, from {formatting.number(search.get('start'))}: {search.get('searches')} "
        f"search(es), at most {search.get('max_cells')} cells"
    )


def _adaptive_line(state: dict[str, Any]) -> str:
    goal = state.get("goal")
    if goal == "slo":
        slo = state.get("slo") or {}
        what = (
            f"the cheapest configuration whose {state.get('statistic')} at size "
            f"{formatting.number(slo.get('size'))} is ≤ {formatting.latency(slo.get('bound_s'))}"
        )
    else:
        what = (
            f"a model of the grid to {formatting.number(state.get('target_error'))}% estimated median error"
        )
    budget = ", ".join(
        b
        for b in (
            f"{state['budget_cells']} cells" if state.get("budget_cells") else "",
            f"{formatting.number(state['budget_minutes'])} min" if state.get("budget_minutes") else "",
        )
        if b
    )
    return f"adaptive plan: {what}; at most {state.get('cells_in_grid')} cells" + (
        f", budget {budget}" if budget else ""
    )


def adaptive_end(state: dict[str, Any]) -> str:
    """The end line's word on an adaptive plan: why it stopped, and what it knows."""
    reason = state.get("stop_reason") or "interrupted"
    text = f"adaptive: stopped at {reason} after {state.get('cells_measured')} of {state.get('cells_in_grid')} cells"
    err = state.get("estimated_median_error_pct")
    if state.get("goal") == "model" and err is not None:
        text += (
            f", estimated median error {err:.1f}% (target {formatting.number(state.get('target_error'))}%)"
        )
    slo = state.get("slo") or {}
    if state.get("goal") == "slo":
        if slo.get("cpu_cores") is not None or slo.get("config") is not None:
            text += (
                f", cheapest meeting: {formatting.number(slo.get('cpu_cores'))} CPU / "
                f"{formatting.number(slo.get('mem_cap_gb'))} GB ({'measured' if slo.get('measured') else 'predicted'}"
                f" {formatting.latency(slo.get('latency_s'))}{'' if slo.get('decided') else ', not decided'})"
            )
        else:
            text += ", no configuration meets the SLO"
    return text


def _config_label(row: dict[str, Any]) -> str:
    """A capacity row's resource configuration and input size, as `formatting.cell_label` names a cell."""
    config = {
        "cpus": row.get("cpu_cores"),
        "memory_gb": row.get("mem_cap_gb"),
        "gpus": row.get("gpus"),
        "input_scale": row.get("input_scale"),
        "token_len": row.get("token_len"),
        "output_len": row.get("output_len"),
    }
    label = formatting.cell_label(config)
    return "(no caps, one input)" if label == formatting.NOT_AVAILABLE else label


def _float(value: Any) -> float | None:
    """A summary or CSV value as a number; None for 'not available' (None, '', text)."""
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def _event_log(path: str | None) -> Iterator[list[Callable[[Any], None]]]:
    """`--events FILE`: a consumer that writes each event as a JSON line (none without the flag)."""
    if not path:
        yield []
        return
    from tui_profiler.events import event_to_json

    with open(path, "w", encoding="utf-8") as fh:

        def write(event: Any) -> None:
            fh.write(event_to_json(event) + "\n")

        yield [write]


async def _headless(preset: Any, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from tui_profiler.runtime import RuntimeUnavailable
    from tui_profiler.session.reader import read_capacity, session_summary
    from tui_profiler.session.store import recording
    from tui_profiler.sweep import SweepRunner

    console = Console()
    if not console.is_terminal:  # a log file or a pipe: wide lines rather than wrapped ones
        console = Console(width=160)
    progress = _Progress(console)
    runner = SweepRunner(
        preset,
        runtime=args.runtime,
        output_dir=args.output,
        resume=args.resume,
        url=args.url,
        fleet=getattr(args, "fleet", None),
    )
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals_seen = 0

    def on_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            progress.stopping = (
                f"{signame}: stopping — removing the target, flushing files (Ctrl-C again to force)"
            )
            progress._print(f"[yellow]{progress.stopping}[/]")
            runner.request_stop()
        elif main is not None:
            progress._print("[red]forced stop[/]")
            main.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
    live = Live(
        progress.render(),
        console=console,
        refresh_per_second=4,
        transient=True,
        get_renderable=progress.render,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    finished = None
    try:
        with contextlib.suppress(OSError):
            live.start()
        try:
            with _event_log(getattr(args, "events", None)) as log_event:
                finished = await runner.run(recording(progress, *log_event))
        except asyncio.CancelledError:
            pass
        except (ValueError, RuntimeUnavailable) as exc:  # a resume that does not fit, no runtime: one line
            with contextlib.suppress(Exception):
                live.stop()
            print(
                f"tui-profiler run: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                file=sys.stderr,
            )
            return ExitCode.USAGE
    finally:
        with contextlib.suppress(Exception):
            live.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
    session_dir = str(runner.session_dir) if runner.session_dir else None
    cell_rows = session_summary(session_dir) if session_dir else []
    if session_dir:
        _summary_table(console, cell_rows)
        _capacity_table(console, read_capacity(session_dir))
    if finished is None or finished.status == SessionStatus.INTERRUPTED:
        if session_dir:
            progress._print(
                f"[yellow]interrupted[/]: this run's {progress.n_finished} finished requests kept "
                f"in requests.csv; resume with `tui-profiler run --resume {session_dir}`"
            )
        return ExitCode.INTERRUPTED
    n_saturated = sum(1 for r in cell_rows if r.get(SATURATION))
    saturated = (
        f", [yellow]{n_saturated} saturated[/] (not the target's numbers alone)" if n_saturated else ""
    )
    progress._print(
        f"session {finished.status}: {finished.n_cells} cells, {finished.n_failed} failed{saturated}, "
        f"{formatting.duration(finished.wall_s)} — {session_dir}"
        + (f"; {adaptive_end(progress.adaptive)}" if progress.adaptive else "")
    )
    return ExitCode.OK if finished.status == SessionStatus.OK else ExitCode.CELL_FAILED


def _summary_table(console: Any, rows: list[dict[str, str]]) -> None:
    from rich.table import Table

    if not rows:
        return
    table = Table(title="cells", show_lines=False)
    for col in (
        "#",
        "cpus",
        "mem GiB",
        "size",
        "load",
        "n",
        "err",
        "p50",
        "p99",
        "rps",
        "cold start",
        "peak mem",
        "saturated",
        "status",
    ):
        left = col in ("size", "load", "saturated", "status")
        table.add_column(col, justify="left" if left else "right")
    saturated: list[str] = []

    for r in rows:
        size = formatting.input_size(
            r.get("input_scale") or None, r.get("token_len") or None, r.get("output_len") or None
        )
        load = formatting.load(r.get("concurrency") or None, r.get("rate") or None)
        cold = (
            formatting.seconds(_float(r["cold_start_s"]))
            if r.get("cold_start_s") and r.get("cold_start_cell") == "1"
            else ""
        )
        status = r.get("status", "")
        flags = formatting.saturation(r.get(SATURATION))
        if flags:
            reason = r.get(SATURATION_REASON) or "no reason recorded"
            saturated.append(f"cell {r.get('cell_index', '')}: {flags} — {reason}")
        table.add_row(
            r.get("cell_index", ""),
            formatting.number(r.get("cpu_cores")),
            formatting.number(r.get("mem_cap_gb")),
            size,
            load,
            r.get("n", ""),
            r.get("errors", ""),
            _with_interval(r, "p50"),
            _with_interval(r, "p99"),
            formatting.rate(_float(r.get("throughput_rps")), unit=""),
            cold,
            formatting.size(_float(r.get("peak_mem_bytes"))),
            f"[yellow]{flags}[/]" if flags else "",
            status if status == CellStatus.OK else f"[red]{status}[/]",
        )
    with contextlib.suppress(OSError, ValueError):
        console.print(table)
        if any("p99_lo_s" in r for r in rows):
            console.print(
                "[dim]p50, p99: [95% interval]; – a side the cell's requests cannot bound "
                "(needs N: the requests a bounded one needs)[/]",
                highlight=False,
            )
        for line in saturated:  # a saturated cell's latency is not the target's: say why, in full
            console.print(f"[yellow]saturated[/] {_escape(line)}", highlight=False)


def _capacity_table(console: Any, rows: list[dict[str, str]]) -> None:
    """capacity.csv (a capacity search's answer), one row per resource configuration and input size."""
    from rich.table import Table

    if not rows:
        return
    table = Table(title="capacity (the most load that meets the SLO)", show_lines=False)
    for col in formatting.CAPACITY_HEADERS:
        table.add_column(col, justify="left" if col in ("size", "SLO", "at max load", "") else "right")
    for r in rows:
        table.add_row(*formatting.capacity_cells(r))
    with contextlib.suppress(OSError, ValueError):
        console.print(table)
