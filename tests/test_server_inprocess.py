"""The model server in-process: a real torchvision model behind the real aiohttp app (aiohttp's test
server on a local port), every encoding, bad inputs, Server-Timing, the decode+encode overhead ratio,
thread settings, and the catalog."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from servers import model_server as ms
from servers.catalog import CATALOG, ModelLoadError, build_model, get_entry, hash_tokenize, input_shape
from tests.conftest import needs
from tui_profiler.load.server_timing import parse_server_timing

REPO = Path(__file__).resolve().parent.parent
RAW = "application/octet-stream"


def raw_headers(shape: tuple[int, ...], dtype: str = "float32") -> dict[str, str]:
    return {"Content-Type": RAW, "X-Tensor-Shape": ",".join(map(str, shape)), "X-Tensor-Dtype": dtype}


def loaded_state(name: str, **kw) -> ms.ModelState:  # type: ignore[no-untyped-def]
    state = ms.ModelState(
        entry=get_entry(name),
        weights="random",
        device_request="cpu",
        hub_repo=kw.get("hub_repo"),
        hub_model=kw.get("hub_model"),
        warmup_runs=1,
    )
    state.load()
    return state


@pytest.fixture(scope="module")
@needs("server")
def mobilenet() -> ms.ModelState:
    return loaded_state("mobilenet_v3_small")


@pytest.fixture(scope="module")
@needs("server")
def text_encoder() -> ms.ModelState:
    return loaded_state("text_encoder")


async def client_for(state: ms.ModelState, max_body_bytes: int = 64 * 1024 * 1024) -> TestClient:
    client = TestClient(TestServer(ms.make_app(state, max_body_bytes=max_body_bytes), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.mark.server
async def test_healthz_503_while_loading_then_200_with_timeline() -> None:
    state = ms.ModelState(
        entry=get_entry("mobilenet_v3_small"),
        weights="random",
        device_request="cpu",
        hub_repo=None,
        hub_model=None,
        warmup_runs=1,
    )
    client = await client_for(state)
    try:
        r = await client.get("/healthz")
        assert r.status == 503 and (await r.json())["status"] == "loading"
        r = await client.post("/predict", data=b"x", headers=raw_headers((1,)))
        assert r.status == 503
        ms.start_loading(state, exit_on_error=False)
        deadline = time.perf_counter() + 120
        while True:
            r = await client.get("/healthz")
            if r.status == 200 or time.perf_counter() > deadline:
                break
            assert r.status == 503
            await asyncio.sleep(0.05)
        assert r.status == 200
        doc = await r.json()
        t = doc["timeline"]
        assert (
            t["process_start"]
            <= t["server_start"]
            <= t["imports_done"]
            <= t["model_loaded"]
            <= t["warmup_done"]
        )
        assert t["warmup_done"] <= time.time()
        rt = doc["runtime"]
        assert rt["device"] == "cpu" and rt["threads"] >= 1 and rt["torch"]
        assert {"interop_threads", "cgroup_cpu_quota", "threads_setting"} <= rt.keys()
        info = await (await client.get("/info")).json()
        assert info["model"] == "mobilenet_v3_small" and info["input_kind"] == "image"
        assert info["default_size"] == [1, 3, 224, 224]
        assert 2_000_000 < info["params"] < 3_000_000 and info["weight_bytes"] >= 4 * info["params"]
    finally:
        await client.close()


async def test_raw_tensor_and_server_timing_within_wall_time(mobilenet: ms.ModelState) -> None:
    client = await client_for(mobilenet)
    try:
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
        for _ in range(3):
            t0 = time.perf_counter()
            r = await client.post("/predict", data=x.tobytes(), headers=raw_headers(x.shape))
            body = await r.json()
            wall_ms = (time.perf_counter() - t0) * 1000
            assert r.status == 200, body
            parts = parse_server_timing(r.headers["Server-Timing"])
            assert {"decode", "preprocess", "infer", "encode"} <= parts.keys()
            assert all(v >= 0 for v in parts.values())
            assert sum(parts.values()) <= wall_ms
            assert body["output_shape"] == [1, 1000] and len(body["top5"]) == 5
        # uint8 tensors are scaled and normalised like images
        u8 = np.random.default_rng(1).integers(0, 255, (1, 3, 64, 80), dtype=np.uint8)
        r = await client.post("/predict", data=u8.tobytes(), headers=raw_headers(u8.shape, "uint8"))
        assert r.status == 200 and (await r.json())["input_shape"] == [1, 3, 64, 80]
    finally:
        await client.close()


def test_top5_probabilities_match_torch_softmax(mobilenet: ms.ModelState) -> None:
    import torch

    logits = torch.randn(1, 1000, generator=torch.Generator().manual_seed(3))
    ref = torch.topk(logits[0].softmax(0), 5)
    got = mobilenet.encode(logits, torch.zeros(1, 3, 224, 224))["top5"]
    assert [g["class"] for g in got] == ref.indices.tolist()
    assert [g["p"] for g in got] == [round(v, 5) for v in ref.values.tolist()]


def test_remembered_raw_layout_still_checks_each_body(mobilenet: ms.ModelState) -> None:
    """`decode` remembers a checked layout per (shape, dtype, body size): the same headers with another
    body size, or a bad header, are still refused; the same good request decodes to the same tensor."""
    x = np.arange(3 * 32 * 48, dtype=np.float32).reshape(1, 3, 32, 48)
    headers = {"x-tensor-shape": "1,3,32,48", "x-tensor-dtype": "float32"}
    for _ in range(2):
        t, needs_scaling = mobilenet.decode(x.tobytes(), RAW, headers)
        assert (
            tuple(t.shape) == (1, 3, 32, 48)
            and not needs_scaling
            and float(t[0, 2, 31, 47]) == x[0, 2, 31, 47]
        )
    for body, hdrs, status in (
        (x.tobytes()[:-4], headers, 400),
        (x.tobytes(), {**headers, "x-tensor-dtype": "float64"}, 422),
        (x.tobytes(), {**headers, "x-tensor-shape": "1,3,32,x"}, 400),
    ):
        with pytest.raises(ms.BadInput) as err:
            mobilenet.decode(body, RAW, hdrs)
        assert err.value.status == status


@pytest.mark.parametrize("fmt,ctype", [("JPEG", "image/jpeg"), ("PNG", "image/png")])
async def test_encoded_image(mobilenet: ms.ModelState, fmt: str, ctype: str) -> None:
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, fmt)
    client = await client_for(mobilenet)
    try:
        r = await client.post("/predict", data=buf.getvalue(), headers={"Content-Type": ctype})
        body = await r.json()
        assert r.status == 200, body
        assert body["input_shape"] == [1, 3, 120, 160]
        assert "decode" in parse_server_timing(r.headers["Server-Timing"])
    finally:
        await client.close()


async def test_json_tensor_as_the_reference_scripts_send_it(mobilenet: ms.ModelState) -> None:
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64), dtype=np.float32)
    client = await client_for(mobilenet)
    try:
        r = await client.post(
            "/predict",
            data=json.dumps({"tensor": x.tolist()}),
            headers={"Content-Type": "application/json", "Connection": "close"},
        )
        body = await r.json()
        assert r.status == 200, body
        assert body["input_shape"] == [1, 3, 64, 64]
    finally:
        await client.close()


async def test_text_encoder_encodings_and_cost_scales_with_tokens(text_encoder: ms.ModelState) -> None:
    """Cost is CPU time the kernel counts for this process (server and client both live in it), per
    request, not the server's infer latency: on a shared host a preempted request's wall time measures
    the neighbours.

    The ratio of CPU seconds per request, 384 / 8 tokens, was 6.5-9.2 over 12 runs on a shared 2-core VM;
    asserted > 3, a margin for other machines."""
    client = await client_for(text_encoder)
    try:
        info = await (await client.get("/info")).json()
        assert info["input_kind"] == "tokens" and info["default_size"] == [1, 128]
        assert info["vocab_size"] == 30522 and 20_000_000 < info["params"] < 25_000_000  # MiniLM-L6-sized

        async def cpu_s_per_request(t: int) -> float:
            ids = np.random.default_rng(t).integers(1000, 30000, (1, t), dtype=np.int64)
            before = time.process_time()
            for _ in range(3):
                r = await client.post("/predict", data=ids.tobytes(), headers=raw_headers(ids.shape, "int64"))
                assert r.status == 200, await r.text()
                assert (await r.json())["output_shape"] == [1, 384]
                assert parse_server_timing(r.headers["Server-Timing"])["infer"] > 0
            return (time.process_time() - before) / 3

        short, long = await cpu_s_per_request(8), await cpu_s_per_request(384)
        assert long > 3 * short, (short, long)

        r = await client.post("/predict", json={"tokens": [101, 2023, 2003, 102]})
        assert r.status == 200 and (await r.json())["input_shape"] == [1, 4]
        r = await client.post("/predict", json={"text": "profile the encoder, please"})
        assert (await r.json())["input_shape"] == [1, len(hash_tokenize("profile the encoder, please"))]
        # bad token inputs
        r = await client.post("/predict", json={"tokens": [1, 2, 40000]})
        assert r.status == 422 and "token ids" in (await r.json())["error"]
        r = await client.post(
            "/predict", data=np.zeros((1, 600), np.int64).tobytes(), headers=raw_headers((1, 600), "int64")
        )
        assert r.status == 422 and "at most 512 tokens" in (await r.json())["error"]
        r = await client.post("/predict", data=b"\xff\xd8", headers={"Content-Type": "image/jpeg"})
        assert r.status == 415
    finally:
        await client.close()


BAD_INPUTS = [
    # (what, body, headers, status, words the error must name)
    ("malformed JSON", b"{not json", {"Content-Type": "application/json"}, 400, "malformed JSON"),
    ("JSON without tensor", b'{"x": 1}', {"Content-Type": "application/json"}, 400, "'tensor'"),
    ("ragged JSON", b'{"tensor": [[1, 2], [3]]}', {"Content-Type": "application/json"}, 400, "rectangular"),
    (
        "size vs body",
        b"\0" * (3 * 224 * 224 * 4 - 4),
        raw_headers((1, 3, 224, 224)),
        400,
        "bytes but the body has",
    ),
    ("wrong shape", b"\0" * (224 * 224 * 3 * 4), raw_headers((1, 224, 224, 3)), 422, "N,3,H,W"),
    ("wrong dtype", b"\0" * (3 * 32 * 32 * 8), raw_headers((1, 3, 32, 32), "int64"), 422, "dtype int64"),
    ("unknown dtype", b"\0" * 16, raw_headers((1, 4), "complex64"), 422, "X-Tensor-Dtype"),
    (
        "no shape header",
        b"\0" * 16,
        {"Content-Type": RAW, "X-Tensor-Dtype": "float32"},
        400,
        "X-Tensor-Shape",
    ),
    (
        "bad shape header",
        b"\0" * 16,
        {"Content-Type": RAW, "X-Tensor-Shape": "1,x", "X-Tensor-Dtype": "float32"},
        400,
        "integers",
    ),
    ("not an image", b"not a png", {"Content-Type": "image/png"}, 400, "not a decodable image"),
    ("content type", b"hello", {"Content-Type": "text/plain"}, 415, "text/plain"),
    ("empty body", b"", raw_headers((1, 3, 224, 224)), 400, "empty body"),
]


async def test_bad_inputs_get_4xx_json_naming_the_problem_and_server_keeps_serving(
    mobilenet: ms.ModelState,
) -> None:
    client = await client_for(mobilenet, max_body_bytes=1024 * 1024)
    try:
        for what, body, headers, status, words in BAD_INPUTS:
            r = await client.post("/predict", data=body, headers=headers)
            doc = await r.json()
            assert r.status == status, (what, doc)
            assert words in doc["error"], (what, doc)
        # over the body limit: 413, with and without a Content-Length
        big = np.zeros((1, 3, 512, 512), np.float32)
        r = await client.post("/predict", data=big.tobytes(), headers=raw_headers(big.shape))
        assert r.status == 413 and "limit" in (await r.json())["error"]

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(3):
                yield b"\0" * (512 * 1024)

        r = await client.post("/predict", data=chunks(), headers=raw_headers((1, 3, 256, 512)))
        assert r.status == 413 and "limit" in (await r.json())["error"]
        r = await client.get("/nowhere")
        assert r.status == 404 and "/nowhere" in (await r.json())["error"]
        r = await client.get("/predict")
        assert r.status == 405 and "POST" in (await r.json())["error"]
        # ... and a good request still works
        x = np.zeros((1, 3, 64, 64), np.float32)
        r = await client.post("/predict", data=x.tobytes(), headers=raw_headers(x.shape))
        assert r.status == 200
    finally:
        await client.close()


async def test_concurrent_requests_queue_fifo_and_none_is_dropped(mobilenet: ms.ModelState) -> None:
    client = await client_for(mobilenet)
    try:
        x = np.random.default_rng(4).standard_normal((1, 3, 160, 160), dtype=np.float32)
        rs = await asyncio.gather(
            *[client.post("/predict", data=x.tobytes(), headers=raw_headers(x.shape)) for _ in range(8)]
        )
        assert [r.status for r in rs] == [200] * 8
        timings = [parse_server_timing(r.headers["Server-Timing"]) for r in rs]
        # one worker: all but the first waited for the ones before them
        queued = sorted(t["queue"] for t in timings)
        assert queued[-1] > min(t["infer"] for t in timings)
    finally:
        await client.close()


@pytest.mark.server
def test_raw_decode_plus_encode_is_under_5_percent_of_inference() -> None:
    """The raw path's own cost, as CPU time the kernel counts for this process (all threads, torch's pool
    too), not as a ratio of the server's wall-clock timings: a preempted decode would read as slow.

    (decode + encode) / inference CPU time for ResNet-50 at 224x224 was 0.00005-0.0008 over 12 runs on a
    shared 2-core VM; asserted < 0.05, a margin for other machines."""
    state = loaded_state("resnet50")
    x = np.random.default_rng(5).standard_normal((1, 3, 224, 224), dtype=np.float32)
    body, headers = x.tobytes(), {k.lower(): v for k, v in raw_headers(x.shape).items()}

    def cpu_s(fn, n: int):  # type: ignore[no-untyped-def]
        before = time.process_time()
        for _ in range(n):
            out = fn()
        return (time.process_time() - before) / n, out

    with state.torch.inference_mode():
        decode, (tensor, scale_to_unit) = cpu_s(lambda: state.decode(body, RAW, headers), 20)
        tensor = state.preprocess(tensor, scale_to_unit)
        infer, out = cpu_s(lambda: state.infer(tensor), 3)
        encode, _ = cpu_s(lambda: state.encode(out, tensor), 20)
    assert (decode + encode) / infer < 0.05, (decode, encode, infer)


def test_threads_setting() -> None:
    assert ms.resolve_threads("3")[0] == 3
    assert ms.resolve_threads("host")[0] is None
    n, facts = ms.resolve_threads("auto")
    quota = facts["cgroup_cpu_quota"]
    expected = -(-quota // 1) if quota else facts["cpu_affinity"]
    assert n == max(1, min(int(expected), facts["cpu_affinity"]))
    for bad in ("zero", "0", "-2"):
        with pytest.raises(SystemExit, match="TUI_PROFILER_THREADS"):
            ms.resolve_threads(bad)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cgroup_quota_reader(tmp_path: Path, version: str) -> None:
    """A fake /proc + /sys/fs/cgroup tree (the container test reads the real one under --cpus)."""
    proc = tmp_path / "cgroup"
    if version == "v2":
        root = tmp_path / "sys"
        (root / "a" / "b").mkdir(parents=True)
        (root / "a" / "cpu.max").write_text("150000 100000\n")
        (root / "a" / "b" / "cpu.max").write_text("max 100000\n")
        proc.write_text("0::/a/b\n")
        assert ms.cgroup_cpu_quota(str(proc), v2_root=str(root))[0] == pytest.approx(1.5)
    else:
        mount = tmp_path / "cpu"
        (mount / "docker" / "x").mkdir(parents=True)
        (mount / "docker" / "x" / "cpu.cfs_quota_us").write_text("50000\n")
        (mount / "docker" / "x" / "cpu.cfs_period_us").write_text("100000\n")
        (mount / "cpu.cfs_quota_us").write_text("-1\n")
        (mount / "cpu.cfs_period_us").write_text("100000\n")
        proc.write_text("4:cpu,cpuacct:/docker/x\n3:memory:/docker/x\n")
        assert ms.cgroup_cpu_quota(str(proc), v1_mounts=(str(mount),))[0] == pytest.approx(0.5)
        (mount / "docker" / "x" / "cpu.cfs_quota_us").write_text("-1\n")
        assert ms.cgroup_cpu_quota(str(proc), v1_mounts=(str(mount),))[0] is None


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("name", [n for n in CATALOG if n != "hub"])
def test_every_catalog_model_builds_and_answers(name: str) -> None:
    import torch

    entry = get_entry(name)
    model = build_model(entry, "random")
    shape = (
        input_shape(entry, scale=0.5)
        if entry.input_kind == "image" and entry.task != "detection"
        else entry.warmup_size
    )
    state = ms.ModelState(
        entry=entry,
        weights="random",
        device_request="cpu",
        hub_repo=None,
        hub_model=None,
        warmup_runs=0,
        model=model,
        device=torch.device("cpu"),
        torch=torch,
    )
    state.mean = torch.tensor(ms.IMAGE_MEAN).view(1, 3, 1, 1)
    state.std = torch.tensor(ms.IMAGE_STD).view(1, 3, 1, 1)
    from servers.catalog import example_input_array

    x = example_input_array(shape, entry.input_kind)
    summary, timings = state.handle(
        x.tobytes(),
        RAW,
        {"x-tensor-shape": ",".join(map(str, shape)), "x-tensor-dtype": x.dtype.name},
        time.perf_counter(),
    )
    assert summary["input_shape"] == list(shape) and timings["infer"] > 0
    assert "output_shape" in summary


@pytest.mark.server
def test_hub_entry_builds_pytorch_vision_offline() -> None:
    entry = get_entry("hub", input_kind="image", input_size=[1, 3, 96, 96])
    model = build_model(entry, "random", hub_repo="pytorch/vision:v0.29.1", hub_model="mobilenet_v3_small")
    assert sum(p.numel() for p in model.parameters()) > 2_000_000
    with pytest.raises(ModelLoadError, match="--hub-repo"):
        build_model(entry, "random")
    with pytest.raises(ModelLoadError, match="no such model"):
        build_model(entry, "random", hub_repo="pytorch/vision", hub_model="not_a_model")


@pytest.mark.server
def test_pretrained_fails_fast_and_clearly_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelLoadError, match="no published weights"):
        build_model(get_entry("text_encoder"), "pretrained")
    # torchvision weights: downloaded when a network is there, else one clear line within the timeout
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("TUI_PROFILER_BAKED_TORCH_HOME", raising=False)
    t0 = time.perf_counter()
    try:
        model = build_model(get_entry("mobilenet_v3_small"), "pretrained")
    except ModelLoadError as exc:
        assert "could not download" in str(exc) and "--weights random" in str(exc)
        assert "\n" not in str(exc)
    else:
        assert sum(p.numel() for p in model.parameters()) > 2_000_000
    assert time.perf_counter() - t0 < 90


@pytest.mark.server
def test_cli_fails_fast_with_one_line_on_a_load_error() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run(
        [sys.executable, "-m", "servers.model_server", "--model", "nope", "--port", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "unknown model 'nope'" in p.stderr
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "servers.model_server",
            "--model",
            "text_encoder",
            "--weights",
            "pretrained",
            "--port",
            "0",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 3 and "no published weights" in p.stderr
