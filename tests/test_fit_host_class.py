"""`fit` groups by host class (cells.csv `host_class`, written by a fleet session) unless `--pool-hosts`.

Two sessions written by the real SessionStore whose rows differ only in host_class and in the law they
follow: one model per class, each recovering its own law; one pooled model with `--pool-hosts`."""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tui_profiler.analysis.fit import fit_paths
from tui_profiler.cli import main
from tui_profiler.session.store import SessionStore

CPUS = (1.0, 2.0, 4.0, 8.0)
PIXELS = (10_000.0, 40_000.0, 90_000.0, 160_000.0, 250_000.0)
# latency = a * pixels^b * cpus^c, exactly: the log-linear form recovers it, so predictions are checkable
LAWS = {"xeon-6338": (2e-4, 0.5, -0.8), "epyc-7763": (6e-4, 0.6, -0.5)}


def law(host_class: str, cpus: float, pixels: float) -> float:
    a, b, c = LAWS[host_class]
    return float(a * pixels**b * cpus**c)


def _session(out: Path, host_class: str, with_requests: bool) -> Path:
    store = SessionStore.create(out, f"fit-{host_class}", {"preset": {"name": "hc", "model": "segnet"}})
    index = 0
    for cpus in CPUS:
        for pixels in PIXELS:
            y = law(host_class, cpus, pixels)
            if with_requests:  # requests.csv carries no host_class: fit takes it from the cell's row
                for repeat in range(3):
                    store.write_request(
                        {
                            "model_name": "segnet",
                            "cpu_cores": cpus,
                            "gpu_mode": "off",
                            "mem_cap_gb": 2 * cpus,
                            "repeat_idx": repeat,
                            "warmup": False,
                            "latency_s": y,
                            "status": "ok",
                            "cell_index": index,
                            "pixels": pixels,
                            "concurrency": 1,
                        }
                    )
            store.write_cell(
                {
                    "cell_index": index,
                    "container_idx": CPUS.index(cpus),
                    "host": f"box-{host_class}",
                    "host_class": host_class,
                    "model_name": "segnet",
                    "cpu_cores": cpus,
                    "mem_cap_gb": 2 * cpus,
                    "gpu_mode": "off",
                    "pixels": pixels,
                    "concurrency": 1,
                    "n": 3,
                    "errors": 0,
                    "mean_s": y,
                    "p50_s": y,
                    "p99_s": y,
                    "status": "ok",
                }
            )
            index += 1
    store.close()
    return store.dir


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("sessions")
    return [_session(out, "xeon-6338", with_requests=True), _session(out, "epyc-7763", with_requests=False)]


def test_one_model_per_host_class(sessions: list[Path]) -> None:
    report = fit_paths(sessions, split="leave-config-out")
    by_class = {g.key.get("host_class"): g for g in report.groups}
    assert sorted(by_class) == sorted(LAWS)  # requests.csv's session too: labelled through cells.csv
    for host_class, g in by_class.items():
        assert g.n_cells == len(CPUS) * len(PIXELS)
        assert f"host_class={host_class}" in g.label
        point = {"cpu_cores": 3.0, "pixels": 60_000.0, "gpu_mode": "off", "host_class": host_class}
        predicted = float(report.predict(pd.DataFrame([point]))["predicted_latency_s"][0])
        assert predicted == pytest.approx(law(host_class, 3.0, 60_000.0), rel=1e-3)


def test_pool_hosts_fits_one_model(sessions: list[Path]) -> None:
    report = fit_paths(sessions, split="leave-config-out", pool_hosts=True)
    (group,) = report.groups
    assert "host_class" not in group.key
    assert group.n_cells == 2 * len(CPUS) * len(PIXELS)
    assert any("pooled over host classes epyc-7763, xeon-6338" in c for c in group.caveats)
    # every row of both sessions: xeon's 3 requests per cell, epyc's cells.csv rows (not taken for a
    # summary of xeon's requests at the same configuration)
    assert group.n_rows == len(CPUS) * len(PIXELS) * (3 + 1)


def _fit(*args: object) -> subprocess.CompletedProcess[str]:
    """`tui-profiler fit ARGS --no-plot` in this process (test_fit_cli runs it as a subprocess): its exit
    code and what it printed."""
    argv = ["fit", *map(str, args), "--no-plot"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def test_cli_predict_and_recommend_by_host_class(sessions: list[Path]) -> None:
    point = "cpu_cores=3,pixels=60000,gpu_mode=off"
    ok = _fit(*sessions, "--predict", point, "--host-class", "epyc-7763")
    assert ok.returncode == 0, ok.stderr
    assert f"{law('epyc-7763', 3.0, 60_000.0):.4g}" in ok.stdout
    assert "2 group(s)" in ok.stdout

    ambiguous = _fit(*sessions, "--predict", point)
    assert ambiguous.returncode == 2
    assert ambiguous.stderr.startswith("tui-profiler fit: host_class:")

    unknown = _fit(*sessions, "--predict", point, "--host-class", "graviton")
    assert unknown.returncode == 2 and "host_class: no fitted group for host_class=graviton" in unknown.stderr

    pooled = _fit(*sessions, "--predict", point, "--pool-hosts")
    assert pooled.returncode == 0, pooled.stderr
    assert "1 group(s)" in pooled.stdout

    both = _fit(*sessions, "--pool-hosts", "--host-class", "epyc-7763")
    assert both.returncode == 2 and "--host-class: not used with --pool-hosts" in both.stderr

    rec = _fit(
        *sessions, "--recommend", "--slo-p99", "0.05", "--pixels", "60000", "--host-class", "xeon-6338"
    )
    assert rec.returncode == 0, rec.stderr
    assert "host_class=xeon-6338" in rec.stdout
    rec_ambiguous = _fit(*sessions, "--recommend", "--slo-p99", "0.05", "--pixels", "60000")
    assert rec_ambiguous.returncode == 2 and "host_class: several host classes fitted" in rec_ambiguous.stderr
