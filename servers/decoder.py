"""`decoder_small`: a GPT-2-small-sized decoder written in torch.nn, with a KV cache, a byte-level
tokenizer, and the generation engine that serves it.

Model: 12 layers, 12 heads, d_model 768, MLP 3072, learned positions up to 2048 tokens, vocabulary 50257
(GPT-2's size; the output head is tied to the token embedding), random weights: ~124 M parameters,
~0.5 GB in float32. Nothing is downloaded.

Tokenizer (byte-level, no merges shipped): text is its UTF-8 bytes, one token per byte (ids 0–255);
id 50256 is `<|endoftext|>` (end of sequence, as in GPT-2). Token-id prompts may use any id below 50257;
ids 256–50255 have no byte string, so they decode to a placeholder word (" w<id>") to keep streamed text
readable. The compute depends only on the token count.

KV cache: one per sequence, allocated when the sequence is admitted, sized for its prompt plus its
`max_tokens` (capped at the context): 2 (K and V) × 12 layers × 768 × 4 bytes = 73,728 bytes (72 KiB)
per token in float32 — 1024 + 32 tokens take 76 MiB, and four of them 304 MiB.

Scheduling (`GenerationEngine`, one thread): requests wait in arrival order (FIFO). Each turn of its loop
admits every waiting request while fewer than `max_batch` sequences are active and runs its prefill (one
forward pass over the prompt, alone), then runs ONE decode step for all active sequences together: the
weight-heavy matrix products (QKV, projections, MLP, output head) are batched across sequences, attention
runs per sequence against its own cache. A sequence leaves when it has its tokens; a request beyond
`max_batch` waits its turn. So concurrent requests are batched at the decode step (continuous batching),
and prefills are not batched.

Prefix cache (`PrefixCache`, off by default; `--prefix-cache` in the server), keyed the way vLLM's automatic
prefix caching is: a prompt is cut into blocks of `PREFIX_BLOCK_TOKENS` tokens; each full block is keyed by a
hash of its tokens and of its parent block's key, so one key names a whole token prefix. At admission the
longest run of cached blocks from the prompt's start (leaving at least one token, whose logits start the
answer) is copied into the sequence's cache and only the rest is prefilled; after the prefill the prompt's
full blocks that were not cached are stored. Memory is bounded: least recently used blocks leave first.
Unlike vLLM's paged KV the blocks are copied into each sequence's own contiguous cache (the copy is part of
the measured prefill); generated tokens are not cached.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The model's shape (GPT-2 small's, with a 2048-token context).
DECODER_SMALL: dict[str, int] = {
    "layers": 12,
    "hidden": 768,
    "heads": 12,
    "ffn": 3072,
    "vocab": 50257,
    "max_tokens": 2048,
}
EOS_ID = 50256
EOS_TEXT = "<|endoftext|>"
BYTE_TOKENS = 256
PREFIX_BLOCK_TOKENS = 16  # tokens per prefix-cache block (vLLM's default block size)
log = logging.getLogger("model_server")


def kv_bytes_per_token(shape: dict[str, int] = DECODER_SMALL, dtype_bytes: int = 4) -> int:
    """Bytes of KV cache one token holds: K and V, every layer, the full model width."""
    return 2 * shape["layers"] * shape["hidden"] * dtype_bytes


# ---------------------------------------------------------------- tokenizer


def encode_text(text: str) -> list[int]:
    """Byte-level: one token per UTF-8 byte."""
    return list(text.encode("utf-8"))


class Detokenizer:
    """Token ids → text, incrementally: a multi-byte UTF-8 character split over tokens is held back until
    it is whole, so every streamed piece is valid text."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def piece(self, token: int) -> str:
        if token == EOS_ID:
            return ""
        if token >= BYTE_TOKENS:
            return self.flush() + f" w{token}"
        self._pending.append(token)
        try:
            text = self._pending.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data" and len(self._pending) < 4:
                return ""  # the rest of the character is still to come
            text = self._pending.decode("utf-8", errors="replace")
        self._pending.clear()
        return text

    def flush(self) -> str:
        text = self._pending.decode("utf-8", errors="replace")
        self._pending.clear()
        return text


# ---------------------------------------------------------------- the model (torch from here on)


