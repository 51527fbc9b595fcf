"""The model inference server (aiohttp): `python -m servers.model_server --model NAME --weights random|pretrained`.

Start-up: the HTTP server answers first (GET /healthz → 503 while loading), then a loader thread imports
torch, builds the model and warms it up; each step is stamped (epoch seconds) in the /healthz timeline.

Scheduling: the event loop only reads bodies and writes answers. Every request's work (decode,
preprocess, inference, encode) runs in ONE worker thread (a single-thread executor), so requests queue in
arrival order (FIFO) and none is dropped; the time a request waited for the worker is reported as
`queue;dur=` beside decode/preprocess/infer/encode in the Server-Timing header. torch's own intra-op
threads (TUI_PROFILER_THREADS) parallelise each inference.

Protocol: see docs/server.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


def _process_start_epoch() -> float:
    """When this process started (the kernel's record, so interpreter start-up counts), else now."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return btime + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


PROCESS_START = _process_start_epoch()
MODULE_START = time.time()
if __name__ == "__main__":  # run as `python -m servers.model_server`: the hub modules import it by that name
    sys.modules.setdefault("servers.model_server", sys.modules[__name__])

from aiohttp import web  # noqa: E402  (after the start stamps on purpose)

from servers.catalog import (  # noqa: E402
    ModelEntry,
    ModelLoadError,
    build_model,
    example_input_array,
    get_entry,
    hash_tokenize,
    model_size,
)
from servers.decoder import (  # noqa: E402
    DECODER_SMALL,
    EOS_ID,
    EOS_TEXT,
    PREFIX_BLOCK_TOKENS,
    GenerationEngine,
    GenerationRequest,
    PrefixCache,
    encode_text,
    kv_bytes_per_token,
)
from servers.metrics import AVAILABLE as metrics_available  # noqa: E402
from servers.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE  # noqa: E402
from servers.metrics import ServerMetrics  # noqa: E402

log = logging.getLogger("model_server")
SERVER_METRICS = ServerMetrics()  # GET /metrics (servers/metrics.py)

DTYPES = {
    "float32": "float32",
    "float": "float32",
    "float16": "float16",
    "half": "float16",
    "uint8": "uint8",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
}
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
MAX_IMAGE_PIXELS = 64_000_000  # per image; a sanity bound, the body limit usually hits first


class BadInput(Exception):
    """A request the server refuses: an HTTP status and one line naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_object(body: bytes, what: str = "") -> dict[str, Any]:
    """A request body's JSON object; a body that is not one is refused with 400 (`what` says what the
    object must hold)."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(400, f"malformed JSON body: {exc}") from exc
    except RecursionError:
        raise BadInput(400, "JSON body nested too deeply") from None
    if not isinstance(doc, dict):
        raise BadInput(400, f"JSON body must be an object {what}".rstrip())
    return doc


# ---------------------------------------------------------------- threads and cgroup quota

V1_CPU_MOUNTS = ("/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu")


