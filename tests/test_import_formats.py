"""Importers: AC-Prof wide and long files, our session folder (requests.csv / cells.csv), format errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.test_store import AC_PROF_LONG
from tui_profiler.analysis.fit import build_cells, fit_paths
from tui_profiler.analysis.importers import DataFormatError, detect_format, fit_rows, read_path

# requests.csv columns: the AC-Prof long columns first (as test_store pins them), then ours.
LONG = AC_PROF_LONG
OURS = [
    "cell_index",
    "input_scale",
    "pixels",
    "concurrency",
    "rate",
    "http_status",
    "decode_ms",
    "preprocess_ms",
    "infer_ms",
    "encode_ms",
    "server_total_ms",
    "overhead_ms",
    "bytes_sent",
    "bytes_received",
    "t_send_s",
    "t_recv_s",
    "cpus_enforced",
    "mem_enforced",
]


def test_acprof_wide_vgg11(reference_data):
    df = read_path(reference_data / "vgg11.csv")
    assert len(df) == 20 * 6
    assert set(df["model"]) == {"vgg11"}
    configs = df.groupby(["gpu_mode", "cpu_cores", "mem_cap_gb"]).size()
    assert configs.loc[("on", 8.0, 16.0)] == 20
    assert configs.loc[("off", 1.0, 2.0)] == 20
    assert sorted(df.loc[df["gpu_mode"] == "off", "cpu_cores"].unique()) == [1, 2, 3, 4, 6]
    assert df["pixels"].min() == 496 and df["pixels"].max() == 201600
    assert df["token_len"].isna().all()
    first = df[(df["cpu_cores"] == 4) & (df["pixels"] == 496)]["latency_s"].item()
    assert first == pytest.approx(0.0773)


def test_acprof_long_minilm(reference_data):
    path = reference_data / "all-MiniLM-L6-v2_cpu_result.csv"
    raw = pd.read_csv(path)
    df = read_path(path)
    assert len(df) == len(raw)
    assert df["warmup"].sum() == (raw["warmup"] == 1).sum() > 0
    rows = fit_rows(df)
    assert len(rows) == ((raw["warmup"] == 0) & (raw["status"] == "ok")).sum()
    assert sorted(rows["token_len"].unique()) == [16, 32, 64, 128, 256, 384, 512]
    assert rows["pixels"].isna().all()
    cells, has_requests = build_cells(rows, "p99")
    assert has_requests
    one = raw[(raw.warmup == 0) & (raw.cpu_cores == 4) & (raw.mem_cap_gb == 8) & (raw.token_len == 256)]
    got = cells[(cells.cpu_cores == 4) & (cells.mem_cap_gb == 8) & (cells["size"] == 256)]["y"].item()
    assert got == pytest.approx(np.percentile(one["latency_s"], 99))


def _write_session(folder, rng):
    """A small session folder in our own format: warm-up rows, one failed request, two CPU configs."""
    folder.mkdir()
    rows = []
    t = 0
    for ci, (cpus, mem) in enumerate([(1.0, 2.0), (2.0, 4.0), (4.0, 4.0)]):
        for scale, pixels in ((0.5, 12544), (1.0, 50176), (1.5, 112896), (2.0, 200704)):
            for i in range(6):
                warm = i < 2
                lat = (0.01 + 4e-7 * pixels / cpus) * (1 + rng.normal(0, 0.01))
                failed = (ci, scale, i) == (1, 1.0, 5)
                t += 1
                rows.append(
                    {
                        "timestamp_ms": 1_700_000_000_000 + t,
                        "model_name": "resnet18",
                        "cpu_cores": cpus,
                        "gpu_mode": "off",
                        "mem_cap_gb": mem,
                        "batch_size": 1,
                        "token_len": "",
                        "repeat_idx": i,
                        "warmup": int(warm),
                        "latency_s": 99.0 if (warm or failed) else lat,
                        "cold_start_s": 2.5,
                        "status": "error" if failed else "ok",
                        "error": "HTTP 500" if failed else "",
                        "cell_index": ci * 4,
                        "input_scale": scale,
                        "pixels": pixels,
                        "concurrency": 1,
                        "rate": "",
                        "http_status": 500 if failed else 200,
                        "decode_ms": 1.0,
                        "preprocess_ms": "",
                        "infer_ms": lat * 1000,
                        "encode_ms": 0.1,
                        "server_total_ms": lat * 1000 - 1,
                        "overhead_ms": 1.0,
                        "bytes_sent": 4 * pixels * 3,
                        "bytes_received": 80,
                        "t_send_s": t * 0.1,
                        "t_recv_s": t * 0.1 + lat,
                        "cpus_enforced": 1,
                        "mem_enforced": 1,
                    }
                )
    pd.DataFrame(rows, columns=LONG + OURS).to_csv(folder / "requests.csv", index=False)
    (folder / "meta.json").write_text(json.dumps({"preset": {"name": "resnet18-smoke"}, "model": "resnet18"}))
    return pd.DataFrame(rows)


def test_our_session_folder(tmp_path):
    folder = tmp_path / "20260101-000000-resnet18"
    raw = _write_session(folder, np.random.default_rng(0))
    df = read_path(folder)
    assert len(df) == len(raw)
    rows = fit_rows(df)
    assert len(rows) == len(raw) - (raw["warmup"] == 1).sum() - (raw["status"] == "error").sum()
    assert rows["latency_s"].max() < 1.0  # the 99 s warm-up / failed rows never reach a fit
    assert set(rows["pixels"]) == {12544, 50176, 112896, 200704}
    report = fit_paths([folder], split="leave-config-out")
    (g,) = report.groups
    assert g.key["model"] == "resnet18" and g.size_column == "pixels"
    assert g.test["mape_pct"] < 10


def test_our_cells_csv(tmp_path):
    rows = []
    for i, (cpus, pixels) in enumerate([(c, p) for c in (1.0, 2.0, 4.0) for p in (1e4, 5e4, 1e5, 2e5)]):
        mean = 0.01 + 4e-7 * pixels / cpus
        rows.append(
            {
                "cell_index": i,
                "model_name": "resnet18",
                "cpu_cores": cpus,
                "mem_cap_gb": 4.0,
                "gpu_mode": "off",
                "pixels": pixels,
                "token_len": "",
                "concurrency": 1,
                "n": 50,
                "mean_s": mean,
                "p50_s": mean * 0.98,
                "p99_s": mean * 1.3,
                "throughput_rps": 1 / mean,
                "status": "ok" if i != 3 else "oom",
            }
        )
    path = tmp_path / "cells.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    assert detect_format(pd.read_csv(path)) == "cells"
    df = read_path(path)
    assert len(fit_rows(df)) == len(rows) - 1  # the OOM cell is excluded
    cells, has_requests = build_cells(fit_rows(df), "p99")
    assert not has_requests
    assert cells["y"].iloc[0] == pytest.approx(rows[0]["p99_s"])


def test_unknown_format_is_one_line_naming_the_file(reference_data, tmp_path):
    with pytest.raises(DataFormatError) as err:
        read_path(reference_data / "all-MiniLM-L6-v2_static_meta.csv")
    msg = str(err.value)
    assert "\n" not in msg and "all-MiniLM-L6-v2_static_meta.csv: unknown format" in msg
    with pytest.raises(DataFormatError, match="no such file"):
        read_path(tmp_path / "missing.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match=r"no requests\.csv or cells\.csv"):
        read_path(tmp_path / "empty")


def test_wide_with_token_column(tmp_path):
    path = tmp_path / "bert.csv"
    path.write_text("Tokens,CPU2+Mem4,GPU+CPU4+Mem8\n16,0.02,0.005\n64,0.04,0.006\n")
    df = read_path(path)
    assert df["token_len"].notna().all() and df["pixels"].isna().all()
    assert set(zip(df["gpu_mode"], df["cpu_cores"], strict=True)) == {("off", 2.0), ("on", 4.0)}


def test_wide_with_its_own_size_name_and_cpu_only_configs(tmp_path):
    path = tmp_path / "tts.csv"
    path.write_text("text_chars,CPU4,CPU2,CPU1\n10,0.1,0.2,0.4\n20,0.11,0.21,0.42\n")
    df = read_path(path)
    assert df["text_chars"].tolist() == [10, 20, 10, 20, 10, 20]
    assert df["mem_cap_gb"].isna().all() and sorted(df["cpu_cores"].unique()) == [1, 2, 4]
    cells, _ = build_cells(fit_rows(df), "latency_s")
    assert set(cells["size_column"]) == {"text_chars"}


def test_recommend_from_requests_uses_p99(tmp_path):
    from tui_profiler.analysis.recommend import recommend_paths

    folder = tmp_path / "session"
    _write_session(folder, np.random.default_rng(1))
    rec = recommend_paths([str(folder)], slo_s=0.1, size=112896, size_column="pixels", host_cpus=4)
    assert rec.target == "p99"
    assert not any("MEAN" in c for c in rec.caveats)
    # 0.01 + 4e-7 * 112896 / cpus <= 0.1 from about 0.5 CPUs; measured 1..4, so the cheapest in range is 1
    assert rec.best is not None and rec.best.cpu_cores == 1.0 and not rec.best.extrapolated
