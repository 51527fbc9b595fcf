"""The plan: grid and zip pairing, GPUs, sizes, load levels and repetitions; one container group per
resource config and repetition, its cells adjacent."""

from __future__ import annotations

import itertools

import pytest

from tui_profiler.config import preset_from_dict
from tui_profiler.plan import build_plan, resource_configs


def preset(**sections: dict) -> object:
    d = {
        "model": "mobilenet_v3_small",
        "input": {"scales": [0.5, 1.0]},
        "resources": {"cpus": [0.5, 1], "memory_gb": [1, 2]},
        "load": {"concurrency": [1, 2]},
    }
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return preset_from_dict(d, "t.toml", check_host=False)


def test_grid_is_every_combination() -> None:
    p = preset(resources={"pairing": "grid"})
    assert resource_configs(p) == [(0.5, 1, 0), (0.5, 2, 0), (1, 1, 0), (1, 2, 0)]
    cells = build_plan(p)
    assert len(cells) == 4 * 2 * 2
    assert [c.index for c in cells] == list(range(len(cells)))


def test_zip_pairs_in_order_and_broadcasts_a_single_value() -> None:
    p = preset(resources={"pairing": "zip", "cpus": [1, 2, 4, 8], "memory_gb": [2, 4, 8, 16]})
    assert [(c, m) for c, m, _ in resource_configs(p)] == [(1, 2), (2, 4), (4, 8), (8, 16)]
    p = preset(resources={"pairing": "zip", "cpus": [0.5, 2], "memory_gb": [3]})
    assert [(c, m) for c, m, _ in resource_configs(p)] == [(0.5, 3), (2, 3)]


def test_gpus_multiply_and_uncapped_is_none() -> None:
    p = preset(resources={"cpus": [1], "memory_gb": [2], "gpus": [0, 1]})
    assert resource_configs(p) == [(1, 2, 0), (1, 2, 1)]
    p = preset_from_dict({"model": "m"}, "t.toml", check_host=False)
    cells = build_plan(p)
    assert len(cells) == 1 and cells[0].cpus is None and cells[0].memory_gb is None
    assert cells[0].input_scale == 1.0 and cells[0].concurrency == 1


def test_groups_are_contiguous_and_share_one_resource_config() -> None:
    p = preset(repetitions=2, resources={"pairing": "grid"})
    cells = build_plan(p)
    assert len(cells) == 2 * 4 * 2 * 2
    seen = []
    for g, members in itertools.groupby(cells, key=lambda c: c.container_group):
        members = list(members)
        assert g not in seen, "a container group is split"
        seen.append(g)
        assert len({c.resource_key() for c in members}) == 1
        assert len(members) == 2 * 2  # sizes × load levels on one container
        assert [(c.input_scale, c.concurrency) for c in members] == list(
            itertools.product([0.5, 1.0], [1, 2])
        )
    assert len(seen) == 8  # 4 configs × 2 repetitions: 8 containers, 8 cold starts
    assert [c.repeat_idx for c in cells[:16]] == [0] * 16 and [c.repeat_idx for c in cells[16:]] == [1] * 16


def test_tokens_and_open_loop() -> None:
    p = preset_from_dict(
        {
            "model": "text_encoder",
            "input": {"kind": "tokens", "token_lens": [16, 64]},
            "load": {"mode": "open", "rates": [0.5, 4]},
        },
        "t.toml",
        check_host=False,
    )
    cells = build_plan(p)
    assert [(c.token_len, c.rate) for c in cells] == [(16, 0.5), (16, 4.0), (64, 0.5), (64, 4.0)]
    assert all(c.input_scale is None and c.concurrency is None for c in cells)


def test_cell_as_dict_has_the_interface_fields() -> None:
    d = build_plan(preset())[0].as_dict()
    for key in (
        "index",
        "cpus",
        "memory_gb",
        "gpus",
        "input_scale",
        "token_len",
        "concurrency",
        "rate",
        "repeat_idx",
    ):
        assert key in d


@pytest.mark.parametrize("name", ["smoke", "fcn_resnet50"])
def test_builtin_plans(name: str) -> None:
    from tui_profiler.config import load_preset

    cells = build_plan(load_preset(name))
    assert cells and len({c.container_group for c in cells}) == len(resource_configs(load_preset(name)))
