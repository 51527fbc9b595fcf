"""Terminal rendering of a FitReport for `tui-profiler fit`: the summary and a residual-vs-input plot per
group. It lives with the command, not in `analysis`, because the engine never imports plotting."""

from __future__ import annotations

import re

from tui_profiler.analysis.fit import FitReport, GroupFit

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def residual_plot(group: GroupFit, width: int = 72, height: int = 14, color: bool = False) -> str:
    """A plotext scatter of held-out relative residuals (%) against the input size, as text."""
    import plotext as plt  # lazy: `fit --no-plot` and the other commands do not pay for it

    if not group.residuals:
        return ""
    xs = [x for x, _ in group.residuals]
    ys = [y for _, y in group.residuals]
    plt.clf()
    plt.plotsize(width, height)
    plt.theme("clear")
    plt.scatter(xs, ys, marker="dot")
    plt.hline(0.0)
    if len({round(x, 9) for x in xs}) > 1 and min(xs) > 0 and max(xs) / min(xs) > 50:
        plt.xscale("log")
    held = "held-out" if group.test["n"] else "training"
    plt.title(f"{group.label}: {held} residual % vs {group.size_column or 'input'}")
    plt.xlabel(group.size_column or "input")
    text = plt.build()
    plt.clf()
    return text if color else _ANSI.sub("", text)


def render(report: FitReport, plots: bool = True, width: int = 72, color: bool = False) -> str:
    parts = ["\n".join(report.summary_lines())]
    if plots:
        for g in report.groups:
            plot = residual_plot(g, width=width, color=color)
            if plot:
                parts.append(plot)
    return "\n".join(parts)
