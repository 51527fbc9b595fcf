"""`tui-profiler plot SESSION_DIR --out FILE`: the AC-Prof-style figure and cold-start breakdown."""

from __future__ import annotations

import sys

from tui_profiler.cli import main
from tui_profiler.testing import synthetic


def test_plot_writes_png_and_svg(tmp_path, capsys):
    session = synthetic.write_session(tmp_path / "output")
    png = tmp_path / "fig.png"
    assert main(["plot", str(session), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "fig.svg"
    assert main(["plot", str(session), "--out", str(svg), "--percentile", "p99"]) == 0
    text = svg.read_text()
    for label in ("CPU0.5+Mem1", "CPU1+Mem2", "CPU2+Mem4", "cold start by phase", "server_boot"):
        assert label in text
    assert main(["plot", str(session)]) == 0  # default: SESSION_DIR/figure.png
    assert (session / "figure.png").exists()


def test_plot_errors_are_one_line(tmp_path, capsys, monkeypatch):
    session = synthetic.write_session(tmp_path / "output")
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert "not a session folder" in capsys.readouterr().err
    assert main(["plot", str(session), "--out", str(tmp_path / "fig.jpg")]) == 2
    assert "--out: fig.jpg — a .png or .svg" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the optional extra missing
    assert main(["plot", str(session), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'tui-profiler[plot]'" in err