def build_decoder(*, layers: int, hidden: int, heads: int, ffn: int, vocab: int, max_tokens: int) -> Any:
    """The decoder in eval mode, random weights (GPT-2's initialisation scale)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    head_dim = hidden // heads

    class KVCache:
        """One sequence's keys and values for every layer: (layers, heads, capacity, head_dim) each."""

        def __init__(self, capacity: int, device: Any, dtype: Any) -> None:
            self.k = torch.empty(layers, heads, capacity, head_dim, device=device, dtype=dtype)
            self.v = torch.empty(layers, heads, capacity, head_dim, device=device, dtype=dtype)
            self.length = 0
            self.capacity = capacity

        @property
        def nbytes(self) -> int:
            return int(self.k.numel() * self.k.element_size() * 2)

    class Block(nn.Module):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index
            self.ln1 = nn.LayerNorm(hidden)
            self.qkv = nn.Linear(hidden, 3 * hidden)
            self.proj = nn.Linear(hidden, hidden)
            self.ln2 = nn.LayerNorm(hidden)
            self.fc = nn.Linear(hidden, ffn)
            self.out = nn.Linear(ffn, hidden)

        def forward(self, x: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            rows = []
            for i, cache in enumerate(caches):  # attention per sequence, against its own cache
                start = cache.length
                cache.k[self.index, :, start : start + t] = k[i]
                cache.v[self.index, :, start : start + t] = v[i]
                keys = cache.k[self.index, :, : start + t].unsqueeze(0)
                values = cache.v[self.index, :, : start + t].unsqueeze(0)
                # a prompt from 0 is causal; one new token attends to everything before it; a prompt's rest
                # after a cached prefix: new token j sees the prefix and new tokens 0..j
                mask = None
                if t > 1 and start > 0:
                    mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(start)
                rows.append(
                    F.scaled_dot_product_attention(
                        q[i : i + 1], keys, values, attn_mask=mask, is_causal=t > 1 and start == 0
                    )
                )
            a = torch.cat(rows, 0).transpose(1, 2).reshape(b, t, hidden)
            x = x + self.proj(a)
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.max_tokens = max_tokens
            self.vocab = vocab
            self.tokens = nn.Embedding(vocab, hidden)
            self.positions = nn.Embedding(max_tokens, hidden)
            self.blocks = nn.ModuleList(Block(i) for i in range(layers))
            self.norm = nn.LayerNorm(hidden)
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = (
                        0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "out.weight")) else 0.02
                    )
                    nn.init.normal_(p, 0.0, std)

        def new_cache(self, capacity: int) -> KVCache:
            p = self.tokens.weight
            return KVCache(min(capacity, max_tokens), p.device, p.dtype)

        def step(self, ids: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
            """Run `ids` (B, T) through the model, appending to each row's cache; the last position's
            logits (B, vocab)."""
            t = ids.shape[1]
            pos = torch.stack([torch.arange(c.length, c.length + t, device=ids.device) for c in caches])
            x = self.tokens(ids) + self.positions(pos)
            for block in self.blocks:
                x = block(x, caches)
            for c in caches:
                c.length += t
            return self.norm(x[:, -1]) @ self.tokens.weight.T

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            """A prefill of each row with a fresh cache (what /predict runs): last-position logits."""
            caches = [self.new_cache(ids.shape[1]) for _ in range(ids.shape[0])]
            return torch.cat([self.step(ids[i : i + 1], [caches[i]]) for i in range(ids.shape[0])], 0)

    return Decoder()


# ---------------------------------------------------------------- prefix cache


def block_keys(tokens: list[int], block_tokens: int = PREFIX_BLOCK_TOKENS) -> list[bytes]:
    """The key of each full block of `tokens`: a hash of the block's tokens and of its parent's key, so
    equal keys mean equal prefixes (vLLM's automatic prefix caching keys blocks this way)."""
    keys: list[bytes] = []
    parent = b""
    for end in range(block_tokens, len(tokens) + 1, block_tokens):
        block = ",".join(map(str, tokens[end - block_tokens : end])).encode()
        parent = hashlib.blake2b(parent + b"|" + block, digest_size=16).digest()
        keys.append(parent)
    return keys


class PrefixCache:
    """Cached KV blocks by key, least recently used first out once `capacity_blocks` are held. The values
    are opaque here (the engine stores each block's keys and values); the counters are for /info."""

    def __init__(self, *, capacity_blocks: int, block_tokens: int = PREFIX_BLOCK_TOKENS) -> None:
        self.block_tokens = block_tokens
        self.capacity_blocks = max(0, capacity_blocks)
        self._blocks: OrderedDict[bytes, Any] = OrderedDict()
        self.lookups = 0
        self.hit_tokens = 0
        self.evicted_blocks = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def longest_prefix(self, keys: list[bytes]) -> list[Any]:
        """The cached blocks of the longest run of `keys` from the start (each one becomes most recent)."""
        found = []
        for key in keys:
            block = self._blocks.get(key)
            if block is None:
                break
            self._blocks.move_to_end(key)
            found.append(block)
        self.lookups += 1
        self.hit_tokens += len(found) * self.block_tokens
        return found

    def __contains__(self, key: bytes) -> bool:
        return key in self._blocks

    def store(self, key: bytes, block: Any) -> None:
        if self.capacity_blocks == 0:
            return
        self._blocks[key] = block
        self._blocks.move_to_end(key)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)
            self.evicted_blocks += 1

    def stats(self) -> dict[str, int]:
        return {
            "block_tokens": self.block_tokens,
            "capacity_blocks": self.capacity_blocks,
            "blocks": len(self._blocks),
            "lookups": self.lookups,
            "hit_tokens": self.hit_tokens,
            "evicted_blocks": self.evicted_blocks,
        }


