"""`tui-profiler report --html` opened in a real browser: Debian's headless Chromium (scripts/test.sh
installs it) loads the file from disk with the network off, and the test checks that

- the page raised no error: a copy of the report gets, first thing in its <head>, a listener that records
  every uncaught error, rejected promise and console.error into an attribute of <html>, read back from the
  DOM Chromium dumps (and Chromium's own log has no 'Uncaught');
- every plot rendered: each plot's box holds plotly's SVG with at least one trace drawn (the dumped DOM),
  and the screenshot has drawn pixels inside every plot's box (its bounding box, recorded by the same
  script): more than 1% of the box is not background, in at least 3 distinct colours;
- the screenshots are kept: under pytest's tmp dir and copied to output/test-artifacts/ (gitignored).

An image session compared with a slower one (the comparison's plots and table) and a generative session
(TTFT / TPOT) are reported.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tui_profiler import cli
from tui_profiler.testing import synthetic

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (scripts/test.sh installs it)"
)
ARTIFACTS = Path(__file__).resolve().parents[1] / "output" / "test-artifacts"
WIDTH = 1400

PROBE = """<script>
(function(){
  var errors = [];
  function note(m){ errors.push(String(m)); document.documentElement.setAttribute('data-errors', JSON.stringify(errors)); }
  window.addEventListener('error', function(e){ note('error: ' + (e.message || e.type)); }, true);
  window.addEventListener('unhandledrejection', function(e){ note('rejection: ' + e.reason); });
  var original = console.error;
  console.error = function(){ note('console.error: ' + Array.prototype.join.call(arguments, ' ')); original.apply(console, arguments); };
  window.addEventListener('load', function(){
    setTimeout(function(){
      var boxes = Array.prototype.map.call(document.querySelectorAll('.tp-plot .plotly-graph-div'), function(d){
        var r = d.getBoundingClientRect();
        return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height];
      });
      document.documentElement.setAttribute('data-boxes', JSON.stringify(boxes));
      document.documentElement.setAttribute('data-height', String(document.documentElement.scrollHeight));
    }, 500);
  });
})();
</script>"""


def _chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
        "--no-first-run", "--hide-scrollbars", "--force-device-scale-factor=1",
        "--virtual-time-budget=15000", "--enable-logging=stderr", "--v=0",
        "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # no network: every fetch would fail
        *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _attr(dom: str, name: str) -> str:
    match = re.search(rf'<html[^>]*\s{name}="([^"]*)"', dom)
    return "" if match is None else match.group(1).replace("&quot;", '"')


def _plot_segments(dom: str) -> list[str]:
    starts = [m.start() for m in re.finditer(r'<div class="tp-plot"', dom)]
    return [dom[a:b] for a, b in zip(starts, [*starts[1:], len(dom)], strict=True)]


def _check_in_browser(report: Path, name: str) -> int:
    """Open `report` in headless Chromium; assert no errors and every plot drawn. Returns the plots."""
    page = report.with_name(f"{report.stem}-probed.html")
    text = report.read_text(encoding="utf-8")
    page.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    expected = text.count("class='tp-plot'")
    assert expected > 0

    dumped = _chromium(f"--window-size={WIDTH},1000", "--dump-dom", page.as_uri())
    dom = dumped.stdout
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    assert "Uncaught" not in dumped.stderr, dumped.stderr[-2000:]
    assert _attr(dom, "data-errors") in ("", "[]"), _attr(dom, "data-errors")
    segments = _plot_segments(dom)
    assert len(segments) == expected
    for i, segment in enumerate(segments):
        assert 'class="main-svg"' in segment, f"plot {i + 1}: no SVG"
        traces = re.findall(r'<g class="trace[ "]', segment)
        drawn = re.findall(r'<path[^>]* d="M[^"]+"', segment)
        assert traces and drawn, f"plot {i + 1}: no trace drawn"
    boxes = json.loads(_attr(dom, "data-boxes") or "[]")
    height = int(_attr(dom, "data-height") or 4000)
    assert len(boxes) == expected

    shot = report.with_name(f"{name}.png")
    taken = _chromium(f"--window-size={WIDTH},{height}", f"--screenshot={shot}", page.as_uri())
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)
    import matplotlib.image

    pixels = (matplotlib.image.imread(str(shot))[..., :3] * 255).astype(np.uint8)
    for i, (x, y, w, h) in enumerate(boxes):
        box = pixels[int(y) : int(y + h), int(x) : int(x + w)]
        assert box.size, f"plot {i + 1}: box {x, y, w, h} outside the {pixels.shape} screenshot"
        inked = (box < 235).any(axis=2)  # not the white background
        colours = {tuple(c) for c in box[inked][:: max(1, int(inked.sum()) // 5000)]}
        assert inked.mean() > 0.01 and len(colours) >= 3, f"plot {i + 1}: {inked.mean():.3%} drawn"
    return expected


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    return {
        "A": synthetic.write_session(root, "A", n_requests=120, seed=1),
        "slow": synthetic.write_session(
            root, "slow", n_requests=120, seed=2, slowdown={0: 1.2, 4: 1.2, 8: 1.2}
        ),
        "gen": synthetic.write_generative_session(root, "gen", n_requests=40),
    }


def test_image_sessions_compared_report_renders(sessions: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "compare-report.html"
    md = tmp_path / "compare-report.md"
    argv = ["report", str(sessions["A"]), str(sessions["slow"]), "--html", str(out), "--md", str(md)]
    assert cli.main([*argv, "--slo-p99", "0.2"]) == 0
    text = out.read_text(encoding="utf-8")
    from plotly.offline import get_plotlyjs

    rest = text.replace(get_plotlyjs(), "")  # self-contained: plotly.js is in the file, nothing is fetched
    assert len(rest) < len(text) and not re.search(r"<script[^>]*\ssrc=|https?://", rest)
    for section in ("What was run, and where", "Comparison", "Cold start", "Resource peaks", "Fitted model"):
        assert section in text
    assert "slower" in text
    plots = _check_in_browser(out, "report-image-compare")
    assert plots >= 7  # p50, p99, throughput, 2 cold starts, 2 resources, the comparison
    summary = md.read_text(encoding="utf-8")
    assert "## Comparison" in summary and "(compare-report_files/latency.png)" in summary
    assert (tmp_path / "compare-report_files" / "latency.png").stat().st_size > 10_000


def test_generative_report_renders(sessions: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "generative-report.html"
    assert cli.main(["report", str(sessions["gen"]), "--html", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "TTFT p50" in text and "TPOT p50" in text
    assert _check_in_browser(out, "report-generative") >= 5
