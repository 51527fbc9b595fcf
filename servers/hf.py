"""Hugging Face models in our server: `--model hf:<hub id or directory> --task TASK`.

Loaded with `transformers` (AutoConfig / AutoTokenizer / AutoImageProcessor and the task's AutoModel class;
safetensors weights preferred) from a local directory (a `save_pretrained` folder or a snapshot; the profiler
mounts a host directory read-only into the container), a Hugging Face cache ($HF_HOME, e.g. mounted), or —
on a connected box — the hub, with a short timeout and one clear line when it cannot download. `--weights
random` builds the same architecture from `config.json` alone (identical compute, no weights needed).

Tasks and what a request runs (`/predict` takes token ids N,T or images N,3,H,W exactly as the catalog
models do, so inputs are sized as today: `token_lens`, image scales):
- `feature-extraction`: the encoder, then the mean of its last hidden states over the attention mask — the
  sentence embedding sentence-transformers computes for all-MiniLM-L6-v2 and its kin.
- `text-classification`: the sequence-classification head's logits (top 5 in the answer).
- `image-classification`: the image-classification head's logits; ViT-like models interpolate their
  position embeddings, so every image scale runs at its own size.
- `text-generation`: a causal LM served on `/v1/completions` and `/v1/chat/completions` by the catalog
  decoder's continuous-batching engine (`servers.decoder.GenerationEngine`): prefills alone, decode steps
  batched across sequences (their caches left-padded to one length with an attention mask).

Torch and transformers are imported in the loader thread (the readiness timeline's `imports_done`), the
model is built and its weights read before `model_loaded`, as for the catalog and Torch Hub models.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Sequence
from typing import Any

from servers.catalog import DOWNLOAD_TIMEOUT_S, ModelEntry, ModelLoadError, model_size
from servers.decoder import Detokenizer, GenerationEngine, GenerationRequest
from servers.model_server import ModelState, resolve_threads

HF_TASKS = ("feature-extraction", "text-classification", "image-classification", "text-generation")
PREFIX = "hf:"


def hf_entry(
    spec: str, task: str | None, *, name: str | None = None, input_size: Sequence[int] | None = None
) -> ModelEntry:
    """The catalog-like entry of `hf:<ref>` for `task` (its input kind and default size)."""
    ref = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    if not ref:
        raise ModelLoadError(
            "hf: needs a hub id or a directory, e.g. hf:sentence-transformers/all-MiniLM-L6-v2"
        )
    if task not in HF_TASKS:
        raise ModelLoadError(f"--task {task!r}: an hf: model needs one of {', '.join(HF_TASKS)}")
    image = task == "image-classification"
    size = tuple(int(v) for v in input_size) if input_size else ((1, 3, 224, 224) if image else (1, 128))
    return ModelEntry(
        name or f"{PREFIX}{ref}",
        task,
        "image" if image else "tokens",
        size,
        f"Hugging Face {task} model {ref}",
        (1, 3, 64, 64) if image else (1, 16),
        source="hf",
        extra={"ref": ref},
    )


def _download_error(ref: str, exc: BaseException) -> ModelLoadError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ModelLoadError(
        f"could not load {ref!r} from the Hugging Face hub ({type(exc).__name__}: {first[:200]}); no network? "
        "Point the model at a local directory (hf:/path/to/model, mounted for you), mount a Hugging Face cache "
        "(HF_HOME), or use --weights random with a directory holding its config.json"
    )


def _is_local(ref: str) -> bool:
    return os.path.isdir(ref)


def _timed_hub_call(ref: str, fn: Any) -> Any:
    """A transformers call that may reach the hub: local folders go straight; a hub id gets the short
    download timeout (HF_HUB_* environment, set in the image) and one clear line when it fails."""
    if _is_local(ref):
        return fn()
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(DOWNLOAD_TIMEOUT_S)))
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(DOWNLOAD_TIMEOUT_S)))
    try:
        return fn()
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        raise _download_error(ref, exc) from exc
    except Exception as exc:  # huggingface_hub's own errors (HTTP, offline mode) derive from several bases
        raise _download_error(ref, exc) from exc


class HFModelState(ModelState):
    """ModelState for an `hf:` model: the request path (decode, checks, preprocess, Server-Timing) is the
    catalog's; loading, the forward pass and the answer's summary are transformers'."""

    tokenizer: Any = None
    eos_token_id: int | None = None

    def load(self) -> None:
        ref = self.entry.extra["ref"]
        self.phase = "importing torch and transformers"
        threads, facts = resolve_threads(os.environ.get("TUI_PROFILER_THREADS", "auto"))
        import torch
        import transformers

        self.torch = torch
        self.timeline["imports_done"] = time.time()
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = self.torch_device(torch)
        self.phase = "loading model"
        transformers.logging.set_verbosity_error()
        config = _timed_hub_call(ref, lambda: transformers.AutoConfig.from_pretrained(ref))
        auto = {
            "feature-extraction": transformers.AutoModel,
            "text-classification": transformers.AutoModelForSequenceClassification,
            "image-classification": transformers.AutoModelForImageClassification,
            "text-generation": transformers.AutoModelForCausalLM,
        }[self.entry.task]
        if self.weights == "random":
            torch.manual_seed(0)
            model = auto.from_config(config)
        else:
            model = _timed_hub_call(ref, lambda: auto.from_pretrained(ref))
        model.eval().to(self.device)
        self.tokenizer = _optional(ref, lambda: transformers.AutoTokenizer.from_pretrained(ref))
        processor = None
        if self.entry.input_kind == "image":
            processor = _optional(ref, lambda: transformers.AutoImageProcessor.from_pretrained(ref))
        max_tokens = _max_tokens(config, self.tokenizer)
        vocab = int(getattr(config, "vocab_size", 0) or 0) or None
        self.model = HFTaskModel(model, self.entry.task, max_tokens=max_tokens, vocab=vocab)
        if self.entry.input_kind == "image":
            mean = getattr(processor, "image_mean", None) or (0.485, 0.456, 0.406)
            std = getattr(processor, "image_std", None) or (0.229, 0.224, 0.225)
            self.mean = torch.tensor(mean, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
            self.std = torch.tensor(std, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.timeline["model_loaded"] = time.time()
        params, weight_bytes = model_size(model)
        self.phase = "warming up"
        import numpy as np

        rng = np.random.default_rng(0)
        for _ in range(self.warmup_runs):  # the whole request path, so first-call costs are paid here
            x: Any
            if self.entry.input_kind == "image":
                x = rng.standard_normal(self.entry.warmup_size, dtype=np.float32)
            else:
                x = rng.integers(0, vocab or 100, size=self.entry.warmup_size, dtype=np.int64)
            headers = {"x-tensor-shape": ",".join(map(str, x.shape)), "x-tensor-dtype": x.dtype.name}
            self.handle(x.tobytes(), "application/octet-stream", headers, time.perf_counter())
        generation: dict[str, Any] | None = None
        if self.entry.task == "text-generation":
            eos: Any = getattr(config, "eos_token_id", None)  # an id, a list of ids, or None
            self.eos_token_id = (
                int(eos[0]) if isinstance(eos, list) and eos else (None if eos is None else int(eos))
            )
            lm = HFCausalLM(model, torch, max_tokens=max_tokens or 2048, vocab=vocab or 0)
            engine = HFGenerationEngine(
                lm, torch, max_batch=self.max_batch, eos_token_id=self.eos_token_id, tokenizer=self.tokenizer
            )
            for i in range(self.warmup_runs):
                engine.generate(GenerationRequest(prompt=[1, 2, 3], max_tokens=3, emit=_ignore, seed=i))
                engine.generate(GenerationRequest(prompt=[1], max_tokens=2, emit=_ignore, temperature=0))
            engine.start()
            self.engine = engine
            generation = {
                "routes": ["/v1/completions", "/v1/chat/completions"],
                "context": lm.max_tokens,
                "tokenizer": type(self.tokenizer).__name__ if self.tokenizer is not None else None,
                "eos_token_id": self.eos_token_id,
                "scheduling": "continuous batching: FIFO admission, prefill alone, decode steps batched",
                "max_batch": engine.max_batch,
            }
        self.timeline["warmup_done"] = time.time()
        self.runtime = self.torch_runtime(facts, transformers=transformers.__version__)
        tokens = self.entry.input_kind == "tokens"
        self.info = {
            **self.base_info(params, weight_bytes),
            "hf": {
                "ref": ref,
                "architecture": type(model).__name__,
                "model_type": getattr(config, "model_type", None),
                "source": "directory" if _is_local(ref) else "hub",
            },
        }
        if tokens:
            self.info["max_tokens"] = max_tokens
            self.info["vocab_size"] = vocab
        if generation is not None:
            self.info["generation"] = generation
        self.phase = "ready"
        self.ready = True

    # -- text: the model's own tokenizer (the catalog's stand-in hash tokenizer without one) ---------
    def encode_text(self, text: str) -> list[int]:
        if self.tokenizer is None:
            from servers.catalog import hash_tokenize

            vocab = getattr(self.model, "vocab", None) or 30522
            return [i % vocab for i in hash_tokenize(text)]
        return list(
            self.tokenizer(text, add_special_tokens=self.entry.task != "text-generation")["input_ids"]
        )

    def decode(self, body: bytes, content_type: str, headers: dict[str, str]) -> tuple[Any, bool]:
        ctype = content_type.split(";")[0].strip().lower()
        if ctype == "application/json" and self.entry.input_kind == "tokens":
            from servers.model_server import json_object

            doc = json_object(body, "with 'tokens', 'tensor' or 'text'")
            if isinstance(doc.get("text"), str):
                ids = self.encode_text(doc["text"])[: getattr(self.model, "max_tokens", None) or None]
                return self.torch.tensor([ids], dtype=self.torch.int64), False
        return super().decode(body, content_type, headers)

    def encode(self, out: Any, x: Any) -> dict[str, Any]:
        summary: dict[str, Any] = {"model": self.entry.name, "input_shape": list(x.shape)}
        summary["output_shape"] = list(out.shape)
        if self.entry.task == "feature-extraction":
            summary["embedding_norm"] = round(float(out[0].norm()), 4)
        else:  # class (or next-token) logits
            from servers.model_server import _top_probabilities

            summary["top5"] = _top_probabilities(out if out.dtype == self.torch.float32 else out.float(), 5)
        return summary


def _optional(ref: str, fn: Any) -> Any:
    """A tokenizer or image processor when the model has one (none is fine: token ids and tensors need
    neither); never a reason to fail the load."""
    try:
        return fn()
    except Exception:
        return None


def _max_tokens(config: Any, tokenizer: Any) -> int | None:
    """The longest input: the tokenizer's model_max_length when it is a real bound, else the position table
    (less RoBERTa-style models' padding offset)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not n:
        return None
    offset = 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "mpnet", "camembert") else 0
    return int(n) - offset


def _ignore(event: tuple[str, Any, Any]) -> None:
    return None


class HFTaskModel:
    """A transformers model as the catalog's request path calls it: `model(x)` → one tensor per row
    (the pooled embedding, or the logits), with `max_tokens` and `vocab` for the input checks."""

    def __init__(self, model: Any, task: str, *, max_tokens: int | None, vocab: int | None) -> None:
        self.model = model
        self.task = task
        self.max_tokens = max_tokens
        self.vocab = vocab
        params = inspect.signature(model.forward).parameters
        self._interpolate = "interpolate_pos_encoding" in params

    def __call__(self, x: Any) -> Any:
        import torch

        if self.task == "image-classification":
            kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
            return self.model(pixel_values=x, **kwargs).logits
        mask = torch.ones_like(x)
        out = self.model(input_ids=x, attention_mask=mask)
        if self.task == "feature-extraction":  # sentence-transformers' mean pooling over the mask
            hidden = out.last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        logits = out.logits
        return logits[:, -1] if self.task == "text-generation" else logits

    def parameters(self) -> Any:
        return self.model.parameters()

    def buffers(self) -> Any:
        return self.model.buffers()


# ---------------------------------------------------------------- text generation on the catalog's engine


class HFSequenceCache:
    """One sequence's transformers cache, as the engine sees a cache: `length`, `capacity`, `nbytes`, and
    `k` (the engine reads the device from `cache.k`)."""

    def __init__(self, capacity: int, k: Any) -> None:
        self.kv: Any = None  # a transformers DynamicCache after the prefill
        self.length = 0
        self.capacity = capacity
        self.k = k

    @property
    def nbytes(self) -> int:
        if self.kv is None:
            return 0
        return int(
            sum(t.numel() * t.element_size() for keys, values in _layers(self.kv) for t in (keys, values))
        )


def _layers(cache: Any) -> list[tuple[Any, Any]]:
    """Each layer's (keys, values) of a DynamicCache (transformers 5's `layers`, 4's key/value lists)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


class HFCausalLM:
    """A transformers causal LM behind the interface `GenerationEngine` drives (`new_cache`, `step`)."""

    def __init__(self, model: Any, torch: Any, *, max_tokens: int, vocab: int) -> None:
        self.model = model
        self.torch = torch
        self.max_tokens = max_tokens
        self.vocab = vocab
        params = inspect.signature(model.forward).parameters
        self._cache_kw = (
            "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"
        )
        self._device_probe = torch.empty(0, device=next(model.parameters()).device)

    def new_cache(self, capacity: int) -> HFSequenceCache:
        return HFSequenceCache(min(capacity, self.max_tokens), self._device_probe)

    def step(self, ids: Any, caches: list[HFSequenceCache]) -> Any:
        """Run `ids` (B, T) through the model after each row's cache; the last position's logits (B, vocab).
        One row: its own cache. Several (decode, T = 1): their caches left-padded to one length, masked."""
        from transformers import DynamicCache

        torch = self.torch
        t = ids.shape[1]
        if len(caches) == 1:
            c = caches[0]
            if c.kv is None:
                c.kv = DynamicCache()
            pos = torch.arange(c.length, c.length + t, device=ids.device).unsqueeze(0)
            logits = self.model(
                input_ids=ids, position_ids=pos, use_cache=True, **{self._cache_kw: c.kv}
            ).logits
            c.length += t
            return logits[:, -1]
        lengths = [c.length for c in caches]
        longest = max(lengths)
        batched = DynamicCache()
        per_seq = [_layers(c.kv) for c in caches]
        for layer in range(len(per_seq[0])):
            keys = torch.cat([_left_pad(torch, s[layer][0], longest) for s in per_seq])
            values = torch.cat([_left_pad(torch, s[layer][1], longest) for s in per_seq])
            batched.update(keys, values, layer)
        mask = torch.zeros(len(caches), longest + t, dtype=torch.long, device=ids.device)
        for i, n in enumerate(lengths):
            mask[i, longest - n :] = 1
        pos = torch.tensor(lengths, device=ids.device).unsqueeze(1) + torch.arange(t, device=ids.device)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{self._cache_kw: batched}
        )
        for i, (c, n) in enumerate(zip(caches, lengths, strict=True)):
            own = DynamicCache()
            for layer, (keys, values) in enumerate(_layers(batched)):
                own.update(keys[i : i + 1, :, longest - n :], values[i : i + 1, :, longest - n :], layer)
            c.kv = own
            c.length += t
        return out.logits[:, -1]

    def __call__(self, ids: Any) -> Any:
        return self.model(input_ids=ids).logits[:, -1]


def _left_pad(torch: Any, x: Any, length: int) -> Any:
    pad = length - x.shape[-2]
    return torch.nn.functional.pad(x, (0, 0, pad, 0)) if pad else x


class TokenizerDetokenizer(Detokenizer):
    """Token ids → text pieces with the model's tokenizer, incrementally: the text of all tokens so far,
    less what was already sent (a piece that ends in a partial character waits)."""

    def __init__(self, tokenizer: Any, eos_token_id: int | None) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.eos = eos_token_id
        self.ids: list[int] = []
        self.sent = 0
        self.known = len(tokenizer) if tokenizer is not None else 0

    def piece(self, token: int) -> str:
        if token == self.eos:
            return ""
        if self.tokenizer is None or token >= self.known:  # an id the tokenizer has no text for (random
            return (
                self.flush() + f" w{token}"
            )  # weights over a larger vocabulary): a placeholder, as decoder_small
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        new, self.sent = text[self.sent :], len(text)
        return new

    def flush(self) -> str:
        if self.tokenizer is None or not self.ids:
            return ""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        new, self.sent = text[self.sent :], len(text)
        return new


class HFGenerationEngine(GenerationEngine):
    """The catalog decoder's engine with the model's own end-of-sequence token and tokenizer."""

    def __init__(
        self, model: Any, torch: Any, *, max_batch: int, eos_token_id: int | None, tokenizer: Any
    ) -> None:
        super().__init__(model, torch, max_batch=max_batch)
        self.eos_token_id = eos_token_id
        self.tokenizer = tokenizer

    def _admit(self, r: GenerationRequest) -> None:
        r.detok = TokenizerDetokenizer(self.tokenizer, self.eos_token_id)
        super()._admit(r)
