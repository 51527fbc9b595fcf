"""Replaying a recorded event stream into a fresh session writer, for the sweep and fleet tests."""

from __future__ import annotations

from pathlib import Path


def assert_replay_reproduces(events: list[object], session: Path, tmp_path: Path) -> None:
    """The recorded stream, through its JSON-line form, into a fresh writer: the same three CSVs, byte for
    byte (the session writer is the only path from measurement to the files)."""
    from tui_profiler.events import event_from_json, event_to_json
    from tui_profiler.session.store import replay

    decoded = [event_from_json(event_to_json(e)) for e in events]  # type: ignore[arg-type]
    again = replay(decoded, tmp_path / "replayed")
    for name in ("cells.csv", "requests.csv", "samples.csv"):
        assert (again / name).read_bytes() == (session / name).read_bytes(), name
    assert (session / "requests.csv").stat().st_size > 1000  # a stream that measured something
