"""Latency-model fitting: known laws recovered, selection by held-out error, group isolation, splits,
prediction warnings, recommendation, and the reference-data comparison with the log-linear method."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tui_profiler.analysis.fit import (
    FORMS,
    Query,
    build_cells,
    cv_scores,
    fit_frame,
    fit_paths,
    fit_selected,
    prediction_queries,
    recommendation_query,
    split_folds,
)
from tui_profiler.analysis.importers import TIDY_COLUMNS, fit_rows
from tui_profiler.analysis.recommend import recommend

# The AC-Prof grid: 20 input sizes (pixels), CPU configs paired with 2 GB per CPU.
SIZES = np.array(
    [
        496,
        2016,
        4512,
        8064,
        12560,
        18144,
        24640,
        31877,
        40752,
        49926,
        60550,
        72576,
        85072,
        98784,
        113280,
        128265,
        145520,
        163296,
        181792,
        201600,
    ],
    float,
)
CPUS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def law_work_parallel(s, c, t0=0.01, w0=0.02, w1=1.0e-6, f=0.8, knee=4.0):
    return t0 + (w0 + w1 * s) * ((1 - f) + f / np.minimum(c, knee))


def law_loglinear(s, c, a=-4.0, b=0.35, cc=-0.5):
    return np.exp(a + b * np.log(s) + cc * np.log(c))


def law_piecewise(s, c, t0=0.005, w0=0.01, w1=1.0e-6, w2=4.0e-7, bp=60550.0, f=0.9, knee=math.inf):
    work = w0 + w1 * np.minimum(s, bp) + w2 * np.maximum(s - bp, 0)
    return t0 + work * ((1 - f) + f / np.minimum(c, knee))


def synthetic(law, *, model="synth", noise=0.01, seed=0, cpus=CPUS, sizes=SIZES, gpu_mode="off", **params):
    """A tidy frame of per-cell means following `law`, with multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    s, c = np.meshgrid(sizes, np.asarray(cpus, float))
    s, c = s.ravel(), c.ravel()
    y = law(s, c, **params) * np.exp(rng.normal(0.0, noise, s.shape))
    df = pd.DataFrame(
        {
            "model": model,
            "task": "pixels",
            "gpu_mode": gpu_mode,
            "cpu_cores": c,
            "mem_cap_gb": 2 * c,
            "pixels": s,
            "latency_s": y,
            "warmup": False,
            "status": "ok",
            "row_kind": "aggregate",
            "source": "synthetic",
        }
    )
    for col in TIDY_COLUMNS:
        if col not in df:
            df[col] = np.nan
    return df[TIDY_COLUMNS]


def _cells(tidy):
    return build_cells(fit_rows(tidy), "latency_s")[0]


def _xy(cells):
    return cells["size"].to_numpy(), cells["cpu_cores"].to_numpy(), cells["y"].to_numpy()


def test_work_parallel_recovers_known_parameters():
    s, c, y = _xy(_cells(synthetic(law_work_parallel, noise=0.002)))
    p = FORMS["work-parallel"].fit(s, c, y).params
    assert p["knee_cpus"] == 4.0
    assert p["parallel_fraction_f"] == pytest.approx(0.8, abs=0.05)
    assert p["w1_per_size"] == pytest.approx(1.0e-6, rel=0.1)
    # t0 and w0 trade off a little against f; their CPU-free and CPU-bound sums are what the data fixes
    assert p["t0"] + p["w0"] * (1 - p["parallel_fraction_f"]) == pytest.approx(0.01 + 0.02 * 0.2, rel=0.15)


def test_loglinear_recovers_known_parameters():
    s, c, y = _xy(_cells(synthetic(law_loglinear, noise=0.01)))
    p = FORMS["loglinear"].fit(s, c, y).params
    assert p["a"] == pytest.approx(-4.0, abs=0.1)
    assert p["b_log_size"] == pytest.approx(0.35, abs=0.01)
    assert p["c_log_cpus"] == pytest.approx(-0.5, abs=0.01)


