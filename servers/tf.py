"""TensorFlow models in our server: `--model tf:<SavedModel directory | TF Hub handle | keras:Name>`.

Runs in the server image's TensorFlow variant (`tui-profiler images build --variant tf`: tensorflow-cpu, no
torch). The model is one of:
- a SavedModel directory (the TF Hub format; the profiler mounts a host directory read-only for you): its
  `serving_default` signature is called, and the input's shape and dtype are read from that signature;
- a TF Hub handle (`https://tfhub.dev/...` or `https://www.kaggle.com/models/...`): the compressed
  SavedModel is downloaded into $TFHUB_CACHE_DIR with a short timeout, one clear line when it cannot be;
- `keras:<Name>`, a `keras.applications` architecture (`keras:MobileNetV2`): random weights with `--weights
  random` (identical compute, nothing downloaded; the same network as TF Hub's classifier of that name),
  ImageNet weights with `pretrained`.

The same routes, Server-Timing and readiness timeline as the torch models: `/predict` takes images N,3,H,W
(transposed to the NHWC layout TensorFlow models take, and resized when the signature fixes the size — the
resize is preprocess time), float32 used as is, uint8 scaled to [0, 1] (TF Hub's convention), or
`image/jpeg` / `image/png`; token models take int32/int64 ids N,T. TensorFlow is imported in the loader
thread (`imports_done`), the model is loaded before `model_loaded`, warmed up before `warmup_done`. Threads:
TUI_PROFILER_THREADS sets TensorFlow's intra- and inter-op pools as it sets torch's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tarfile
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

from servers.catalog import DOWNLOAD_TIMEOUT_S, ModelEntry, ModelLoadError
from servers.model_server import ModelState, resolve_threads

TF_TASKS = ("image-classification", "feature-extraction")
PREFIX = "tf:"


def tf_entry(
    spec: str, task: str | None, *, name: str | None = None, input_size: Sequence[int] | None = None
) -> ModelEntry:
    """The entry of `tf:<ref>` before it is loaded (the signature refines the default size at load)."""
    ref = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    if not ref:
        raise ModelLoadError("tf: needs a SavedModel directory, a TF Hub handle or keras:<Name>")
    task = task or "image-classification"
    if task not in TF_TASKS:
        raise ModelLoadError(f"--task {task!r}: a tf: model does one of {', '.join(TF_TASKS)}")
    size = tuple(int(v) for v in input_size) if input_size else (1, 3, 224, 224)
    kind = "tokens" if len(size) == 2 else "image"
    return ModelEntry(
        name or f"{PREFIX}{ref}",
        task,
        kind,
        size,
        f"TensorFlow {task} model {ref}",
        size if kind == "tokens" else (1, 3, 64, 64),
        source="tf",
        extra={"ref": ref},
    )


def _download_handle(handle: str) -> str:
    """A TF Hub handle's SavedModel, downloaded and unpacked once into $TFHUB_CACHE_DIR."""
    import hashlib

    cache = os.environ.get("TFHUB_CACHE_DIR") or os.path.join(os.environ.get("HOME", "/tmp"), "tfhub")
    target = os.path.join(cache, hashlib.sha1(handle.encode()).hexdigest())
    if os.path.isfile(os.path.join(target, "saved_model.pb")):
        return target
    url = handle + ("&" if "?" in handle else "?") + "tf-hub-format=compressed"
    os.makedirs(target, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as answer:
            with tarfile.open(fileobj=answer, mode="r|gz") as tar:
                tar.extractall(target, filter="data")
    except (OSError, tarfile.TarError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ModelLoadError(
            f"could not download the TF Hub model {handle} ({reason}); no network? Use a SavedModel "
            "directory (tf:/path, mounted for you), or tf:keras:<Name> with --weights random (same compute)"
        ) from exc
    return target


class TFModelState(ModelState):
    """ModelState for a `tf:` model: the HTTP side is the catalog's; decoding to numpy, the TensorFlow call
    and the summary are here (no torch in this image)."""

    fn: Any = None
    nhwc: bool = True
    fixed_hw: tuple[int, int] | None = None
    input_dtype: Any = None
    tf: Any = None

    def load(self) -> None:
        ref = self.entry.extra["ref"]
        self.phase = "importing tensorflow"
        threads, facts = resolve_threads(os.environ.get("TUI_PROFILER_THREADS", "auto"))
        import numpy as np
        import tensorflow as tf

        self.tf = tf
        if threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        self.timeline["imports_done"] = time.time()
        self.phase = "loading model"
        params: int | None = None
        weight_bytes: int | None = None
        if ref.startswith("keras:"):
            model = self._keras_application(tf, ref.split(":", 1)[1])
            params = int(model.count_params())
            spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="inputs")
            self.fn = tf.function(model, input_signature=[spec], reduce_retracing=True)
            shape, dtype = spec.shape, spec.dtype
            weight_bytes = int(sum(np.prod(w.shape) * w.dtype.size for w in model.weights))
        else:
            path = _download_handle(ref) if ref.startswith(("http://", "https://")) else ref
            if not os.path.isdir(path):
                raise ModelLoadError(f"tf:{ref}: no such SavedModel directory (nor a TF Hub https:// handle)")
            try:
                loaded = tf.saved_model.load(path)
            except (OSError, ValueError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ModelLoadError(f"tf:{ref}: not a loadable SavedModel ({first[:200]})") from exc
            self._loaded = loaded  # keeps the variables alive
            signature = getattr(loaded, "signatures", {}).get("serving_default")
            if signature is None:
                raise ModelLoadError(
                    f"tf:{ref}: the SavedModel has no serving_default signature (TF Hub's TF1 format?)"
                )
            specs = list(signature.structured_input_signature[1].values())
            if len(specs) != 1:
                raise ModelLoadError(f"tf:{ref}: serving_default takes {len(specs)} inputs; one is served")
            spec = specs[0]
            name = spec.name
            self.fn = lambda x: signature(**{name: x})
            shape, dtype = spec.shape, spec.dtype
            variables = list(getattr(loaded, "variables", []))
            params = int(sum(int(np.prod(v.shape)) for v in variables)) if variables else None
            weight_bytes = (
                int(sum(int(np.prod(v.shape)) * v.dtype.size for v in variables)) if variables else None
            )
        self.input_dtype = dtype
        self._adopt_signature(tuple(shape.as_list()) if shape.rank is not None else None, dtype)
        self.timeline["model_loaded"] = time.time()
        self.phase = "warming up"
        rng = np.random.default_rng(0)
        for _ in range(self.warmup_runs):
            x: Any
            if self.entry.input_kind == "image":
                x = rng.standard_normal(self.entry.warmup_size, dtype=np.float32)
            else:
                x = rng.integers(1, 100, size=self.entry.warmup_size, dtype=np.int64)
            headers = {"x-tensor-shape": ",".join(map(str, x.shape)), "x-tensor-dtype": x.dtype.name}
            self.handle(x.tobytes(), "application/octet-stream", headers, time.perf_counter())
        self.timeline["warmup_done"] = time.time()
        self.runtime = {
            "tensorflow": tf.__version__,
            "python": sys.version.split()[0],
            "device": "cpu",
            "device_name": None,
            "threads": tf.config.threading.get_intra_op_parallelism_threads() or None,
            "interop_threads": tf.config.threading.get_inter_op_parallelism_threads() or None,
            **facts,
            "pid": os.getpid(),
        }
        image = self.entry.input_kind == "image"
        self.info = {
            **self.base_info(params, weight_bytes, self.weights if ref.startswith("keras:") else "saved"),
            "tf": {
                "ref": ref,
                "input_shape": shape.as_list() if shape.rank is not None else None,
                "input_dtype": dtype.name,
                "layout": ("NHWC" if self.nhwc else "NCHW") if image else None,
                "resized_to": list(self.fixed_hw) if self.fixed_hw else None,
            },
        }
        self.phase = "ready"
        self.ready = True

    def _keras_application(self, tf: Any, name: str) -> Any:
        factory = getattr(tf.keras.applications, name, None)
        if factory is None or not callable(factory):
            raise ModelLoadError(f"tf:keras:{name}: keras.applications has no such model")
        if self.weights == "random":
            return factory(weights=None)
        try:
            import socket

            socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
            return factory(weights="imagenet")
        except Exception as exc:
            raise ModelLoadError(
                f"could not download the ImageNet weights of keras {name} ({exc}); no network? Use --weights "
                "random (same compute)"
            ) from exc

    def _adopt_signature(self, shape: tuple[int | None, ...] | None, dtype: Any) -> None:
        """The entry's input kind and default size from the model's input signature."""
        if shape is None:
            return
        if len(shape) == 4:  # an image batch: NHWC (TensorFlow's way) or NCHW
            self.nhwc = shape[3] == 3 or shape[1] != 3
            h, w = (shape[1], shape[2]) if self.nhwc else (shape[2], shape[3])
            if h is not None and w is not None:
                self.fixed_hw = (int(h), int(w))
            size = (1, 3, int(h or self.entry.default_size[2]), int(w or self.entry.default_size[3]))
            warm = (1, 3, *self.fixed_hw) if self.fixed_hw else self.entry.warmup_size
            self.entry = dataclasses.replace(
                self.entry, input_kind="image", default_size=size, warmup_size=warm
            )
        elif len(shape) == 2 and dtype.is_integer:
            t = int(shape[1] or 128)
            self.entry = dataclasses.replace(
                self.entry, input_kind="tokens", default_size=(1, t), warmup_size=(1, min(t, 16))
            )

    # -- one request, in the worker thread (numpy and TensorFlow; no torch) -------------------------
    def inference_context(self) -> Any:
        """No torch here: the stages run as they are."""
        return contextlib.nullcontext()

    def decode(self, body: bytes, content_type: str, headers: dict[str, str]) -> tuple[Any, bool]:
        """The torch server's checked decoding, left as numpy for TensorFlow."""
        return self.decode_array(body, content_type, headers)

    def preprocess(self, x: Any, scale_to_unit: bool) -> Any:
        tf = self.tf
        t = tf.convert_to_tensor(x)
        if self.entry.input_kind == "tokens":
            return tf.cast(t, self.input_dtype) if self.input_dtype is not None else t
        t = tf.cast(t, tf.float32)
        if scale_to_unit:
            t = t / 255.0  # TF Hub's image convention: RGB in [0, 1]
        if self.nhwc:
            t = tf.transpose(t, (0, 2, 3, 1))
        if self.fixed_hw is not None and tuple(x.shape[-2:]) != self.fixed_hw:
            if not self.nhwc:
                t = tf.transpose(t, (0, 2, 3, 1))
            t = tf.image.resize(t, self.fixed_hw)
            if not self.nhwc:
                t = tf.transpose(t, (0, 3, 1, 2))
        if self.input_dtype is not None and self.input_dtype != tf.float32:
            t = tf.cast(t, self.input_dtype)
        return t

    def infer(self, x: Any) -> Any:
        out = self.fn(x)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return out.numpy()  # eager TensorFlow has run by now; the copy out is small (logits)

    def encode(self, out: Any, x: Any) -> dict[str, Any]:
        import numpy as np

        summary: dict[str, Any] = {"model": self.entry.name, "input_shape": list(x.shape)}
        summary["output_shape"] = list(out.shape)
        if out.ndim == 2 and self.entry.task == "image-classification" and out.shape[1] > 1:
            row = out[0].astype(np.float64)
            p = np.exp(row - row.max())
            p /= p.sum()
            top = np.argsort(-p)[:5]
            summary["top5"] = [{"class": int(i), "p": round(float(p[i]), 5)} for i in top]
        else:
            summary["embedding_norm"] = round(float(np.linalg.norm(out[0])), 4)
        return summary
