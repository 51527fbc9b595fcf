"""Generative targets of `fit`: TTFT modelled from prompt tokens and CPUs, TPOT from context tokens
(prompt + output) and CPUs, on synthetic sessions whose true laws are known; the recommendation under
TTFT / TPOT SLOs; the command line's flags and one-line errors."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest

from tui_profiler.analysis.fit import CONTEXT_SIZE, PROMPT_SIZE, fit_frame, fit_paths, recommendation_query
from tui_profiler.analysis.importers import fit_rows, read_paths
from tui_profiler.analysis.recommend import Objective, recommend_slos
from tui_profiler.commands import fit as fit_command

CPUS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
PROMPTS = (32, 64, 128, 256, 512, 768, 1024, 1536, 2048)
OUTPUTS = (16, 256)
BOS = 1  # the server counts one token more than the prompt length asked: prompt_tokens is the size


def g(c, f, knee):
    return (1 - f) + f / np.minimum(c, knee)


def law_ttft(prompt_tokens, cpus):
    """Prefill: a fixed cost, work linear in the prompt, 90% parallel up to 4 CPUs."""
    return 0.005 + (0.002 + 2e-4 * prompt_tokens) * g(cpus, 0.9, 4.0)


def law_tpot(context_tokens, cpus):
    """Decode: per token a fixed cost and attention over the context, 90% parallel, no knee."""
    return 0.001 + (0.004 + 2e-5 * context_tokens) * g(cpus, 0.9, math.inf)


def write_session(folder, *, noise=0.01, n=40, seed=0):
    """A session folder whose requests.csv follows the laws, with multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    cell = 0
    for cpus in CPUS:
        for prompt in PROMPTS:
            for output in OUTPUTS:
                ttft = law_ttft(prompt + BOS, cpus) * np.exp(rng.normal(0, noise, n))
                tpot = law_tpot(prompt + BOS + output, cpus) * np.exp(rng.normal(0, noise, n))
                for k in range(n):
                    rows.append(
                        {
                            "timestamp_ms": 1735689600000 + len(rows),
                            "model_name": "decoder_small",
                            "cpu_cores": cpus,
                            "gpu_mode": "off",
                            "mem_cap_gb": 2 * cpus,
                            "token_len": prompt,
                            "repeat_idx": 0,
                            "warmup": False,
                            "latency_s": ttft[k] + tpot[k] * (output - 1),
                            "status": "ok",
                            "cell_index": cell,
                            "concurrency": 1,
                            "ttft_s": ttft[k],
                            "tpot_s": tpot[k],
                            "prompt_tokens": prompt + BOS,
                            "output_tokens": output,
                            "output_tokens_source": "usage",
                            "output_len": output,
                        }
                    )
                cell += 1
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "requests.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return write_session(tmp_path_factory.mktemp("llm") / "20250101-000000-llm")


def test_ttft_is_fitted_from_prompt_tokens_with_the_true_form(session):
    report = fit_paths([session], target="ttft", split="leave-config-out")
    (group,) = report.groups
    assert group.size_column == PROMPT_SIZE
    assert group.ranges[PROMPT_SIZE] == (32 + BOS, 2048 + BOS)  # counted tokens, not the length asked
    assert group.fitted.form == "work-parallel", group.cv_scores
    p = group.fitted.params
    assert p["knee_cpus"] == 4.0
    assert p["parallel_fraction_f"] == pytest.approx(0.9, abs=0.05)
    assert p["w1_per_size"] == pytest.approx(2e-4, rel=0.1)  # seconds per prompt token (at 1 CPU)
    # two output lengths per prompt length are two cells: TTFT does not depend on them
    assert group.n_cells == len(CPUS) * len(PROMPTS) * len(OUTPUTS)


def test_tpot_is_fitted_from_context_tokens(session):
    report = fit_paths([session], target="tpot", split="leave-config-out")
    (group,) = report.groups
    assert group.size_column == CONTEXT_SIZE
    assert group.ranges[CONTEXT_SIZE] == (32 + BOS + 16, 2048 + BOS + 256)
    assert group.fitted.form == "work-parallel", group.cv_scores
    p = group.fitted.params
    assert p["knee_cpus"] == math.inf
    assert p["w1_per_size"] == pytest.approx(2e-5, rel=0.1)  # seconds per context token (at 1 CPU)
    point = {"cpu_cores": 2.5, "token_len": 1000, "output_len": 200}  # context from prompt + output
    (pred,) = report.predict(pd.DataFrame([point]))["predicted_tpot_s"]
    assert pred == pytest.approx(law_tpot(1200, 2.5), rel=0.03)


