"""The package's one Server-Timing parser (W3C Server Timing): `name;dur=1.5;desc="x"` metrics, comma-separated,
in one or several header (or trailer) values, durations in milliseconds. The model server under `servers/`
keeps its own writer and reader: it ships without this package."""

from __future__ import annotations


def _split_unquoted(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double-quoted strings (a `desc="a, b"` must not split a metric)."""
    if '"' not in text:
        return text.split(sep)
    parts, cur, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            cur.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_server_timing(values: str | list[str] | None) -> dict[str, float]:
    """`name;dur=1.5;desc="x", other;dur=2` (one or several header values) -> {name: milliseconds}.
    Metrics without a usable `dur` are skipped; the first of a repeated name wins; names are lower-cased.
    Never raises: a malformed entry is ignored."""
    if not values:
        return {}
    if isinstance(values, str):
        values = [values]
    out: dict[str, float] = {}
    for value in values:
        for metric in _split_unquoted(value, ","):
            params = _split_unquoted(metric, ";")
            name = params[0].strip().lower()
            if not name or name in out:
                continue
            for param in params[1:]:
                key, eq, val = param.partition("=")
                if eq and key.strip().lower() == "dur":
                    try:
                        dur = float(val.strip().strip('"'))
                    except ValueError:
                        break
                    if dur == dur and dur >= 0 and dur != float("inf"):  # no NaN / negative / inf
                        out[name] = dur
                    break
    return out
