"""The plan: a preset expanded into the cells of a sweep.

A cell is one (resource config, input size, shared prompt prefix, output length, load level, repetition);
the output length (`[input] output_lens`, generative models) is None when the preset gives none, and the
shared prefix (`[input] shared_prefix_tokens`, prompts only) is None for inputs that are not prompts. Cells are ordered so that all cells
of one resource config and repetition are adjacent: the sweep starts ONE container per such group and
reuses it across the group's input sizes and load levels, so a container's cold start is measured once
(in the group's first cell) and the later cells of the group measure a warm server.

Resource configs: `pairing = "grid"` is every cpus × memory_gb combination; `pairing = "zip"` pairs them
in order (AC-Prof pairs n CPUs with 2n GB), a single value being used for every pair. GPU counts always
multiply.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

from tui_profiler.config.errors import PresetError
from tui_profiler.config.model import Preset


@dataclass(frozen=True, slots=True)
class Cell:
    index: int
    cpus: float | None  # None: not capped
    memory_gb: float | None  # GiB; None: not capped
    gpus: int
    input_scale: float | None  # image inputs
    token_len: int | None  # token inputs
    concurrency: int | None  # closed loop
    rate: float | None  # open loop, requests per second
    repeat_idx: int
    container_group: int  # cells of one container group share one container (one cold start); `container_idx`
    output_len: int | None = None  # generative: tokens asked for (None: the server's default)
    shared_prefix_tokens: int | None = None  # prompts: tokens every request of the cell shares at its start
    requests: int | None = (
        None  # timed requests, when a search asks for more than the preset's (sweep.search)
    )

    def as_dict(self) -> dict[str, Any]:
        """The cell as a dict (meta.json's plan, `CellStarted`); `requests` only when a search set it, so
        the plans of sessions written before it compare equal on a resume."""
        data = asdict(self)
        if data["requests"] is None:
            del data["requests"]
        return data

    def resource_key(self) -> tuple[float | None, float | None, int, int]:
        return (self.cpus, self.memory_gb, self.gpus, self.repeat_idx)


def resource_configs(preset: Preset) -> list[tuple[float | None, float | None, int]]:
    res = preset.resources
    if res.pairing == "zip":
        n = max(len(res.cpus), len(res.memory_gb))
        cpus = res.cpus * n if len(res.cpus) == 1 else res.cpus
        mems = res.memory_gb * n if len(res.memory_gb) == 1 else res.memory_gb
        pairs = list(zip(cpus, mems, strict=True))
    else:
        pairs = list(itertools.product(res.cpus, res.memory_gb))
    return [(c, m, g) for g in res.gpus for (c, m) in pairs]


def build_plan(preset: Preset) -> list[Cell]:
    """Every cell of the sweep, in run order: repetition, resource config (one container), input size,
    shared prompt prefix, output length, load level. A plan with no cell is a PresetError that says which axis is empty."""
    inp, load = preset.input, preset.load
    if not inp.sized_by_plan:  # request bodies, or text sent as written: one size, the inputs' own
        sizes: list[tuple[float | None, int | None]] = [(None, None)]
    elif inp.sized_by_tokens:
        sizes = [(None, t) for t in inp.token_lens]
    else:
        sizes = [(s, None) for s in inp.scales]
    if load.mode == "open":
        levels: list[tuple[int | None, float | None]] = [(None, r) for r in load.rates]
    else:
        levels = [(c, None) for c in load.concurrency]
    output_lens: list[int | None] = list(inp.output_lens) or [None]
    prefixes: list[int | None] = list(inp.shared_prefix_tokens) if inp.sized_by_tokens else [None]
    configs = resource_configs(preset)
    empty = [
        (name, value, why)
        for name, value, why in (
            ("input.token_lens" if inp.sized_by_tokens else "input.scales", sizes, "no input sizes"),
            ("load.rates" if load.mode == "open" else "load.concurrency", load.levels, "no load levels"),
            ("resources", [c[:2] for c in configs], "no resource configs"),
        )
        if not value
    ]
    if empty:
        name, value, why = empty[0]
        raise PresetError(preset.source, name, value, f"{why}: the plan has 0 cells (give at least one)")
    cells: list[Cell] = []
    container_group = 0
    for rep in range(preset.repetitions):
        for cpus, mem, gpus in configs:
            for (scale, tokens), prefix, out, (conc, rate) in itertools.product(
                sizes, prefixes, output_lens, levels
            ):
                cells.append(
                    Cell(
                        len(cells),
                        cpus,
                        mem,
                        gpus,
                        scale,
                        tokens,
                        conc,
                        rate,
                        rep,
                        container_group,
                        out,
                        prefix,
                    )
                )
            container_group += 1
    return cells
