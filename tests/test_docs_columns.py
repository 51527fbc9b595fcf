"""docs/sessions.md names every column the session files have, in code spans, per file, and every status a
cell and a session end with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tui_profiler.session.schema import (
    CAPACITY_COLUMNS,
    CELL_COLUMNS,
    REPETITION_COLUMNS,
    REQUEST_COLUMNS,
    SAMPLE_COLUMNS,
    CellStatus,
    RequestStatus,
    SessionStatus,
)

SESSIONS = Path(__file__).resolve().parent.parent / "docs" / "sessions.md"


def _section(heading: str) -> str:
    """The text under the `### <heading>…` heading of docs/sessions.md, up to the next heading."""
    text = SESSIONS.read_text(encoding="utf-8")
    m = re.search(rf"^### `{re.escape(heading)}`.*?$(.*?)(?=^#)", text, re.S | re.M)
    assert m, f"docs/sessions.md has no '### `{heading}`' heading"
    return m.group(1)


def _code_words(text: str) -> set[str]:
    return {w for span in re.findall(r"`([^`]*)`", text) for w in re.findall(r"\w+", span)}


@pytest.mark.parametrize(
    ("file", "columns"),
    [
        ("requests.csv", REQUEST_COLUMNS),
        ("cells.csv", CELL_COLUMNS),
        ("samples.csv", SAMPLE_COLUMNS),
        ("repetitions.csv", REPETITION_COLUMNS),
        ("capacity.csv", CAPACITY_COLUMNS),
    ],
)
def test_every_column_is_documented(file: str, columns: list[str] | tuple[str, ...]) -> None:
    documented = _code_words(_section(file))
    assert [c for c in columns if c not in documented] == []


@pytest.mark.parametrize(
    ("heading", "statuses"),
    [("Cell statuses", CellStatus), ("Request statuses", RequestStatus), ("Session statuses", SessionStatus)],
)
def test_every_status_is_documented(
    heading: str, statuses: type[CellStatus] | type[RequestStatus] | type[SessionStatus]
) -> None:
    """Each status is a row of its table: `| `status` | meaning |`."""
    text = SESSIONS.read_text(encoding="utf-8")
    m = re.search(rf"^### {heading}\s*$(.*?)(?=^#)", text, re.S | re.M)
    assert m, f"docs/sessions.md has no '### {heading}' heading"
    rows = set(re.findall(r"^\| `(\w+)` \| \S", m.group(1), re.M))
    assert [s.value for s in statuses if s.value not in rows] == []
    assert rows - {s.value for s in statuses} == set()
