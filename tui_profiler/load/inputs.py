"""Request inputs: what one cell sends, generated and encoded before its load starts.

An `InputSpec` says what kind of input a model takes (an image, token ids, a generic tensor, or text), its
base size, the scale or token length of this cell, and how it travels on the wire (the encoding). The data is
generated deterministically (seeded numpy), so two runs of the same preset send the same bytes. Encoding
happens here, before the clock, and its cost is measured (`EncodedInput.encode_s`) so it can be reported, but
it is never paid per request: the load generator only writes prepared bytes.

Images and tensors: one input a cell, sent by every request (a server that caches answers by input would
be a rare one; a pool of images would cost memory and encoding for nothing). Prompts (token ids, text): one
prompt per request (`prompt_pool`), so a server's prefix cache cannot serve a request from an earlier one:
each prompt is `shared_prefix_tokens` tokens every request of the cell shares (the same for every cell of
that prefix length), then a part of its own. The own part opens with a few tokens that count the request
(from a seeded offset, in base V, V the tokens drawn from), so no two prompts of a cell share more than the
prefix, and goes on with seeded draws; each part is drawn from (seed, cell, request), so a cell's prompts
differ from every other cell's too. A pool holds one prompt per request the cell may send (`pool_size`).

Encodings and what they produce:

| encoding         | body on the wire                               | JSON value (`{input}` in a JSON template)  |
|------------------|------------------------------------------------|--------------------------------------------|
| `raw`            | the array's bytes, `application/octet-stream`, | the array as a nested list                 |
|                  | `X-Tensor-Shape` / `X-Tensor-Dtype` headers    |                                            |
| `png`, `jpeg`    | the encoded image (`image/png`, `image/jpeg`)  | the encoded image as a base64 string       |
| `json`           | the array as a bare JSON list                  | the array as a nested list                 |
| `json-instances` | `{"instances": [...]}` (one per batch item)    | the list of instances                      |
| `base64`         | the array's bytes as base64 text               | the base64 string                          |
| `text`           | UTF-8 text of `token_len` words                | the text string                            |
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tui_profiler.config.model import ALLOWED_ENCODINGS, DTYPES, ENCODINGS, INPUT_DEFAULTS, KINDS, InputConfig

_D = INPUT_DEFAULTS  # the defaults are the preset's (config.model.InputConfig)
HASH_HEX = 12  # the length of input_hash
# A cell that no count of requests bounds (duration-bound, or a stop rule without max_requests) gets this
# many distinct prompts after its warm-up's; its requests cycle through them beyond that (inputs_cycled).
UNBOUNDED_POOL = 1024
# The seed streams of prompts (numpy SeedSequence entropy after the input seed): the shared prefix, each
# request's own part, and the offset its leading count starts from.
_PREFIX_STREAM, _OWN_STREAM, _LEAD_STREAM = 1, 2, 3
# Short, common English words: each is one token in the usual WordPiece / BPE vocabularies, so N words is
# close to N tokens whatever the server's tokenizer.
_WORDS = (
    "the of and to in is was for on that with as by at from his it an were are which this be had not or "
    "but have one first new two their after also its has they all been who more her time other she when "
    "year would into there some can most than only over about many city school part may world later used "
    "three known such during out state people made well up between where both team under then high found"
).split()


@dataclass(frozen=True, slots=True)
class InputSpec:
    """What to send. `base_size` is [H, W] for images, the shape without the batch axis for tensors (the
    scale applies to its last two axes), or [T] (the base token length) for tokens and text."""

    kind: str = _D.kind
    base_size: tuple[int, ...] = tuple(_D.base_size)
    scale: float = 1.0
    token_len: int | None = None  # tokens / text: overrides base length × scale
    channels: int = _D.channels
    dtype: str = _D.dtype
    encoding: str = _D.encoding
    batch: int = _D.batch_size
    seed: int = _D.seed
    jpeg_quality: int = _D.jpeg_quality
    vocab_size: int = _D.vocab_size  # token ids are drawn from [1000, vocab_size) to avoid special tokens
    layout: str = _D.layout  # images as tensors: "chw" (PyTorch) or "hwc" (TensorFlow)

    @classmethod
    def for_cell(
        cls, inp: InputConfig, *, scale: float | None = None, token_len: int | None = None
    ) -> InputSpec:
        """The input of one cell of a preset: its input section at this scale or token length."""
        return cls(
            kind=inp.kind,
            base_size=tuple(inp.base_size),
            scale=scale if scale is not None else 1.0,
            token_len=token_len,
            channels=inp.channels,
            dtype=inp.dtype,
            encoding=inp.encoding,
            batch=inp.batch_size,
            seed=inp.seed,
            jpeg_quality=inp.jpeg_quality,
            vocab_size=inp.vocab_size,
            layout=inp.layout,
        )

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"input.kind: {self.kind!r} — allowed: {', '.join(KINDS)}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"input.encoding: {self.encoding!r} — allowed: {', '.join(ENCODINGS)}")
        if self.encoding not in ALLOWED_ENCODINGS[self.kind]:
            raise ValueError(
                f"input.encoding: {self.encoding!r} — a {self.kind} input allows: "
                f"{', '.join(ALLOWED_ENCODINGS[self.kind])}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"input.dtype: {self.dtype!r} — allowed: {', '.join(DTYPES)}")
        if not self.base_size or any(int(s) < 1 for s in self.base_size):
            raise ValueError(f"input.base_size: {list(self.base_size)!r} — positive integers")
        if self.kind == "image" and len(self.base_size) != 2:
            raise ValueError(f"input.base_size: {list(self.base_size)!r} — an image needs [height, width]")
        if not (self.scale > 0):
            raise ValueError(f"input.scale: {self.scale!r} — a number > 0")
        if self.token_len is not None and int(self.token_len) < 1:
            raise ValueError(f"input.token_len: {self.token_len!r} — an integer >= 1")
        if self.batch < 1:
            raise ValueError(f"input.batch: {self.batch!r} — an integer >= 1")
        if self.layout not in ("chw", "hwc"):
            raise ValueError(f"input.layout: {self.layout!r} — allowed: chw, hwc")
        if self.channels < 1:
            raise ValueError(f"input.channels: {self.channels!r} — an integer >= 1")

    # -- sizes -------------------------------------------------------------------------------------------
    def scaled_hw(self) -> tuple[int, int]:
        """Image height and width after scaling, rounded, each at least 1."""
        h, w = self.base_size[-2], self.base_size[-1]
        return max(1, round(h * self.scale)), max(1, round(w * self.scale))

    @property
    def pixels(self) -> int | None:
        if self.kind not in ("image", "tensor") or len(self.base_size) < 2:
            return None
        h, w = self.scaled_hw()
        return h * w

    @property
    def effective_token_len(self) -> int | None:
        if self.kind not in ("tokens", "text"):
            return None
        if self.token_len is not None:
            return int(self.token_len)
        return max(1, round(self.base_size[0] * self.scale))

    def shape(self) -> tuple[int, ...]:
        """The array shape sent (batch first). Images travel as CHW tensors for raw/JSON encodings."""
        if self.kind == "image":
            h, w = self.scaled_hw()
            if self.layout == "hwc":
                return (self.batch, h, w, self.channels)
            return (self.batch, self.channels, h, w)
        if self.kind == "tensor":
            dims = list(self.base_size)
            if len(dims) >= 2:
                dims[-2], dims[-1] = self.scaled_hw()
            else:
                dims[-1] = max(1, round(dims[-1] * self.scale))
            return (self.batch, *dims)
        return (self.batch, self.effective_token_len or 1)


@dataclass(slots=True)
class EncodedInput:
    """The input of one cell, generated and encoded once."""

    spec: InputSpec
    _body: bytes | None  # what an `input` body sends (see `body`)
    content_type: str
    headers: dict[str, str]
    shape: tuple[int, ...]
    dtype: str
    pixels: int | None
    token_len: int | None
    generate_s: float  # making the data (not a client cost: done once, before any request)
    encode_s: float  # encoding it for the wire (the client-side cost a per-request encoder would pay)
    _array: np.ndarray | None = field(default=None, repr=False)
    _json_value: Any = field(default=None, repr=False)
    _text: str | None = field(default=None, repr=False)

    @property
    def body(self) -> bytes:
        """The encoded input as sent by an `input` body (JSON encodings are dumped on first use)."""
        if self._body is None:
            value = self.json_value()
            doc = {"instances": value} if self.spec.encoding == "json-instances" else value
            t0 = time.perf_counter()
            self._body = json.dumps(doc, separators=(",", ":")).encode()
            self.encode_s += time.perf_counter() - t0
        return self._body

    @property
    def json_encoded(self) -> bool:
        """True when the encoding is a JSON-family one (its value goes into a template's JSON document)."""
        return self.spec.encoding in ("json", "json-instances", "base64", "text")

    def json_value(self) -> Any:
        """The value `{input}` stands for inside a JSON template (see the module table)."""
        if self._json_value is None:
            enc = self.spec.encoding
            if enc in ("png", "jpeg"):
                assert self._body is not None
                self._json_value = base64.b64encode(self._body).decode("ascii")
            elif enc == "base64":
                assert self._body is not None
                self._json_value = self._body.decode("ascii")
            elif enc == "text" or self.spec.kind == "text":
                self._json_value = self._text
            else:
                assert self._array is not None
                self._json_value = self._array.tolist()
        return self._json_value

    def flat_value(self) -> Any:
        """The data as a flat, row-major list (KServe v2 `data`), or the text/base64 string."""
        if self._array is not None and self.spec.encoding not in ("png", "jpeg", "base64"):
            return self._array.reshape(-1).tolist()
        return self.json_value()


@dataclass(slots=True)
class Payload:
    """Everything a request of this cell sends, rendered once: the load generator only writes these bytes."""

    body: bytes
    content_type: str | None
    headers: dict[str, str]
    path: str
    method: str
    model_name: str
    pixels: int | None
    token_len: int | None
    input_scale: float
    shape: tuple[int, ...]
    encoding: str
    generate_s: float
    encode_s: float  # encoding + template rendering, measured once (never paid per request)
    height: int | None = None  # image / tensor height and width after scaling
    width: int | None = None
    # a user's own input (load.sources): its position in the preset's inputs and a short content hash of
    # its source (the file; for text, the line); None for a synthetic input
    input_index: int | None = None
    input_hash: str | None = None

    def as_row(self) -> dict[str, Any]:
        """The input's columns of a requests.csv row."""
        return {
            "input_scale": self.input_scale,
            "pixels": self.pixels,
            "height": self.height,
            "width": self.width,
            "token_len": self.token_len,
            "batch_size": self.shape[0] if self.shape else 1,
            "bytes_sent": len(self.body),
            "body_bytes": len(self.body),
            "input_index": self.input_index,
            "input_hash": self.input_hash,
        }


@dataclass(frozen=True, slots=True)
class PayloadSet:
    """The prepared requests of one cell: one per input, and the order requests take them in.
    `sequential`: request k sends input k mod n; `random`: each pass over the inputs in a new order drawn
    with `seed` (the same run sends the same sequence; no input is sent twice before every one was sent).
    A cell of a synthetic image or tensor has a set of one; a cell of prompts one per request."""

    payloads: tuple[Payload, ...]
    order: str = "sequential"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.payloads:
            raise ValueError("a payload set needs at least one payload")

    @classmethod
    def of(cls, payload: Payload | PayloadSet) -> PayloadSet:
        return payload if isinstance(payload, PayloadSet) else cls((payload,))

    @property
    def first(self) -> Payload:
        return self.payloads[0]

    def chooser(self, start: int = 0) -> Callable[[], int]:
        """A function giving the index of the input each next request sends (cheap: it runs per request).
        `start` shifts the sequence (several client processes each take their own share)."""
        n = len(self.payloads)
        if n == 1:
            return lambda: 0
        counter = itertools.count(start)
        if self.order != "random":
            return lambda: next(counter) % n
        seed = self.seed
        current: list[Any] = [-1, []]  # the pass being sent and its order

        def draw() -> int:
            turn, k = divmod(next(counter), n)
            if turn != current[0]:
                order = list(range(n))
                random.Random(f"{seed}/{turn}").shuffle(order)
                current[:] = [turn, order]
            index: int = current[1][k]
            return index

        return draw

    def common_row(self) -> dict[str, Any]:
        """The input columns every payload agrees on (a cells.csv row's); a column that differs between
        inputs is None there (each request's row has its own value)."""
        rows = [p.as_row() for p in self.payloads]
        first = rows[0]
        return {k: v if all(r[k] == v for r in rows[1:]) else None for k, v in first.items()}


def _image_uint8(spec: InputSpec, rng: np.random.Generator) -> np.ndarray:
    """A deterministic HWC uint8 image: smooth low-frequency content plus mild noise (closer to a photo than
    pure noise, so PNG/JPEG sizes are realistic)."""
    h, w = spec.scaled_hw()
    c = spec.channels
    lh, lw = max(2, h // 32 + 2), max(2, w // 32 + 2)
    low = rng.random((lh, lw, c), dtype=np.float32) * 255.0
    # bilinear upsample of the low-resolution grid with numpy only
    ys = np.linspace(0, lh - 1, h, dtype=np.float32)
    xs = np.linspace(0, lw - 1, w, dtype=np.float32)
    y0 = np.floor(ys).astype(np.int64).clip(0, lh - 2)
    x0 = np.floor(xs).astype(np.int64).clip(0, lw - 2)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    top = low[y0][:, x0] * (1 - fx) + low[y0][:, x0 + 1] * fx
    bottom = low[y0 + 1][:, x0] * (1 - fx) + low[y0 + 1][:, x0 + 1] * fx
    img = top * (1 - fy) + bottom * fy
    img += rng.normal(0.0, 6.0, size=img.shape).astype(np.float32)
    image: np.ndarray = img.clip(0, 255).astype(np.uint8)
    return image


def _words(n: int, rng: np.random.Generator) -> str:
    idx = rng.integers(0, len(_WORDS), size=n)
    return " ".join(_WORDS[i] for i in idx)


def content_hash(data: bytes) -> str:
    """The `input_hash` of an input: the first HASH_HEX hex digits of its SHA-256."""
    return hashlib.sha256(data).hexdigest()[:HASH_HEX]


def pool_size(warmup: int, requests: int | None, max_requests: int | None = None) -> int:
    """How many distinct prompts a cell prepares: one for each request it may send, warm-up included
    (`requests`, else a stop rule's `max_requests`), or warm-up + UNBOUNDED_POOL when no count bounds it."""
    timed = requests if requests is not None else max_requests
    return warmup + (timed if timed is not None else UNBOUNDED_POOL)


def shared_prefix(seed: int, tokens: int, span: int) -> np.ndarray:
    """The common prefix of `tokens` tokens, as numbers in [0, span): drawn from the input seed and the
    length alone, so every cell (and every run) of that prefix length sends the same one."""
    return np.random.default_rng([seed, _PREFIX_STREAM, tokens]).integers(0, span, size=tokens)


def shared_prefix_text(seed: int, words: int) -> str:
    """The common prefix of a text prompt: `words` of the common words (≈ one token each)."""
    return " ".join(_WORDS[i] for i in shared_prefix(seed, words, len(_WORDS)))


def _lead_digits(span: int, rows: int, room: int) -> int:
    """How many leading tokens count the rows of a pool: the fewest whose `span`**n covers `rows`, at most
    `room` (a prompt with less room than that cannot be told apart from every other by its lead)."""
    n = 1
    while span**n < rows and n < room:
        n += 1
    return min(n, room)


@dataclass(frozen=True, slots=True)
class PromptPool:
    """The prompts of one cell (`prompt_pool`): `count` requests of `spec.batch` rows each, every row
    `spec.effective_token_len` tokens: `shared` tokens of the common prefix, then its own. `stream`
    (the cell's index) keeps cells apart."""

    spec: InputSpec
    count: int
    shared: int
    stream: int

    @property
    def as_text(self) -> bool:
        return self.spec.kind == "text" or self.spec.encoding == "text"

    @property
    def span(self) -> int:
        """How many different tokens a prompt is drawn from: the words, or the ids in [1000, vocab_size)."""
        return len(_WORDS) if self.as_text else max(1, self.spec.vocab_size - 1000)

    def prefix(self) -> np.ndarray:
        """The shared prefix as token numbers in [0, span): the same for every cell of this length."""
        return shared_prefix(self.spec.seed, self.shared, self.span)

    def rows(self, k: int, prefix: np.ndarray, lead: tuple[int, int]) -> np.ndarray:
        """Request k's rows as token numbers in [0, span), shape (batch, token_len)."""
        batch, length = self.spec.batch, self.spec.effective_token_len or 1
        own = length - self.shared
        digits, offset = lead
        rng = np.random.default_rng([self.spec.seed, _OWN_STREAM, self.stream, k])
        body = rng.integers(0, self.span, size=(batch, own))
        span = self.span
        for r in range(batch):
            value = (offset + k * batch + r) % span**digits
            for d in range(digits - 1, -1, -1):  # the count in base `span`, its most significant digit first
                value, body[r, d] = divmod(value, span)
        return np.concatenate([np.broadcast_to(prefix, (batch, self.shared)), body], axis=1)

    def __iter__(self) -> Iterator[tuple[EncodedInput, str]]:
        """Each request's input, encoded, with its `input_hash` (of the prompt: its ids or its text)."""
        spec = self.spec
        length = spec.effective_token_len or 1
        digits = _lead_digits(self.span, self.count * spec.batch, length - self.shared)
        offset = int(
            np.random.default_rng([spec.seed, _LEAD_STREAM, self.stream]).integers(
                0, min(self.span**digits, 2**62)
            )
        )
        t0 = time.perf_counter()
        prefix = self.prefix()
        shared_s = time.perf_counter() - t0
        dtype = "int64" if spec.dtype not in ("int64", "int32") else spec.dtype
        for k in range(self.count):
            t0 = time.perf_counter()
            rows = self.rows(k, prefix, (digits, offset))
            if self.as_text:
                text = " ".join(_WORDS[i] for i in rows[0])  # text: one prompt a request
                generate_s = time.perf_counter() - t0 + shared_s
                yield encode_data(spec, text=text, generate_s=generate_s), content_hash(text.encode())
            else:
                array = (rows + 1000).astype(dtype)
                generate_s = time.perf_counter() - t0 + shared_s
                yield encode_data(spec, array=array, generate_s=generate_s), content_hash(array.tobytes())


def prompt_pool(spec: InputSpec, count: int, *, shared_prefix_tokens: int = 0, stream: int = 0) -> PromptPool:
    """`count` distinct prompts of `spec` (kind tokens or text), each `shared_prefix_tokens` tokens of a
    common prefix then its own (see the module docstring); the prefix is cut to leave each prompt one token
    of its own. Iterate it for each request's encoded input and hash, made one at a time."""
    if spec.kind not in ("tokens", "text"):
        raise ValueError(f"input.kind: {spec.kind!r} — a prompt pool is for 'tokens' or 'text'")
    length = spec.effective_token_len or 1
    shared = max(0, min(int(shared_prefix_tokens), length - 1))
    return PromptPool(spec, max(1, int(count)), shared, int(stream))


def encode_input(spec: InputSpec) -> EncodedInput:
    """Generate the cell's data deterministically and encode it once (the encode time is measured)."""
    rng = np.random.default_rng(spec.seed)
    t0 = time.perf_counter()
    if spec.kind == "image":
        return encode_data(spec, image=_image_uint8(spec, rng), generate_s=time.perf_counter() - t0)
    array: np.ndarray | None = None
    text: str | None = None
    shape = spec.shape()
    if spec.kind == "tensor":
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            array = rng.integers(0, 256, size=shape).astype(spec.dtype)
        else:
            array = rng.random(shape, dtype=np.float64).astype(spec.dtype)
    elif spec.kind == "tokens":
        dtype = "int64" if spec.dtype not in ("int64", "int32") else spec.dtype
        if spec.encoding == "text":
            text = _words(spec.effective_token_len or 1, rng)
        else:
            array = rng.integers(1000, max(1001, spec.vocab_size), size=shape).astype(dtype)
    else:  # text
        text = _words(spec.effective_token_len or 1, rng)
    return encode_data(spec, array=array, text=text, generate_s=time.perf_counter() - t0)


def encode_data(
    spec: InputSpec,
    *,
    image: np.ndarray | None = None,
    array: np.ndarray | None = None,
    text: str | None = None,
    generate_s: float = 0.0,
) -> EncodedInput:
    """Encode one input's data for the wire as `spec.encoding` says (the encode time is measured): an
    HWC uint8 `image` of `spec.scaled_hw()` (generated, or a user's photo resized), an `array` (tensors,
    token ids) or a `text`. Synthetic and users' own inputs share this one encoder."""
    shape = spec.shape()
    dtype = spec.dtype
    if spec.kind == "tokens":
        dtype = "int64" if spec.dtype not in ("int64", "int32") else spec.dtype
    if image is not None and spec.encoding not in ("png", "jpeg"):
        t0 = time.perf_counter()  # the image as a tensor of the batch: part of making the data
        one = image if spec.layout == "hwc" else np.ascontiguousarray(image.transpose(2, 0, 1))
        if spec.dtype == "uint8":
            array = np.broadcast_to(one, shape).copy()
        else:
            scaled = one.astype(spec.dtype) / np.asarray(255.0, dtype=spec.dtype)
            array = np.broadcast_to(scaled, shape).copy()
        generate_s += time.perf_counter() - t0

    t1 = time.perf_counter()
    headers: dict[str, str] = {}
    json_value: Any = None
    enc = spec.encoding
    body: bytes | None
    if enc == "raw":
        assert array is not None
        body = array.tobytes()
        content_type = "application/octet-stream"
        headers = {
            "X-Tensor-Shape": ",".join(str(d) for d in array.shape),
            "X-Tensor-Dtype": str(array.dtype),
        }
    elif enc in ("png", "jpeg"):
        from PIL import Image

        assert image is not None
        pil = Image.fromarray(image if spec.channels != 1 else image[:, :, 0])
        buf = io.BytesIO()
        if enc == "png":
            pil.save(buf, format="PNG", compress_level=1)  # fast level: the server decodes, not us
        else:
            pil.save(buf, format="JPEG", quality=spec.jpeg_quality)
        body = buf.getvalue()
        content_type = f"image/{enc}"
        dtype = "uint8"
    elif enc in ("json", "json-instances"):
        # The bare document is dumped lazily (`EncodedInput.body`): a template usually wraps the value, and
        # dumping it here too would double the encode cost.
        if text is not None:
            json_value = text
        else:
            assert array is not None
            json_value = array.tolist()
        body = None
        content_type = "application/json"
    elif enc == "base64":
        assert array is not None
        body = base64.b64encode(array.tobytes())
        json_value = body.decode("ascii")
        content_type = "text/plain"
    else:  # text
        assert text is not None
        body = text.encode()
        json_value = text
        content_type = "text/plain; charset=utf-8"
    encode_s = time.perf_counter() - t1
    return EncodedInput(
        spec=spec,
        _body=body,
        content_type=content_type,
        headers=headers,
        shape=tuple(int(d) for d in shape),
        dtype=dtype,
        pixels=spec.pixels,
        token_len=spec.effective_token_len,
        generate_s=generate_s,
        encode_s=encode_s,
        _array=array,
        _json_value=json_value,
        _text=text,
    )