def test_piecewise_recovers_breakpoint_and_slopes():
    s, c, y = _xy(_cells(synthetic(law_piecewise, noise=0.002)))
    p = FORMS["piecewise-linear"].fit(s, c, y).params
    assert p["breakpoint"] == pytest.approx(60550.0, rel=0.15)
    assert p["w1_per_size_below_B"] / p["w2_per_size_above_B"] == pytest.approx(2.5, rel=0.2)
    assert p["parallel_fraction_f"] == pytest.approx(0.9, abs=0.05)


@pytest.mark.parametrize(
    ("law", "expected"),
    [(law_loglinear, "loglinear"), (law_work_parallel, "work-parallel"), (law_piecewise, "piecewise-linear")],
)
def test_selection_picks_the_true_form(law, expected):
    report = fit_frame(synthetic(law, noise=0.005, seed=3), split="leave-config-out")
    (g,) = report.groups
    assert g.fitted.form == expected, g.cv_scores
    # and the nested held-out error of the procedure is close to the noise level, not the training fit's
    assert g.test["mape_pct"] < 3.0


def test_groups_never_leak():
    small = {"sizes": SIZES[::2], "cpus": (1.0, 2.0, 4.0, 6.0)}
    a = synthetic(law_work_parallel, model="a", noise=0.003, seed=1, **small)
    b = synthetic(law_loglinear, model="b", noise=0.003, seed=2, **small)
    both = fit_frame(pd.concat([a, b], ignore_index=True))
    alone_a, alone_b = fit_frame(a).groups[0], fit_frame(b).groups[0]
    by_model = {g.key["model"]: g for g in both.groups}
    assert set(by_model) == {"a", "b"}
    for joint, alone in ((by_model["a"], alone_a), (by_model["b"], alone_b)):
        assert joint.fitted.form == alone.fitted.form
        assert joint.fitted.params == pytest.approx(alone.fitted.params)
        assert joint.test["mape_pct"] == pytest.approx(alone.test["mape_pct"])
        assert joint.n_cells == len(small["sizes"]) * len(small["cpus"])


def test_gpu_mode_is_its_own_group():
    off = synthetic(law_work_parallel, noise=0.003)
    on = synthetic(law_work_parallel, noise=0.003, gpu_mode="on", cpus=(8.0,), t0=0.001, w1=1e-8)
    report = fit_frame(pd.concat([off, on], ignore_index=True))
    assert sorted(g.key["gpu_mode"] for g in report.groups) == ["off", "on"]
    on_group = next(g for g in report.groups if g.key["gpu_mode"] == "on")
    assert on_group.test["n"] == 0  # one config: leave-config-out is impossible and says so
    assert any("no held-out test" in c for c in on_group.caveats)


def test_split_shapes():
    cells = _cells(synthetic(law_work_parallel))
    lco = split_folds(cells, "leave-config-out")
    assert len(lco) == len(CPUS)
    for tr, te in lco:
        assert cells["cpu_cores"].iloc[te].nunique() == 1
        assert not set(cells["cpu_cores"].iloc[te]) & set(cells["cpu_cores"].iloc[tr])
    ((tr, te),) = split_folds(cells, "extrapolate-input")
    assert cells["size"].iloc[tr].max() < cells["size"].iloc[te].min()
    assert cells["size"].iloc[te].nunique() == 5  # the largest quarter of 20 sizes
    rnd = split_folds(cells, "random")
    assert sorted(np.concatenate([te for _, te in rnd]).tolist()) == list(range(len(cells)))


def test_prediction_matches_law_and_warns_outside_range():
    report = fit_frame(synthetic(law_work_parallel, noise=0.002))
    pts = pd.DataFrame(
        {
            "cpu_cores": [3.0, 3.0, 16.0],
            "mem_cap_gb": [6.0, 6.0, 32.0],
            "gpu_mode": "off",
            "pixels": [40000.0, 400000.0, 40000.0],
        }
    )
    pred = report.predict(pts)
    truth = law_work_parallel(40000.0, 3.0)
    assert pred["predicted_latency_s"].iloc[0] == pytest.approx(truth, rel=0.03)
    assert pred["warning"].iloc[0] == ""
    assert "pixels=400000 outside trained" in pred["warning"].iloc[1]
    assert "cpu_cores=16 outside trained" in pred["warning"].iloc[2]
    with pytest.raises(ValueError, match=r"^gpu_mode: no fitted group"):
        report.predict(pts.assign(gpu_mode="on"))


