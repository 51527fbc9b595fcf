"""The measuring side of a fleet's container group: `python -m tui_profiler.sweep.measure`, next to its target.

On a fleet host the local profiler starts the target through that host's engine, then this module in a
container of the measuring image, in the target's network namespace and with the host's cgroup tree
mounted read-only. It reads its container group (the preset, the cells still to run, the target it
adopts) from `TUI_PROFILER_GROUP`, runs those cells exactly as a one-host run does (the same group and
cell code, the `adopted` runtime), and writes every event as one JSON line on stdout; the local side
decodes them, fills in the host and passes them on to its consumers (the session writer, the views). It
writes no file. Exit codes: 0 the group ran (cells may have failed: that is data), 3 the target died and
the remaining cells need a fresh one, 2 a bad group document, 130 stopped (SIGTERM).

`--facts` prints this host's facts (`tui_profiler.host.host_facts()`) as one JSON object instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import TextIO

from tui_profiler.events import Event, RequestDone, ResourceSample, event_to_json
from tui_profiler.fleet.group_doc import (
    EXIT_BAD_DOC,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_TARGET_GONE,
    GROUP_ENV,
    GroupDoc,
)
from tui_profiler.plan import Cell

# High-rate events are written in batches at most this old: the live view stays live, the pipe is not
# written once per request.
FLUSH_EVERY_S = 0.1


class _LineWriter:
    """Events to JSON lines on a text stream, flushed at once for rare events, in batches for frequent."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._last_flush = time.perf_counter()

    def __call__(self, event: Event) -> None:
        self.out.write(event_to_json(event) + "\n")
        now = time.perf_counter()
        if not isinstance(event, RequestDone | ResourceSample) or now - self._last_flush >= FLUSH_EVERY_S:
            self.out.flush()
            self._last_flush = now

    def flush(self) -> None:
        self.out.flush()


async def measure_group(doc: GroupDoc, out: TextIO) -> int:
    from tui_profiler.config import preset_from_dict
    from tui_profiler.runtime.adopted import AdoptedRuntime, AdoptedTarget, TargetGone
    from tui_profiler.sweep.runner import SweepRunner

    preset = preset_from_dict(doc.preset, "<fleet group>", check_host=False)
    cells = [Cell(**c) for c in doc.cells]
    runtime = AdoptedRuntime(AdoptedTarget.from_dict(doc.target))
    runner = SweepRunner(preset, runtime=runtime)
    runner.host_name, runner.host_class = doc.host, doc.host_class
    writer = _LineWriter(out)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, runner.request_stop)
    try:
        await runner.run_container_group(cells, writer, doc.session_id)
    except TargetGone:
        return EXIT_TARGET_GONE
    finally:
        writer.flush()
    return EXIT_STOPPED if runner.stop_requested else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--facts" in args:
        from tui_profiler.host import host_facts

        print(json.dumps(host_facts(), default=str), flush=True)
        return EXIT_OK
    text = os.environ.get(GROUP_ENV, "")
    try:
        doc = GroupDoc.from_json(text)
    except (ValueError, TypeError) as exc:
        print(f"tui-profiler measure: {GROUP_ENV}: not a container group ({exc})", file=sys.stderr)
        return EXIT_BAD_DOC
    from tui_profiler.load.client import run  # uvloop when installed, as `tui-profiler run` does

    return run(measure_group(doc, sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
