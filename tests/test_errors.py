"""Exit codes and the one-line user errors, declared once in `tui_profiler.errors`.

The exit codes are a contract (README and docs/sessions.md list them); every one-line user error is a
`ProfilerError` that names its exit code; the command line prints one that reaches its top level as one line
and exits with that code. No Docker.
"""

from __future__ import annotations

import argparse

import pytest

from tui_profiler.errors import ExitCode, ProfilerError


def test_the_exit_codes_are_todays() -> None:
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0,
        "CELL_FAILED": 1,
        "USAGE": 2,
        "INTERRUPTED": 130,
    }


def test_the_fleet_groups_exit_codes_alias_the_commands() -> None:
    from tui_profiler.fleet import group_doc

    assert (group_doc.EXIT_OK, group_doc.EXIT_BAD_DOC, group_doc.EXIT_STOPPED) == (
        ExitCode.OK,
        ExitCode.USAGE,
        ExitCode.INTERRUPTED,
    )
    assert group_doc.EXIT_TARGET_GONE not in set(ExitCode)


def _user_errors() -> list[type[Exception]]:
    from tui_profiler.analysis.importers import DataFormatError
    from tui_profiler.bench.client import BenchUnavailable
    from tui_profiler.commands.plot import PlotError
    from tui_profiler.config import PresetError
    from tui_profiler.fleet.hosts import HostUnreachable
    from tui_profiler.fleet.transfer import ImageTransferError
    from tui_profiler.images import ImageBuildError
    from tui_profiler.load.sources import InputsTooLarge
    from tui_profiler.runtime import RuntimeUnavailable

    return [
        PresetError,
        RuntimeUnavailable,
        ImageBuildError,
        HostUnreachable,
        ImageTransferError,
        InputsTooLarge,
        DataFormatError,
        PlotError,
        BenchUnavailable,
    ]


def test_every_one_line_user_error_is_a_profiler_error() -> None:
    for cls in _user_errors():
        assert issubclass(cls, ProfilerError), cls
        assert isinstance(cls.exit_code, ExitCode), cls


def test_the_builtins_they_were_stay_their_bases() -> None:
    """Callers that catch ValueError or RuntimeError still catch them."""
    from tui_profiler.config import PresetError
    from tui_profiler.fleet.hosts import HostUnreachable
    from tui_profiler.runtime import RuntimeUnavailable

    assert issubclass(PresetError, ValueError)
    assert issubclass(RuntimeUnavailable, RuntimeError) and issubclass(HostUnreachable, RuntimeError)


@pytest.mark.parametrize(
    ("error", "code"),
    [("HostUnreachable", ExitCode.USAGE), ("ImageTransferError", ExitCode.CELL_FAILED)],
)
def test_the_command_line_prints_an_uncaught_one_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: str, code: ExitCode
) -> None:
    import tui_profiler.commands.plot as plot_command
    from tui_profiler import cli
    from tui_profiler.fleet import hosts, transfer

    cls = getattr(hosts, error, None) or getattr(transfer, error)

    def fails(args: argparse.Namespace) -> int:
        raise cls("box1: not reachable (connection refused)\nsecond line")

    monkeypatch.setattr(plot_command, "_run", fails)
    assert cli.main(["plot", "some-session"]) == code
    err = capsys.readouterr().err
    assert err == "tui-profiler plot: box1: not reachable (connection refused)\n"