# ---------------------------------------------------------------- generation


@dataclass
class GenerationRequest:
    """One completion to generate. `emit` is called from the engine thread with each event: one
    ("token", id, text piece) per generated token (the piece may be empty: a byte held back, or the end of
    sequence), then ("done", finish_reason, timings) — or ("error", message, None)."""

    prompt: list[int]
    max_tokens: int
    emit: Callable[[tuple[str, Any, Any]], None]
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    t_submit: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    # the engine's own bookkeeping
    cache: Any = None
    generator: Any = None
    detok: Detokenizer = field(default_factory=Detokenizer)
    generated: int = 0
    last_token: int = 0
    t_prefill_start: float = 0.0
    t_first_token: float = 0.0
    prefill_cpu_s: float = 0.0
    decode_cpu_s: float = 0.0
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    prefill_tokens: int = 0  # prompt tokens run through the model (the rest)


class GenerationEngine:
    """The scheduler thread of the module docstring. `submit` is thread-safe; events go out via `emit`."""

    def __init__(
        self, model: Any, torch: Any, *, max_batch: int = 8, prefix_cache: PrefixCache | None = None
    ) -> None:
        self.model = model
        self.torch = torch
        self.max_batch = max(1, max_batch)
        self.prefix_cache = prefix_cache
        self.eos_token_id: int | None = EOS_ID  # the model's end of sequence (None: it has none)
        self._inbox: queue.SimpleQueue[GenerationRequest | None] = queue.SimpleQueue()
        self._waiting: deque[GenerationRequest] = deque()
        self._active: list[GenerationRequest] = []
        self._thread: threading.Thread | None = None
        self.peak_active = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="generation", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(None)

    def submit(self, request: GenerationRequest) -> None:
        self._inbox.put(request)

    def occupancy(self) -> tuple[int, int, int]:
        """(sequences running, requests waiting, tokens in the running sequences' KV caches), read now from
        another thread (the /metrics route): a moment's view, good enough for a gauge."""
        active = list(self._active)
        waiting = len(self._waiting) + self._inbox.qsize()
        tokens = sum(r.cache.length for r in active if r.cache is not None)
        return len(active), waiting, tokens

    def generate(self, request: GenerationRequest) -> None:
        """Run one request to completion in the calling thread (warm-up, before the engine starts)."""
        self._admit(request)
        while request in self._active:
            self._decode_step()

    # -- the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            if not self._active and not self._waiting:
                item = self._inbox.get()  # idle: block until a request comes
                if item is None:
                    return
                self._waiting.append(item)
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    return
                self._waiting.append(item)
            while self._waiting and len(self._active) < self.max_batch:
                r = self._waiting.popleft()
                try:
                    self._admit(r)
                except Exception as exc:  # a model failure: fail this request, keep serving
                    self._fail([r], exc)
            if self._active:
                try:
                    self._decode_step()
                except Exception as exc:
                    self._fail(self._active, exc)

    def _fail(self, requests: list[GenerationRequest], exc: Exception) -> None:
        log.exception("generation failed")
        for r in list(requests):
            r.emit(("error", f"generation failed: {type(exc).__name__}: {exc}", None))
            r.cache = None
            if r in self._active:
                self._active.remove(r)

    def _admit(self, r: GenerationRequest) -> None:
        torch = self.torch
        if r.cancelled:
            return
        r.t_prefill_start = time.perf_counter()
        cpu0 = time.process_time()
        with torch.inference_mode():
            r.cache = self.model.new_cache(len(r.prompt) + r.max_tokens)
            if r.temperature > 0:
                r.generator = torch.Generator(device=r.cache.k.device)
                r.generator.manual_seed(
                    r.seed if r.seed is not None else int.from_bytes(_random_bytes(), "big")
                )
            keys = block_keys(r.prompt) if self.prefix_cache is not None else []
            self._reuse_prefix(r, keys)
            ids = torch.tensor([r.prompt[r.cached_tokens :]], dtype=torch.long, device=r.cache.k.device)
            r.prefill_tokens = ids.shape[1]
            logits = self.model.step(ids, [r.cache])
            self._store_prefix(r, keys)
            token = self._sample(logits[0], r)
        r.prefill_cpu_s = time.process_time() - cpu0
        r.t_first_token = time.perf_counter()
        self._active.append(r)
        self.peak_active = max(self.peak_active, len(self._active))
        self._deliver(r, token)

    def _reuse_prefix(self, r: GenerationRequest, keys: list[bytes]) -> None:
        """Copy the longest cached block prefix into the new sequence's cache, leaving at least the prompt's
        last token to prefill (its logits give the first token)."""
        cache = self.prefix_cache
        if cache is None:
            return
        usable = (len(r.prompt) - 1) // cache.block_tokens
        blocks = cache.longest_prefix(keys[:usable])
        if not blocks:
            return
        n = len(blocks) * cache.block_tokens
        r.cache.k[:, :, :n] = self.torch.cat([k for k, _ in blocks], dim=2)
        r.cache.v[:, :, :n] = self.torch.cat([v for _, v in blocks], dim=2)
        r.cache.length = n
        r.cached_tokens = n

    def _store_prefix(self, r: GenerationRequest, keys: list[bytes]) -> None:
        """Store the prompt's full blocks the cache does not hold yet (copies: the sequence's cache is
        freed when it ends)."""
        cache = self.prefix_cache
        if cache is None:
            return
        b = cache.block_tokens
        for i, key in enumerate(keys):
            if key in cache:
                continue
            span = slice(i * b, (i + 1) * b)
            cache.store(key, (r.cache.k[:, :, span].clone(), r.cache.v[:, :, span].clone()))

    def _decode_step(self) -> None:
        torch = self.torch
        batch = [r for r in self._active if not r.cancelled]
        self._active = list(batch)  # a finished sequence leaves _active while `batch` is walked
        if not batch:
            return
        cpu0 = time.process_time()
        with torch.inference_mode():
            ids = torch.tensor(
                [[r.last_token] for r in batch], dtype=torch.long, device=batch[0].cache.k.device
            )
            logits = self.model.step(ids, [r.cache for r in batch])
            tokens = [self._sample(logits[i], r) for i, r in enumerate(batch)]
        share = (time.process_time() - cpu0) / len(batch)  # the step's CPU, shared equally
        for r, token in zip(batch, tokens, strict=True):
            r.decode_cpu_s += share
            self._deliver(r, token)

    def _sample(self, logits: Any, r: GenerationRequest) -> int:
        torch = self.torch
        eos = self.eos_token_id
        no_eos_yet = r.ignore_eos or r.generated < r.min_tokens
        if no_eos_yet and eos is not None and 0 <= eos < logits.shape[-1]:
            logits = logits.clone()
            logits[eos] = -math.inf
        if r.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / r.temperature, -1)
        if r.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(0) - sorted_p < r.top_p
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=r.generator))

    def _deliver(self, r: GenerationRequest, token: int) -> None:
        r.generated += 1
        r.last_token = token
        finish = None
        if self.eos_token_id is not None and token == self.eos_token_id and not r.ignore_eos:
            finish = "stop"
        elif r.generated >= r.max_tokens or r.cache.length >= r.cache.capacity:
            finish = "length"
        piece = r.detok.piece(token)
        if finish is not None:
            piece += r.detok.flush()  # the last piece carries any held-back bytes
        r.emit(("token", token, piece))
        if finish is None:
            return
        now = time.perf_counter()
        timings = {
            "queue_s": r.t_prefill_start - r.t_submit,
            "prefill_s": r.t_first_token - r.t_prefill_start,
            "decode_s": now - r.t_first_token,
            "prefill_cpu_s": r.prefill_cpu_s,
            "decode_cpu_s": r.decode_cpu_s,
            "prompt_tokens": len(r.prompt),
            "cached_tokens": r.cached_tokens,
            "prefill_tokens": r.prefill_tokens,
            "completion_tokens": r.generated,
            "kv_cache_bytes": r.cache.nbytes,
        }
        r.cache = None  # free the cache now, not when the handler lets go of the request
        if r in self._active:
            self._active.remove(r)
        r.emit(("done", finish, timings))


def _random_bytes() -> bytes:
    import os

    return os.urandom(7)