def test_recommend_cheapest_meeting_slo():
    tidy = synthetic(law_work_parallel, noise=0.001)
    report = fit_frame(tidy)
    size = 100000.0
    slo = float(law_work_parallel(size, 2.5)) * 1.01  # met from 2.5 CPUs up (latency falls until the knee)
    rec = recommend(report, fit_rows(tidy), slo_s=slo, size=size, size_column="pixels", host_cpus=8)
    assert rec.best is not None
    assert rec.best.cpu_cores == 2.5
    assert rec.best.mem_cap_gb == 5.0  # the data pairs 2 GB per CPU
    assert rec.best.predicted_s <= slo
    assert any("MEAN" in c for c in rec.caveats)  # no per-request rows: the p99 caveat is stated
    # nothing meets an impossible SLO, and the answer says so instead of inventing one
    none = recommend(report, fit_rows(tidy), slo_s=1e-6, size=size, host_cpus=8)
    assert none.best is None
    assert "no candidate" in "\n".join(none.summary_lines())
    # a GPU priced at zero cost does not make a CPU-only data set recommend a GPU it never measured
    assert all(c.gpu_mode == "off" for c in none.candidates)


def law_concave(s, c):
    """Work growing as the square root of the input: within the measured range a hinge of two lines
    fits it as well as a power law, beyond it only the power law keeps bending the right way."""
    return 0.02 + 3e-3 * np.sqrt(s) * (0.3 + 0.7 / c)


def _rows(pixels, cpus=3.0):
    return pd.DataFrame({"cpu_cores": cpus, "gpu_mode": "off", "pixels": np.asarray(pixels, float)})


def test_extrapolating_prediction_selects_by_forward_validation():
    tidy = synthetic(law_concave, noise=0.01, seed=1)
    points = _rows([40000, 250000, 300000, 400000, 120000])
    report = fit_frame(tidy, queries=prediction_queries(points))
    (g,) = report.groups
    assert report.split == "auto"
    assert (g.selection.split, g.selection.validated_by, g.selection.requested) == (
        "extrapolate-input",
        "extrapolate-input",
        None,
    )
    why = "3 of 5 prediction rows lie beyond the largest trained input (pixels 201600)"
    assert g.selection.reason == why
    assert g.selection.line == f"form chosen by forward validation: {why}"
    assert f"  {g.selection.line}" in report.summary_lines()
    assert (g.selection.n_queries, g.selection.n_outside) == (5, 3)
    # the scores that chose the form are forward validation's, and so is the nested held-out test
    cells = _cells(tidy)
    assert g.cv_scores == pytest.approx(cv_scores(cells, "extrapolate-input"), nan_ok=True)
    assert g.fitted.form == fit_selected(cells, "extrapolate-input")[0].form
    assert g.split == "extrapolate-input"
    # on this known law the two validations disagree, and the forward-chosen form extrapolates better
    lco = fit_frame(tidy, split="leave-config-out", queries=prediction_queries(points)).groups[0]
    assert lco.fitted.form != g.fitted.form
    beyond = _rows([250000, 300000, 400000])
    truth = law_concave(beyond["pixels"].to_numpy(), 3.0)

    def err(gf):
        return np.mean(np.abs(gf.fitted.predict(beyond["pixels"].to_numpy(), np.full(3, 3.0)) / truth - 1))

    assert err(g) < err(lco)
    pred = report.predict(points)
    assert set(pred["form_chosen_by"]) == {"extrapolate-input"} and set(pred["form_chosen_because"]) == {why}


