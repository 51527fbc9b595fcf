"""The exit codes of `tui-profiler` and the one family of one-line user errors, declared once.

`ExitCode` values are a contract (scripts and CI test them): 0 all went well; 1 some cell (or a check, a
build, a benchmark) failed, and what was measured is kept; 2 a bad preset, argument or environment, before
anything ran; 130 interrupted (a session can be resumed).

`ProfilerError` is the base of every error a user must fix and that is said in one line (a preset field, a
missing engine, an image that cannot be built or sent, a file that is not latency data, ...). Each class
says which exit code it ends the command with; the command line's top level prints the message alone (no
traceback) and exits with it. Nothing here imports the rest of the package.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """How a `tui-profiler` command ends (its process exit status)."""

    OK = 0
    CELL_FAILED = 1  # some cell failed (the session is written), or a check, a build or a benchmark failed
    USAGE = 2  # a bad preset or argument, or nothing to run it on: nothing was measured
    INTERRUPTED = 130  # stopped by a signal (128 + SIGINT); the session can be resumed


class ProfilerError(Exception):
    """A problem the user must fix, said in one line (the message names the file, field or host and what
    to do). `exit_code`: what a command that stops on it exits with."""

    exit_code: ClassVar[ExitCode] = ExitCode.USAGE

    def one_line(self) -> str:
        """The message's first line (the class name when it has none)."""
        text = str(self).strip()
        return text.splitlines()[0] if text else type(self).__name__