def cgroup_cpu_quota(
    proc_cgroup: str = "/proc/self/cgroup",
    *,
    v2_root: str = "/sys/fs/cgroup",
    v1_mounts: tuple[str, ...] = V1_CPU_MOUNTS,
) -> tuple[float | None, str]:
    """The CPU quota (cores) this process's cgroup allows, v2 or v1, walking up to the most restrictive
    ancestor; (None, reason) when there is none."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None, "no /proc/self/cgroup"
    quotas: list[tuple[float, str]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2 unified
            for d in _ancestors(v2_root, path):
                try:
                    with open(os.path.join(d, "cpu.max")) as f:
                        q, p = f.read().split()
                except (OSError, ValueError):
                    continue
                if q != "max":
                    quotas.append((int(q) / int(p), f"cgroup v2 {d}/cpu.max"))
        elif "cpu" in controllers.split(","):
            for mount in v1_mounts:
                if not os.path.isdir(mount):
                    continue
                for d in _ancestors(mount, path):
                    try:
                        with open(os.path.join(d, "cpu.cfs_quota_us")) as f:
                            quota_us = int(f.read())
                        with open(os.path.join(d, "cpu.cfs_period_us")) as f:
                            period_us = int(f.read())
                    except (OSError, ValueError):
                        continue
                    if quota_us > 0 and period_us > 0:
                        quotas.append((quota_us / period_us, f"cgroup v1 {d}/cpu.cfs_quota_us"))
                break
    if not quotas:
        return None, "no CPU quota set"
    return min(quotas)


def _ancestors(mount: str, path: str) -> list[str]:
    """The cgroup directory for `path` and its parents, plus the mount root (a container sees its own
    cgroup mounted at the root when it has a cgroup namespace)."""
    out: list[str] = []
    parts = [p for p in path.split("/") if p]
    for i in range(len(parts), -1, -1):
        d = os.path.join(mount, *parts[:i])
        if os.path.isdir(d) and d not in out:
            out.append(d)
    return out


def resolve_threads(setting: str) -> tuple[int | None, dict[str, Any]]:
    """TUI_PROFILER_THREADS → (threads to set, or None for torch's default; facts for /healthz)."""
    quota, quota_source = cgroup_cpu_quota()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    facts: dict[str, Any] = {
        "threads_setting": setting,
        "cgroup_cpu_quota": quota,
        "cgroup_cpu_quota_source": quota_source,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
    }
    s = setting.strip().lower()
    if s == "host":
        return None, facts
    if s in ("", "auto"):
        n = math.ceil(quota - 1e-9) if quota else affinity
        return max(1, min(n, affinity)), facts
    try:
        n = int(s)
    except ValueError:
        raise SystemExit(f"TUI_PROFILER_THREADS={setting!r}: must be a number, 'auto' or 'host'") from None
    if n < 1:
        raise SystemExit(f"TUI_PROFILER_THREADS={setting!r}: must be >= 1")
    return n, facts


# ---------------------------------------------------------------- the model side (worker thread only)


@dataclass
class ModelState:
    entry: ModelEntry
    weights: str
    device_request: str
    hub_repo: str | None
    hub_model: str | None
    warmup_runs: int
    max_batch: int = 8  # text generation: most sequences decoded together
    prefix_cache_mb: float = 0.0  # text generation: the prefix cache's memory (0: no prefix cache)
    timeline: dict[str, float] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    phase: str = "starting"
    error: str | None = None
    ready: bool = False
    model: Any = None
    device: Any = None
    torch: Any = None
    mean: Any = None
    std: Any = None
    engine: GenerationEngine | None = None
    # checked raw-body layouts by (X-Tensor-Shape, X-Tensor-Dtype, body size); the worker thread's alone
    _raw_layouts: dict[tuple[str | None, str | None, int], tuple[tuple[int, ...], Any, bool]] = field(
        default_factory=dict, init=False, repr=False
    )

    def torch_device(self, torch: Any) -> Any:
        """The torch device `--device` asks for ('auto': CUDA when torch sees one, else the CPU)."""
        want = self.device_request
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("--device cuda: torch sees no CUDA device")
        return torch.device(want)

    def load(self) -> None:
        """Import torch, build and warm up the model (runs in the loader thread)."""
        self.phase = "importing torch"
        threads, facts = resolve_threads(os.environ.get("TUI_PROFILER_THREADS", "auto"))
        import torch
        import torchvision

        self.torch = torch
        self.timeline["imports_done"] = time.time()
        # raw bodies are viewed zero-copy through read-only buffers; nothing writes into an input
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = self.torch_device(torch)
        self.phase = "loading model"
        model = build_model(self.entry, self.weights, hub_repo=self.hub_repo, hub_model=self.hub_model)
        self.model = model.to(self.device)
        if self.entry.input_kind == "image":
            self.mean = torch.tensor(IMAGE_MEAN, device=self.device).view(1, 3, 1, 1)
            self.std = torch.tensor(IMAGE_STD, device=self.device).view(1, 3, 1, 1)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.timeline["model_loaded"] = time.time()
        params, weight_bytes = model_size(model)
        self.phase = "warming up"
        for i in range(self.warmup_runs):  # the whole request path, so first-call costs are paid here
            x = example_input_array(self.entry.warmup_size, self.entry.input_kind, seed=i)
            headers = {"x-tensor-shape": ",".join(map(str, x.shape)), "x-tensor-dtype": x.dtype.name}
            self.handle(x.tobytes(), "application/octet-stream", headers, time.perf_counter())
        if self.entry.task == "text-generation":
            engine = GenerationEngine(self.model, torch, max_batch=self.max_batch)
            for i in range(self.warmup_runs):  # prefill and decode paths, with and without sampling
                engine.generate(
                    GenerationRequest(prompt=encode_text("warm up"), max_tokens=4, emit=_ignore, seed=i)
                )
                engine.generate(GenerationRequest(prompt=[EOS_ID], max_tokens=2, emit=_ignore, temperature=0))
            if self.prefix_cache_mb > 0:  # after the warm-up: a request's cached tokens are its own cell's
                block_bytes = PREFIX_BLOCK_TOKENS * kv_bytes_per_token()
                engine.prefix_cache = PrefixCache(
                    capacity_blocks=int(self.prefix_cache_mb * 2**20 // block_bytes)
                )
            engine.start()
            self.engine = engine
        self.timeline["warmup_done"] = time.time()
        self.runtime = self.torch_runtime(facts, torchvision=torchvision.__version__)
        self.info = {
            **self.base_info(params, weight_bytes),
            "hub": {"repo": self.hub_repo, "model": self.hub_model} if self.entry.source == "hub" else None,
        }
        if self.entry.input_kind == "tokens":
            self.info["max_tokens"] = getattr(model, "max_tokens", None)
            self.info["vocab_size"] = getattr(model, "vocab", None)
        if self.engine is not None:
            self.info["generation"] = {
                "routes": ["/v1/completions", "/v1/chat/completions"],
                "context": DECODER_SMALL["max_tokens"],
                "tokenizer": "byte-level: one token per UTF-8 byte (ids 0-255)",
                "eos_token_id": EOS_ID,
                "eos_token": EOS_TEXT,
                "kv_cache_bytes_per_token": kv_bytes_per_token(),
                "scheduling": "continuous batching: FIFO admission, prefill alone, decode steps batched",
                "max_batch": self.engine.max_batch,
                "prefix_cache": (
                    None if self.engine.prefix_cache is None else self.engine.prefix_cache.stats()
                ),
            }
        self.phase = "ready"
        self.ready = True

    # -- one request, entirely in the worker thread --------------------------------------------
    def torch_runtime(self, facts: dict[str, Any], **libraries: str) -> dict[str, Any]:
        """/info's `runtime` of a torch variant: torch, its model library (`libraries`), the device, the
        threads and the host `facts`."""
        torch = self.torch
        return {
            "torch": torch.__version__,
            **libraries,
            "python": sys.version.split()[0],
            "device": self.device.type,
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            **facts,
            "pid": os.getpid(),
        }

    def base_info(
        self, params: int | None, weight_bytes: int | None, weights: str | None = None
    ) -> dict[str, Any]:
        """/info's fields every variant shares: the model, its size, and the inputs it takes."""
        tokens = self.entry.input_kind == "tokens"
        return {
            "model": self.entry.name,
            "task": self.entry.task,
            "weights": self.weights if weights is None else weights,
            "params": params,
            "weight_bytes": weight_bytes,
            "input_kind": self.entry.input_kind,
            "default_size": list(self.entry.default_size),
            "dtypes": ["int64", "int32"] if tokens else ["float32", "float16", "uint8"],
            "encodings": ["application/octet-stream", "application/json"]
            if tokens
            else ["application/octet-stream", "image/jpeg", "image/png", "application/json"],
        }

    def handle(
        self, body: bytes, content_type: str, headers: dict[str, str], t_submit: float
    ) -> tuple[dict, dict]:
        """One request in the worker thread: decode, preprocess, infer, encode, each timed (Server-Timing),
        counted in /metrics while it runs. The stages are the subclass's (the tf: variant's numpy and
        TensorFlow); `inference_context` is what they run under."""
        t0 = time.perf_counter()
        timings = {"queue": t0 - t_submit}
        metrics = SERVER_METRICS
        metrics.started(t0 - t_submit)
        try:
            return self._run(body, content_type, headers, timings, t0)
        finally:
            metrics.finished()

    def inference_context(self) -> Any:
        """What preprocess, infer and encode run under: torch's inference mode."""
        return self.torch.inference_mode()

    def _run(
        self, body: bytes, content_type: str, headers: dict[str, str], timings: dict, t0: float
    ) -> tuple[dict, dict]:
        x, scale_to_unit = self.decode(body, content_type, headers)
        t1 = time.perf_counter()
        with self.inference_context():  # entered in preprocess's time: it is the model's set-up, not decoding
            x = self.preprocess(x, scale_to_unit)
            t2 = time.perf_counter()
            out = self.infer(x)
            t3 = time.perf_counter()
            summary = self.encode(out, x)
            t4 = time.perf_counter()
        timings.update(decode=t1 - t0, preprocess=t2 - t1, infer=t3 - t2, encode=t4 - t3)
        return summary, timings

    def decode(self, body: bytes, content_type: str, headers: dict[str, str]) -> tuple[Any, bool]:
        """Bytes → a CPU tensor (zero-copy for raw bytes). Returns (tensor, needs /255 + normalise)."""
        arr, scale_to_unit = self.decode_array(body, content_type, headers)
        return self.torch.from_numpy(arr), scale_to_unit

    def decode_array(self, body: bytes, content_type: str, headers: dict[str, str]) -> tuple[Any, bool]:
        """Bytes → a numpy array, checked (zero-copy for raw bytes: it views the request's bytes, never
        written to). Returns (array, needs /255 + normalise). The tf: variant feeds it to TensorFlow as is."""
        import numpy as np

        ctype = content_type.split(";")[0].strip().lower()
        if ctype in ("application/octet-stream", "application/x-tensor", ""):
            layout_key = (headers.get("x-tensor-shape"), headers.get("x-tensor-dtype"), len(body))
            layout = self._raw_layouts.get(layout_key)
            if layout is None:
                layout = self._raw_layout(*layout_key)
                if len(self._raw_layouts) >= 64:  # a client cycling through sizes: start over
                    self._raw_layouts.clear()
                self._raw_layouts[layout_key] = layout
            shape, dtype, is_uint8 = layout
            return np.ndarray(shape, dtype, buffer=body), is_uint8
        if ctype in ("image/jpeg", "image/jpg", "image/png"):
            if self.entry.input_kind != "image":
                raise BadInput(415, f"{ctype}: {self.entry.name} takes tokens, not images")
            import io

            from PIL import Image, UnidentifiedImageError

            try:
                img = Image.open(io.BytesIO(body))
                # the header's size is checked before decoding: a tiny file may declare billions of pixels
                self.check_shape((1, 3, img.size[1], img.size[0]), "uint8")
                rgb = img.convert("RGB")
            except Image.DecompressionBombError as exc:
                raise BadInput(413, f"{ctype} declares too many pixels: {exc}") from exc
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise BadInput(400, f"{ctype} body is not a decodable image: {exc}") from exc
            arr = np.asarray(rgb).transpose(2, 0, 1)[None]  # H,W,3 uint8 -> 1,3,H,W
            self.check_shape(arr.shape, "uint8")
            return arr, True
        if ctype == "application/json":
            doc = json_object(body, "with 'tensor' (or 'tokens' / 'text')")
            if self.entry.input_kind == "tokens":
                if "text" in doc and isinstance(doc["text"], str):
                    return np.array([hash_tokenize(doc["text"])], dtype=np.int64), False
                key = "tokens" if "tokens" in doc else "tensor"
                dtype = np.int64
            else:
                key = "tensor"
                dtype = np.float32
            if key not in doc:
                raise BadInput(400, f"JSON body has no {key!r} field")
            try:
                arr = np.asarray(doc[key], dtype=dtype)
            except (ValueError, TypeError) as exc:
                raise BadInput(
                    400, f"JSON field {key!r} is not a rectangular array of numbers: {exc}"
                ) from exc
            if self.entry.input_kind == "tokens" and arr.ndim == 1:
                arr = arr[None, :]
            self.check_shape(arr.shape, arr.dtype.name)
            return arr, False
        raise BadInput(
            415,
            f"Content-Type {ctype!r} not supported: use application/octet-stream "
            "(+ X-Tensor-Shape, X-Tensor-Dtype), image/jpeg, image/png or application/json",
        )

    def _raw_layout(
        self, shape_header: str | None, dtype_header: str | None, nbytes: int
    ) -> tuple[tuple[int, ...], Any, bool]:
        """A raw body's (shape, numpy dtype, is uint8) from its headers, checked; `decode` remembers it per
        header pair and size, so a run of same-sized requests pays for the checks once (harness time)."""
        import numpy as np

        shape = _parse_shape(shape_header)
        dtype_name = (dtype_header or "").strip().lower()
        if not dtype_name:
            raise BadInput(400, "raw tensor body needs an X-Tensor-Dtype header (e.g. float32)")
        if dtype_name not in DTYPES:
            raise BadInput(422, f"X-Tensor-Dtype {dtype_name!r}: allowed {sorted(set(DTYPES.values()))}")
        name = DTYPES[dtype_name]  # the canonical name (numpy's dtype.name is slow to compute)
        dtype = np.dtype(name)
        expected = math.prod(shape) * dtype.itemsize
        if expected != nbytes:
            raise BadInput(
                400,
                f"X-Tensor-Shape {','.join(map(str, shape))} × {name} is {expected} "
                f"bytes but the body has {nbytes}",
            )
        self.check_shape(shape, name)
        return shape, dtype, name == "uint8"

    def check_shape(self, shape: tuple[int, ...], dtype: str) -> None:
        s = ",".join(map(str, shape))
        if self.entry.input_kind == "tokens":
            if dtype not in ("int64", "int32"):
                raise BadInput(422, f"dtype {dtype}: {self.entry.name} takes int64 token ids")
            max_t = getattr(self.model, "max_tokens", None)
            if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
                raise BadInput(422, f"shape {s}: token ids must be N,T (e.g. 1,128)")
            if max_t and shape[1] > max_t:
                raise BadInput(422, f"shape {s}: at most {max_t} tokens")
            return
        if dtype not in ("float32", "float16", "uint8"):
            raise BadInput(422, f"dtype {dtype}: image tensors are float32, float16 or uint8")
        if len(shape) != 4 or shape[1] != 3 or shape[0] < 1:
            raise BadInput(422, f"shape {s}: image tensors must be N,3,H,W (e.g. 1,3,224,224)")
        if shape[2] < 16 or shape[3] < 16:
            raise BadInput(422, f"shape {s}: height and width must be at least 16")
        if shape[2] * shape[3] > MAX_IMAGE_PIXELS:
            raise BadInput(413, f"shape {s}: more than {MAX_IMAGE_PIXELS} pixels per image")

    def preprocess(self, x: Any, scale_to_unit: bool) -> Any:
        torch = self.torch
        x = x.to(self.device, non_blocking=True)
        if self.entry.input_kind == "tokens":
            x = x.long()
            vocab = getattr(self.model, "vocab", None)
            if vocab and (int(x.min()) < 0 or int(x.max()) >= vocab):
                raise BadInput(422, f"token ids must lie in [0, {vocab})")
            return x
        if scale_to_unit:  # encoded images / uint8 tensors: to [0,1] and ImageNet-normalise
            x = (x.float() / 255.0 - self.mean) / self.std
        elif x.dtype != torch.float32:
            x = x.float()
        return x

    def infer(self, x: Any) -> Any:
        torch = self.torch
        with torch.inference_mode():
            if self.entry.task == "detection":
                out = self.model(list(x))
            else:
                out = self.model(x)
            if self.device is not None and self.device.type == "cuda":
                torch.cuda.synchronize()
        return out

    def encode(self, out: Any, x: Any) -> dict[str, Any]:
        """The model output → a small JSON summary (never the full tensor)."""
        torch = self.torch
        task = self.entry.task
        summary: dict[str, Any] = {"model": self.entry.name, "input_shape": list(x.shape)}
        if isinstance(out, dict) and "out" in out:  # segmentation
            logits = out["out"]
            summary["output_shape"] = list(logits.shape)
            # classes by their peak score: one pass over the logits (a per-pixel argmax over the class axis
            # cost ~0.4 s at 667×1000, which would be harness time, not model time)
            peaks = logits[0].flatten(1).amax(1)
            top = torch.topk(peaks, k=min(3, peaks.numel()))
            values, indices = top.values.tolist(), top.indices.tolist()
            summary["top_classes"] = [
                {"class": i, "peak": round(v, 4)} for v, i in zip(values, indices, strict=True)
            ]
        elif isinstance(out, list):  # detection: one dict per image
            first = out[0] if out else {}
            scores = first.get("scores", torch.empty(0)).cpu()
            keep = min(5, scores.numel())
            summary["output_shape"] = [len(out), int(scores.numel())]
            summary["detections"] = [
                {
                    "label": int(first["labels"][i]),
                    "score": round(float(scores[i]), 4),
                    "box": [round(float(v), 1) for v in first["boxes"][i]],
                }
                for i in range(keep)
            ]
        elif task in ("text-embedding",) or (
            torch.is_tensor(out) and out.dim() == 2 and self.entry.input_kind == "tokens"
        ):
            summary["output_shape"] = list(out.shape)
            summary["embedding_norm"] = round(float(out[0].norm()), 4)
        elif torch.is_tensor(out):
            summary["output_shape"] = list(out.shape)
            if out.dim() == 2:  # classification logits
                summary["top5"] = _top_probabilities(out if out.dtype == torch.float32 else out.float(), 5)
        else:
            summary["output_type"] = type(out).__name__
        return summary


def _top_probabilities(logits: Any, k: int) -> list[dict[str, Any]]:
    """The k most probable classes of the first row of (N, classes) logits, with their softmax
    probabilities. Two torch ops: right after a forward pass every op runs with cold caches (~40 µs each
    on the test VM, against ~5 µs warm), and this is harness time, so the fewer the better (indexing the
    row first is an op too; numpy's were slower there still)."""
    top = logits.softmax(1).topk(min(k, logits.shape[1]), 1)
    values, indices = top.values.tolist()[0], top.indices.tolist()[0]
    return [{"class": i, "p": round(v, 5)} for v, i in zip(values, indices, strict=True)]


def _parse_shape(value: str | None) -> tuple[int, ...]:
    if not value:
        raise BadInput(400, "raw tensor body needs an X-Tensor-Shape header (e.g. 1,3,224,224)")
    try:
        try:
            shape = tuple(map(int, value.split(",")))  # the usual "1,3,224,224" (int() allows spaces)
        except ValueError:
            shape = tuple(int(v) for v in re.split(r"\s*[,x]\s*", value.strip()))
    except ValueError:
        raise BadInput(400, f"X-Tensor-Shape {value!r}: comma-separated integers expected") from None
    if not shape or any(v < 1 for v in shape):
        raise BadInput(400, f"X-Tensor-Shape {value!r}: every dimension must be >= 1")
    return shape


# ---------------------------------------------------------------- HTTP side (event loop)

STATE_KEY = web.AppKey("state", ModelState)
EXECUTOR_KEY = web.AppKey("executor", ThreadPoolExecutor)
MAX_BODY_KEY = web.AppKey("max_body", int)


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every HTTP error (404, 405, 413, …) answers JSON naming the problem."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(
            413,
            f"payload over the limit ({exc.text or 'too large'}); the server takes "
            f"at most {request.app[MAX_BODY_KEY]} bytes (--max-body-mb)",
        )
    except web.HTTPNotFound:
        return error_response(
            404,
            f"no route {request.method} {request.path}; routes: GET /healthz, GET /info, POST /predict, "
            "POST /v1/completions, POST /v1/chat/completions",
        )
    except web.HTTPMethodNotAllowed as exc:
        return error_response(
            405, f"{request.method} {request.path} not allowed; use {', '.join(sorted(exc.allowed_methods))}"
        )
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(exc.status, exc.reason)
        raise


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    timeline = {"process_start": PROCESS_START, "server_start": MODULE_START, **state.timeline}
    if state.error:
        return web.json_response({"status": "failed", "error": state.error, "timeline": timeline}, status=500)
    if not state.ready:
        return web.json_response(
            {"status": "loading", "phase": state.phase, "timeline": timeline}, status=503
        )
    return web.json_response(
        {"status": "ready", "model": state.entry.name, "timeline": timeline, "runtime": state.runtime}
    )


async def info(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if not state.ready:
        return web.json_response(
            {
                "status": "loading",
                "phase": state.phase,
                "model": state.entry.name,
                "input_kind": state.entry.input_kind,
                "default_size": list(state.entry.default_size),
            },
            status=503,
        )
    return web.json_response(
        {
            **state.info,
            "max_body_bytes": request.app[MAX_BODY_KEY],
            "device": state.runtime.get("device"),
            "threads": state.runtime.get("threads"),
        }
    )


async def predict(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if not state.ready:
        return error_response(503, f"model not ready ({state.phase})")
    limit = request.app[MAX_BODY_KEY]
    if request.content_length is not None and request.content_length > limit:
        return error_response(
            413, f"payload of {request.content_length} bytes over the limit of {limit} bytes (--max-body-mb)"
        )
    body = await request.read()  # over the limit → HTTPRequestEntityTooLarge → 413 (middleware)
    if not body:
        return error_response(400, "empty body")
    headers = {k.lower(): v for k, v in request.headers.items()}
    loop = asyncio.get_running_loop()
    SERVER_METRICS.accepted()
    try:
        return await _predict(request, state, body, headers, loop)
    finally:
        SERVER_METRICS.done("/predict")


async def _predict(
    request: web.Request, state: Any, body: bytes, headers: dict[str, str], loop: asyncio.AbstractEventLoop
) -> web.Response:
    t_submit = time.perf_counter()
    SERVER_METRICS.submitted()
    try:
        summary, timings = await loop.run_in_executor(
            request.app[EXECUTOR_KEY], state.handle, body, request.content_type, headers, t_submit
        )
    except BadInput as exc:
        return error_response(exc.status, exc.message)
    except Exception as exc:  # a model failure on a valid-looking input: say so, keep serving
        log.exception("inference failed")
        return error_response(500, f"inference failed: {type(exc).__name__}: {exc}")
    timing_ms = {k: v * 1000.0 for k, v in timings.items()}
    summary["timing_ms"] = {k: round(v, 3) for k, v in timing_ms.items()}
    server_timing = ", ".join(
        f"{k};dur={timing_ms[k]:.3f}" for k in ("queue", "decode", "preprocess", "infer", "encode")
    )
    return web.json_response(summary, headers={"Server-Timing": server_timing})


# ---------------------------------------------------------------- OpenAI-compatible text generation


def _ignore(event: tuple[str, Any, Any]) -> None:
    return None


@dataclass(frozen=True)
class GenerationParams:
    """A checked /v1/completions or /v1/chat/completions request."""

    prompt: list[int]
    max_tokens: int
    stream: bool
    include_usage: bool
    temperature: float
    top_p: float
    seed: int | None
    ignore_eos: bool
    min_tokens: int


def _typed(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = doc.get(key, default)
    if value is None:
        return default
    # JSON true is not a number here, and an integer is a fine float
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BadInput(400, f"{key}: {value!r} is not a {getattr(kind, '__name__', 'number')}")
    if not isinstance(value, kind):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise BadInput(400, f"{key}: {value!r} is not a {names}")
    return value


def chat_prompt(messages: Any) -> str:
    """The chat template: each message as `<|role|>\ncontent\n`, then `<|assistant|>\n`."""
    if not isinstance(messages, list) or not messages:
        raise BadInput(400, "messages: a non-empty list of {role, content} objects is required")
    parts = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadInput(400, f"messages[{i}]: an object with a string 'role' is required")
        content = m.get("content", "")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            content = "".join(
                str(c.get("text", "")) for c in content if isinstance(c, dict) and c.get("type") == "text"
            )
        if not isinstance(content, str):
            raise BadInput(400, f"messages[{i}].content: a string or a list of text parts")
        parts.append(f"<|{m['role']}|>\n{content}\n")
    return "".join(parts) + "<|assistant|>\n"


def _prompt_ids(prompt: Any, vocab: int, encode: Callable[[str], list[int]] = encode_text) -> list[int]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one prompt
    if isinstance(prompt, str):
        return encode(prompt) or [EOS_ID if encode is encode_text else 0]  # an empty prompt: <|endoftext|>
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise BadInput(400, f"prompt: token ids must lie in [0, {vocab})")
        return list(prompt)
    raise BadInput(
        400, "prompt: a string, a list of token ids, or a list of one of those (one prompt per request)"
    )


def parse_generation(
    body: bytes,
    *,
    chat: bool,
    model_name: str,
    vocab: int,
    context: int,
    encode: Callable[[str], list[int]] = encode_text,
) -> GenerationParams:
    """A generation request, checked; `encode` turns text into token ids (the model's tokenizer)."""
    doc = json_object(body)
    model = doc.get("model")
    if model is not None and model != model_name:
        raise BadInput(404, f"model: {model!r} is not served here; this server serves {model_name!r}")
    if chat:
        prompt = encode(chat_prompt(doc.get("messages")))
        max_key = "max_completion_tokens" if doc.get("max_completion_tokens") is not None else "max_tokens"
    else:
        if "prompt" not in doc:
            raise BadInput(400, "prompt: required")
        prompt = _prompt_ids(doc["prompt"], vocab, encode)
        max_key = "max_tokens"
    max_tokens = _typed(doc, max_key, int, 16)
    if max_tokens < 1:
        raise BadInput(400, f"{max_key}: {max_tokens} — at least 1")
    if len(prompt) + max_tokens > context:
        raise BadInput(
            400,
            f"this model's maximum context length is {context} tokens; the prompt has {len(prompt)} and "
            f"{max_key} asks for {max_tokens}",
        )
    n = _typed(doc, "n", int, 1)
    if n != 1:
        raise BadInput(400, f"n: {n} — this server generates one choice per request")
    temperature = float(_typed(doc, "temperature", (int, float), 1.0))
    top_p = float(_typed(doc, "top_p", (int, float), 1.0))
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise BadInput(400, f"temperature: {temperature} — a finite number >= 0 (0: greedy)")
    if not 0 < top_p <= 1:
        raise BadInput(400, f"top_p: {top_p} — in (0, 1]")
    min_tokens = _typed(doc, "min_tokens", int, 0)
    if not 0 <= min_tokens <= max_tokens:
        raise BadInput(400, f"min_tokens: {min_tokens} — between 0 and {max_key} ({max_tokens})")
    options = _typed(doc, "stream_options", dict, {})
    return GenerationParams(
        prompt=prompt,
        max_tokens=max_tokens,
        stream=_typed(doc, "stream", bool, False),
        include_usage=bool(_typed(options, "include_usage", bool, False)),
        temperature=temperature,
        top_p=top_p,
        seed=_typed(doc, "seed", int, None),
        ignore_eos=_typed(doc, "ignore_eos", bool, False),
        min_tokens=min_tokens,
    )


def timing_ms(timings: dict[str, Any]) -> dict[str, Any]:
    """The engine's timings (seconds) as the answer's `timings` object (milliseconds)."""
    return {
        "queue_ms": round(timings["queue_s"] * 1000.0, 3),
        "prefill_ms": round(timings["prefill_s"] * 1000.0, 3),
        "decode_ms": round(timings["decode_s"] * 1000.0, 3),
        "prefill_cpu_ms": round(timings["prefill_cpu_s"] * 1000.0, 3),
        "decode_cpu_ms": round(timings["decode_cpu_s"] * 1000.0, 3),
        "prompt_tokens": timings["prompt_tokens"],
        "cached_tokens": timings["cached_tokens"],
        "prefill_tokens": timings["prefill_tokens"],
        "completion_tokens": timings["completion_tokens"],
        "kv_cache_bytes": timings["kv_cache_bytes"],
    }


def generation_server_timing(t: dict[str, Any]) -> str:
    """Server-Timing of a generation: wall times, their total, then the CPU times (not wall time, so they
    stay out of `total`)."""
    total = t["queue_ms"] + t["prefill_ms"] + t["decode_ms"]
    return (
        f"queue;dur={t['queue_ms']:.3f}, prefill;dur={t['prefill_ms']:.3f}, decode;dur={t['decode_ms']:.3f}, "
        f"total;dur={total:.3f}, prefill_cpu;dur={t['prefill_cpu_ms']:.3f}, "
        f"decode_cpu;dur={t['decode_cpu_ms']:.3f}"
    )


_completion_ids = iter(range(1, 1 << 62))


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    SERVER_METRICS.accepted()
    try:
        return await _generate_answer(request, chat=chat)
    finally:
        SERVER_METRICS.done("/v1/chat/completions" if chat else "/v1/completions")


async def _generate_answer(request: web.Request, *, chat: bool) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    if not state.ready:
        return error_response(503, f"model not ready ({state.phase})")
    engine = state.engine
    if engine is None:
        return error_response(
            404, f"{state.entry.name} does not generate text; use POST /predict (decoder_small generates)"
        )
    body = await request.read()
    try:
        params = parse_generation(
            body,
            chat=chat,
            model_name=state.entry.name,
            vocab=state.model.vocab,
            context=state.model.max_tokens,
            encode=getattr(state, "encode_text", encode_text),  # hub models bring their tokenizer
        )
    except BadInput as exc:
        return error_response(exc.status, exc.message)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any, Any]] = asyncio.Queue()

    def emit(event: tuple[str, Any, Any]) -> None:  # called in the engine thread
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the loop is gone (shutdown): nobody is listening
            pass

    job = GenerationRequest(
        prompt=params.prompt,
        max_tokens=params.max_tokens,
        emit=emit,
        temperature=params.temperature,
        top_p=params.top_p,
        seed=params.seed,
        ignore_eos=params.ignore_eos,
        min_tokens=params.min_tokens,
    )
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{next(_completion_ids)}"
    created = int(time.time())
    engine.submit(job)
    try:
        if params.stream:
            return await _stream(request, events, params, chat=chat, ident=ident, created=created)
        pieces: list[str] = []
        while True:
            kind, value, extra = await events.get()
            if kind == "token":
                pieces.append(extra)
            elif kind == "error":
                return error_response(500, value)
            else:
                break
        finish, t = value, timing_ms(extra)
        text = "".join(pieces)
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            if chat
            else {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        )
        answer = {
            "id": ident,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": state.entry.name,
            "choices": [choice],
            "usage": _usage(t),
            "timings": t,
        }
        return web.json_response(answer, headers={"Server-Timing": generation_server_timing(t)})
    finally:
        job.cancelled = True  # a client that left mid-way frees its sequence (no-op once done)


def _usage(t: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's usage; `prompt_tokens_details.cached_tokens` as vLLM and OpenAI report it (0 without the
    prefix cache: nothing is cached)."""
    prompt, completion = t["prompt_tokens"], t["completion_tokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": t["cached_tokens"]},
    }


def _sse(doc: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


async def _stream(
    request: web.Request,
    events: asyncio.Queue[tuple[str, Any, Any]],
    params: GenerationParams,
    *,
    chat: bool,
    ident: str,
    created: int,
) -> web.StreamResponse:
    """Server-sent events: one chunk per generated token, a last chunk with the finish reason and the
    server's `timings`, a usage chunk when `stream_options.include_usage`, then `data: [DONE]`."""
    state = request.app[STATE_KEY]
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    obj = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": ident, "object": obj, "created": created, "model": state.entry.name}

    def chunk(piece: str | None, finish: str | None) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {} if piece is None else {"content": piece}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}

    try:
        if chat:
            first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
            await resp.write(_sse({**head, "choices": [{**first, "finish_reason": None}]}))
        while True:
            kind, value, extra = await events.get()
            if kind == "token":
                await resp.write(_sse({**head, "choices": [chunk(extra, None)]}))
                continue
            if kind == "error":
                await resp.write(_sse({"error": {"message": value, "type": "server_error", "code": 500}}))
                break
            t = timing_ms(extra)
            await resp.write(_sse({**head, "choices": [chunk(None, value)], "timings": t}))
            if params.include_usage:
                await resp.write(_sse({**head, "choices": [], "usage": _usage(t), "timings": t}))
            break
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):  # the client left: the caller cancels the job
        pass
    return resp


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus metrics (servers/metrics.py): in flight, queued, batch size, KV-cache tokens."""
    if not metrics_available:
        return error_response(404, "/metrics needs the prometheus_client package in the server's environment")
    SERVER_METRICS.engine = request.app[STATE_KEY].engine
    body = SERVER_METRICS.exposition()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


def make_app(state: ModelState, *, max_body_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes, middlewares=[json_errors])
    app[MAX_BODY_KEY] = max_body_bytes
    app[STATE_KEY] = state
    # One worker: inference requests queue FIFO, never dropped (see the module docstring).
    app[EXECUTOR_KEY] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/info", info)
    app.router.add_post("/predict", predict)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/metrics", metrics_endpoint)

    async def stop_executor(app: web.Application) -> None:
        app[EXECUTOR_KEY].shutdown(wait=False, cancel_futures=True)
        # the generation engine belongs to the model state (a daemon thread), not to this app

    app.on_cleanup.append(stop_executor)
    return app


def start_loading(state: ModelState, *, exit_on_error: bool = True) -> threading.Thread:
    """Load the model in a daemon thread (the server answers 503 meanwhile). A load failure prints one
    line and, in the CLI, exits the process (fail fast) with status 3."""

    def run() -> None:
        try:
            state.load()
            log.info(
                "ready: %s (%s) on %s, %s threads",
                state.entry.name,
                state.weights,
                state.runtime.get("device"),
                state.runtime.get("threads"),
            )
        except (ModelLoadError, SystemExit) as exc:
            state.error = str(exc)
        except Exception as exc:
            state.error = f"{type(exc).__name__}: {exc}"
            log.exception("model load failed")
        if state.error:
            print(f"model_server: error: {state.error}", file=sys.stderr, flush=True)
            if exit_on_error:
                sys.stdout.flush()
                os._exit(3)

    thread = threading.Thread(target=run, name="model-loader", daemon=True)
    thread.start()
    return thread


PREFIX_CACHE_ENV = "TUI_PROFILER_PREFIX_CACHE"


def _env_on(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m servers.model_server", description="tui-profiler model server"
    )
    p.add_argument(
        "--model",
        required=True,
        help="catalog name (python -m servers.catalog --list), 'hub', hf:<id or dir> or tf:<SavedModel or handle>",
    )
    p.add_argument("--weights", choices=["random", "pretrained"], default="random")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-body-mb", type=float, default=256.0, help="largest request body (413 above)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--warmup", type=int, default=1, help="warm-up inferences before /healthz says ready")
    p.add_argument(
        "--max-batch", type=int, default=8, help="text generation: most sequences decoded together (>= 1)"
    )
    p.add_argument(
        "--prefix-cache",
        action="store_true",
        default=_env_on(os.environ.get(PREFIX_CACHE_ENV, "")),
        help=f"text generation: reuse the KV of cached prompt prefixes (blocks of {PREFIX_BLOCK_TOKENS} "
        f"tokens, as vLLM's automatic prefix caching); also {PREFIX_CACHE_ENV}=1",
    )
    p.add_argument(
        "--prefix-cache-mb",
        type=float,
        default=256.0,
        help="text generation: the prefix cache's memory; least recently used blocks leave first",
    )
    p.add_argument("--hub-repo", help="Torch Hub repository OWNER/REPO[:REF] (model 'hub')")
    p.add_argument("--hub-model", help="Torch Hub entry point (model 'hub')")
    p.add_argument("--input-kind", choices=["image", "tokens"], help="override the input kind (hub models)")
    p.add_argument("--input-size", help="default input size, e.g. 1,3,224,224 or 1,128 (hub models)")
    p.add_argument("--task", help="hf: / tf: models: what the model does (servers/hf.py, servers/tf.py)")
    p.add_argument("--served-model-name", help="the name /info and the generation routes answer to")
    return p.parse_args(argv)


def hub_entry(args: argparse.Namespace, size: list[int] | None) -> tuple[ModelEntry, type[ModelState]]:
    """The entry and state class of an `hf:` (servers/hf.py) or `tf:` (servers/tf.py) model."""
    if args.model.startswith("hf:"):
        from servers.hf import HFModelState, hf_entry

        return hf_entry(args.model, args.task, name=args.served_model_name, input_size=size), HFModelState
    from servers.tf import TFModelState, tf_entry

    return tf_entry(args.model, args.task, name=args.served_model_name, input_size=size), TFModelState


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s model_server %(levelname)s %(message)s")
    try:
        size = [int(v) for v in args.input_size.split(",")] if args.input_size else None
        if args.model.startswith(("hf:", "tf:")):  # Hugging Face / TensorFlow models: their own modules
            entry, state_class = hub_entry(args, size)
        else:
            entry, state_class = (
                get_entry(args.model, input_kind=args.input_kind, input_size=size),
                ModelState,
            )
    except (ModelLoadError, ValueError) as exc:
        print(f"model_server: error: {exc}", file=sys.stderr)
        return 2
    state = state_class(
        entry=entry,
        weights=args.weights,
        device_request=args.device,
        hub_repo=args.hub_repo,
        hub_model=args.hub_model,
        warmup_runs=max(0, args.warmup),
        max_batch=max(1, args.max_batch),
        prefix_cache_mb=max(0.0, args.prefix_cache_mb) if args.prefix_cache else 0.0,
    )
    app = make_app(state, max_body_bytes=int(args.max_body_mb * 1024 * 1024))

    async def begin_loading(app: web.Application) -> None:
        start_loading(state)

    app.on_startup.append(begin_loading)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, handle_signals=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # do not wait for a running inference thread on shutdown


if __name__ == "__main__":
    sys.exit(main())