def test_in_range_prediction_keeps_the_default_split():
    tidy = synthetic(law_concave, noise=0.01, seed=1)
    (g,) = fit_frame(tidy, queries=prediction_queries(_rows([496, 40000, 201600]))).groups
    assert (g.selection.split, g.selection.validated_by, g.selection.requested) == (
        "leave-config-out",
        "leave-config-out",
        None,
    )
    assert g.selection.line == (
        "form chosen by leave-config-out validation: the default; "
        "all 3 prediction rows lie inside the trained input range (pixels 496..201600)"
    )
    assert g.cv_scores == pytest.approx(cv_scores(_cells(tidy), "leave-config-out"), nan_ok=True)
    # nothing asked: the default, and it says so
    (bare,) = fit_frame(tidy).groups
    assert bare.selection.split == "leave-config-out"
    assert bare.selection.reason == "the default; no prediction or recommendation asked of this group"
    # a query for another group does not move this one
    other = [Query("prediction row", {"model": "other", "gpu_mode": "off", "pixels": 9e6})]
    assert fit_frame(tidy, queries=other).groups[0].selection.split == "leave-config-out"


def test_explicit_split_is_honoured_and_stated():
    tidy = synthetic(law_concave, noise=0.01, seed=1)
    queries = prediction_queries(_rows([300000, 400000]))
    (g,) = fit_frame(tidy, split="leave-config-out", queries=queries).groups
    assert (g.selection.split, g.selection.requested) == ("leave-config-out", "leave-config-out")
    assert g.selection.reason == (
        "--split leave-config-out, as given; note all 2 prediction rows lie beyond the largest trained "
        "input (pixels 201600): without --split, forward validation would choose the form"
    )
    (r,) = fit_frame(tidy, split="random", queries=prediction_queries(_rows([1000]))).groups
    assert r.selection.line == "form chosen by random 5-fold validation: --split random, as given"


def test_forward_validation_impossible_falls_back_and_says_why():
    tidy = synthetic(law_concave, noise=0.01, seed=1, sizes=SIZES[[0, 9, 19]])
    (g,) = fit_frame(tidy, queries=prediction_queries(_rows([400000]))).groups
    assert g.selection.split == "leave-config-out"
    assert g.selection.reason == (
        "the default; the prediction row (pixels 400000) lies beyond the largest trained input "
        "(pixels 201600), but forward validation needs at least 4 distinct input sizes, this group has 3"
    )


def test_recommendation_beyond_the_trained_input_is_chosen_by_forward_validation():
    tidy = synthetic(law_concave, noise=0.01, seed=1)
    report = fit_frame(tidy, queries=[recommendation_query(300000.0, "pixels")])
    (g,) = report.groups
    assert g.selection.split == "extrapolate-input"
    assert g.selection.reason == (
        "the recommendation (pixels 300000) lies beyond the largest trained input (pixels 201600)"
    )
    rec = recommend(report, fit_rows(tidy), slo_s=1.0, size=300000.0, size_column="pixels", host_cpus=8)
    assert f"  {g.label}: {g.selection.line}" in rec.summary_lines()
    assert rec.to_dict()["form_selection"][g.label]["chosen_by"] == "extrapolate-input"


def test_reference_vgg11_beats_loglinear(reference_data):
    """The nested held-out error of the selected model vs the reference log-linear method, per split."""
    for split, margin in (("leave-config-out", 0.9), ("extrapolate-input", 0.6)):
        report = fit_paths([reference_data / "vgg11.csv"], split=split)
        cpu = next(g for g in report.groups if g.key["gpu_mode"] == "off")
        assert cpu.test["n"] > 0
        assert cpu.test["mape_pct"] < margin * cpu.test_by_form["loglinear"], (
            split,
            cpu.test,
            cpu.test_by_form,
        )


def test_engine_imports_no_plotting_or_textual():
    code = (
        "import sys, tui_profiler.analysis.fit, tui_profiler.analysis.recommend, tui_profiler.analysis.importers;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('plotext', 'textual', 'matplotlib')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