def test_the_automatic_validation_choice_applies_to_token_targets(session):
    beyond = recommendation_query(4096, PROMPT_SIZE)  # beyond the largest prompt measured
    report = fit_frame(read_paths([session]), target="ttft", queries=[beyond])
    assert report.groups[0].selection.validated_by == "extrapolate-input"
    inside = fit_frame(read_paths([session]), target="ttft", queries=[recommendation_query(500, PROMPT_SIZE)])
    assert inside.groups[0].selection.validated_by == "leave-config-out"


@pytest.mark.parametrize(("ttft_cpus", "tpot_cpus", "best"), [(3.0, 2.0, 3.0), (2.0, 2.5, 2.5)])
def test_recommendation_meets_every_slo_at_the_cheapest_config(session, ttft_cpus, tpot_cpus, best):
    """Each SLO is set 5% above the true law at some CPU count; the binding one decides."""
    tidy = read_paths([session])
    prompt, output = 1000.0, 200.0
    slo_ttft = float(law_ttft(prompt, ttft_cpus)) * 1.05
    slo_tpot = float(law_tpot(prompt + output, tpot_cpus)) * 1.05
    objectives = [
        Objective(fit_frame(tidy, target="ttft_p99"), slo_ttft, prompt),
        Objective(fit_frame(tidy, target="tpot_p99"), slo_tpot, prompt + output),
    ]
    rec = recommend_slos(objectives, fit_rows(tidy), host_cpus=8)
    assert rec.best is not None
    assert rec.best.cpu_cores == best
    assert rec.best.mem_cap_gb == 2 * best  # the data pairs 2 GB per CPU
    assert rec.best.meets == {"p99 TTFT": True, "p99 TPOT": True}
    cheaper = [c for c in rec.candidates if c.cost < rec.best.cost]
    assert cheaper and not any(c.meets_slo for c in cheaper)
    impossible = recommend_slos(
        [objectives[0], Objective(objectives[1].report, 1e-6, 1200.0)], fit_rows(tidy)
    )
    assert impossible.best is None
    assert "no candidate" in "\n".join(impossible.summary_lines())


def test_a_session_without_streamed_answers_says_so(tmp_path):
    frame = pd.DataFrame(
        {"cpu_cores": [1.0, 2.0], "latency_s": [0.2, 0.1], "warmup": False, "token_len": 64, "repeat_idx": 0}
    )
    frame.to_csv(tmp_path / "requests.csv", index=False)
    with pytest.raises(ValueError, match="target: no cells carry ttft_s"):
        fit_paths([tmp_path / "requests.csv"], target="ttft")


def _run(session, *args, capsys):
    parser = argparse.ArgumentParser(prog="tui-profiler")
    fit_command.add_parser(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["fit", str(session), "--no-plot", *map(str, args)])
    code = ns.func(ns)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_target_and_slo_flags(session, capsys):
    slo_ttft = float(law_ttft(1000, 3.0)) * 1.05
    slo_tpot = float(law_tpot(1200, 2.0)) * 1.05
    code, out, _ = _run(
        session,
        "--target",
        "ttft",
        "--predict",
        "cpu_cores=2,token_len=500",
        "--recommend",
        "--slo-ttft",
        slo_ttft,
        "--slo-tpot",
        slo_tpot,
        "--token-len",
        1000,
        "--output-len",
        200,
        capsys=capsys,
    )
    assert code == 0
    assert "target ttft" in out and "predicted_ttft_s" in out
    assert "cheapest: gpu=off, c=1, 3 CPUs, 6 GB" in out


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--recommend", "--slo-ttft", "0.1"], "--token-len:"),
        (["--recommend", "--slo-tpot", "0.1", "--token-len", "100"], "--output-len:"),
        (["--slo-ttft", "0.1", "--token-len", "100"], "--slo-ttft: only used with --recommend"),
        (["--recommend", "--slo-ttft", "-1", "--token-len", "100"], "--slo-ttft:"),
        (["--target", "tpot", "--predict", "cpu_cores=2,token_len=100"], "context_tokens: missing"),
    ],
)
def test_cli_bad_token_flags_are_one_line_naming_the_field(session, args, field, capsys):
    code, _, err = _run(session, *args, capsys=capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and field in lines[0], lines
