"""Users' own inputs: the files a preset names in `[input] files` or `folder`, checked before anything
starts and prepared, one cell at a time, into the requests the load generator sends.

Three kinds of file:
- `kind = "image"`: any image Pillow reads. Each is resized by the cell's scale from its OWN size (a
  667×1000 photo at scale 0.5 is sent at 334×500), then encoded as `input.encoding` says by the same
  encoder as synthetic images (`load.inputs.encode_data`: raw tensor, PNG, JPEG, JSON, base64).
- `kind = "text"`: a text file (one prompt or document a line; blank lines skipped) or a JSONL file
  (`.jsonl` / `.ndjson`: one JSON object a line, its `text` or else its `prompt` field). Each line is one
  input. With `token_lens` each is cut or padded (with its own words again) to that many words, the
  token approximation the synthetic text uses; without, it is sent as written. With
  `shared_prefix_tokens`, the synthetic prefix of that many words (the same as generated prompts have)
  comes first and the line fills the rest of the length.
- `kind = "body"`: each file is a whole request body, sent byte for byte with `input.content_type` (or the
  type its extension says, else application/octet-stream).

Checks (`open_sources`, called when a sweep is built, before any container starts): a missing, unreadable
or empty file or folder, a file Pillow cannot read, a text file with no line, a JSONL line without a
string `text`/`prompt` field: each is a one-line PresetError naming the field (`input.files[2]`).

Each input has an index (its position: file order, or line order across the files for text) and a short
hash of its content (12 hex digits of SHA-256: of the file, or of the line for text); both go into every
request row (`input_index`, `input_hash`). A cell with more requests than inputs sends them again in turn
(or, `order = "random"`, each pass in a new order); its cells.csv row says so (`distinct_inputs`,
`inputs_cycled`).

Memory: a cell's inputs are prepared before its load starts, so encoding is never in the timed path; only
one cell's are held at a time. A source image is decoded, resized and encoded one file at a time and not
kept (bodies and text lines are held, being the inputs themselves); when the prepared requests of a cell
would pass `input.max_prepared_mb`, preparing stops with an error and the cell fails with that reason.
"""

from __future__ import annotations

import json
import mimetypes
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tui_profiler.config.errors import PresetError
from tui_profiler.config.model import Preset
from tui_profiler.errors import ProfilerError
from tui_profiler.load.inputs import (
    HASH_HEX,
    EncodedInput,
    InputSpec,
    PayloadSet,
    content_hash,
    encode_data,
    shared_prefix_text,
)
from tui_profiler.load.template import RequestTemplate

__all__ = ["HASH_HEX", "content_hash"]  # the hash is the inputs' (load.inputs); named here too
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TEXT_FIELDS = ("text", "prompt")  # the keys a JSONL line may hold its text under, in this order
DEFAULT_BODY_TYPE = "application/octet-stream"
_MIB = 1024 * 1024


class InputsTooLarge(ProfilerError, ValueError):
    """A cell's prepared inputs would pass `input.max_prepared_mb`."""


@dataclass(frozen=True, slots=True)
class SourceInput:
    """One user input: where it came from, its index and content hash, and (text, bodies) its content.
    Images keep only their path and size: they are decoded when a cell is prepared."""

    index: int
    path: Path
    digest: str  # HASH_HEX hex digits of SHA-256
    line: int | None = None  # text: the line number in its file (1-based)
    text: str | None = None
    body: bytes | None = None
    size: tuple[int, int] | None = None  # image: (height, width) as stored


@dataclass(frozen=True, slots=True)
class InputSources:
    """The checked inputs of a preset (`open_sources`), ready to prepare for each cell."""

    kind: str
    inputs: tuple[SourceInput, ...]
    order: str
    seed: int
    content_type: str
    max_prepared_bytes: int

    def __len__(self) -> int:
        return len(self.inputs)

    def prepare(
        self,
        preset: Preset,
        template: RequestTemplate,
        model_name: str,
        *,
        scale: float | None = None,
        token_len: int | None = None,
        output_len: int | None = None,
        shared_prefix_tokens: int = 0,
    ) -> PayloadSet:
        """Every request of one cell, rendered by `template`: one payload per input, in index order (text:
        after `shared_prefix_tokens` words of the common prefix). Raises InputsTooLarge past the memory
        bound, ValueError/OSError for a file that became unreadable."""
        payloads = []
        total = 0
        for item in self.inputs:
            encoded = self._encode(preset, item, scale, token_len, shared_prefix_tokens)
            payload = template.prepare(encoded, model_name=model_name, output_len=output_len)
            if self.kind == "body":  # sent byte for byte, with its own type
                payload = replace(payload, content_type=encoded.content_type)
            payload = replace(payload, input_index=item.index, input_hash=item.digest)
            total += len(payload.body)
            if total > self.max_prepared_bytes:
                raise InputsTooLarge(
                    f"input.max_prepared_mb: the cell's inputs pass {self.max_prepared_bytes / _MIB:g} MiB "
                    f"at input {item.index} of {len(self.inputs)} ({item.path.name}); raise it or use fewer files"
                )
            payloads.append(payload)
        return PayloadSet(tuple(payloads), order=self.order, seed=self.seed)

    def _encode(
        self,
        preset: Preset,
        item: SourceInput,
        scale: float | None,
        token_len: int | None,
        shared_prefix_tokens: int = 0,
    ) -> EncodedInput:
        inp = preset.input
        if self.kind == "body":
            assert item.body is not None
            return EncodedInput(
                spec=InputSpec(kind="body", base_size=(1,), encoding="raw", batch=1),
                _body=item.body,
                content_type=self.content_type or guess_content_type(item.path),
                headers={},
                shape=(),
                dtype="",
                pixels=None,
                token_len=None,
                generate_s=0.0,
                encode_s=0.0,
            )
        if self.kind == "text":
            assert item.text is not None
            shared = (
                shared_prefix_tokens
                if token_len is None
                else max(0, min(shared_prefix_tokens, token_len - 1))
            )
            own = token_len - shared if token_len is not None else None
            text = fit_words(item.text, own) if own is not None else item.text
            if shared:
                text = f"{shared_prefix_text(inp.seed, shared)} {text}"
            spec = InputSpec.for_cell(inp, token_len=max(1, len(text.split())))
            return encode_data(spec, text=text)
        t0 = time.perf_counter()
        image = load_image(item.path, inp.channels)
        h0, w0 = image.shape[0], image.shape[1]
        spec = replace(InputSpec.for_cell(inp, scale=scale), base_size=(h0, w0))
        image = resize_image(image, spec.scaled_hw())
        return encode_data(spec, image=image, generate_s=time.perf_counter() - t0)


# ------------------------------------------------------------------------------------ images and text


def _pil(source: str = "input") -> Any:
    """Pillow's Image module (imported only when a preset's inputs are image files)."""
    try:
        from PIL import Image
    except ImportError:
        raise PresetError(
            source, "input.kind", "image", "images from files need Pillow: pip install 'tui-profiler[server]'"
        ) from None
    return Image


def load_image(path: Path, channels: int) -> np.ndarray:
    """The image as HWC uint8 with `channels` channels (1: grey, 3: RGB, 4: RGBA), EXIF rotation applied."""
    image_mod = _pil()
    from PIL import ImageOps

    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:
        raise ValueError(f"input.channels: {channels} — images from files have 1, 3 or 4 channels")
    with image_mod.open(path) as im:
        im = ImageOps.exif_transpose(im)
        array = np.asarray(im.convert(mode))
    return array[:, :, None] if array.ndim == 2 else array


def resize_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize an HWC uint8 image to (height, width) with Pillow's bicubic filter (as torchvision's and the
    AC-Prof seed's resizes do); the same size is returned as is."""
    h, w = hw
    if image.shape[:2] == (h, w):
        return image
    image_mod = _pil()
    grey = image.shape[2] == 1
    pil = image_mod.fromarray(image[:, :, 0] if grey else image)
    out = np.asarray(pil.resize((w, h), image_mod.Resampling.BICUBIC))
    return out[:, :, None] if grey else out


def fit_words(text: str, n: int) -> str:
    """`text` cut to `n` words, or padded to `n` with its own words again (words stand for tokens, as
    in the synthetic text)."""
    words = text.split()
    if not words:
        return text
    if len(words) >= n:
        return " ".join(words[:n])
    return " ".join(words[i % len(words)] for i in range(n))


def guess_content_type(path: Path) -> str:
    """The Content-Type a body file's extension says (`.json` → application/json), else octet-stream."""
    if path.suffix.lower() in JSONL_SUFFIXES:
        return "application/x-ndjson"
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or DEFAULT_BODY_TYPE


# ------------------------------------------------------------------------------------ checking the files


def source_paths(preset: Preset) -> list[tuple[str, str, Path]]:
    """(field, as written, resolved path) of each input file, in order. Relative paths are relative to the
    preset file (like `target.dockerfile`), or to the working folder for a preset not read from a file.
    A folder's files are sorted by name; hidden files are skipped."""
    inp = preset.input
    here = preset.path.parent if preset.path else Path.cwd()
    source = preset.source
    if inp.files:
        many = len(inp.files) > 1  # a list of one is named without an index, as in every preset error
        return [
            (f"input.files[{i}]" if many else "input.files", f, here / Path(f).expanduser())
            for i, f in enumerate(inp.files)
        ]
    folder = here / Path(inp.folder).expanduser()
    if not folder.exists():
        raise PresetError(source, "input.folder", inp.folder, "not found")
    if not folder.is_dir():
        raise PresetError(source, "input.folder", inp.folder, "not a folder")
    try:
        names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except OSError as exc:
        raise PresetError(source, "input.folder", inp.folder, f"unreadable ({exc.strerror or exc})") from None
    found = [
        (f"input.folder[{i}]", str(Path(inp.folder) / n), folder / n)
        for i, n in enumerate(n for n in names if (folder / n).is_file())
    ]
    if not found:
        raise PresetError(source, "input.folder", inp.folder, "empty (no file in it)")
    return found


def absolute_paths(preset: Preset) -> dict[str, Any]:
    """The preset's `files` or `folder` as absolute paths (for meta.json: a resumed session reads its preset
    from there, far from the preset file its relative paths were relative to)."""
    inp = preset.input
    here = preset.path.parent if preset.path else Path.cwd()
    if inp.files:
        return {"files": [str((here / Path(f).expanduser()).resolve()) for f in inp.files]}
    if inp.folder:
        return {"folder": str((here / Path(inp.folder).expanduser()).resolve())}
    return {}


def _read(source: str, fieldname: str, written: str, path: Path) -> bytes:
    if not path.exists():
        raise PresetError(source, fieldname, written, "not found")
    if path.is_dir():
        raise PresetError(source, fieldname, written, "a folder, not a file (use input.folder)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PresetError(source, fieldname, written, f"unreadable ({exc.strerror or exc})") from None
    if not data:
        raise PresetError(source, fieldname, written, "empty")
    return data


def _text_lines(source: str, fieldname: str, written: str, path: Path, data: bytes) -> list[tuple[int, str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PresetError(source, fieldname, written, "not UTF-8 text") from None
    jsonl = path.suffix.lower() in JSONL_SUFFIXES
    lines: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if not jsonl:
            lines.append((number, line.strip()))
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            raise PresetError(source, fieldname, written, f"line {number}: not JSON") from None
        value = next((doc[k] for k in TEXT_FIELDS if isinstance(doc, dict) and k in doc), None)
        if not isinstance(value, str) or not value.strip():
            raise PresetError(
                source,
                fieldname,
                written,
                f"line {number}: needs a non-empty string field 'text' or 'prompt'",
            )
        lines.append((number, value))
    if not lines:
        raise PresetError(source, fieldname, written, "no line of text in it")
    return lines


def open_sources(preset: Preset) -> InputSources | None:
    """Check every input file of the preset and read what is cheap to hold (text lines, bodies, image
    sizes); None for a preset of synthetic inputs. Raises a one-line PresetError for the first bad file."""
    inp = preset.input
    if not inp.has_sources:
        return None
    source = preset.source
    if inp.kind == "body":
        from tui_profiler.load.template import template_for

        body = template_for(preset).body
        if body != "input":
            raise PresetError(
                source,
                "input.kind",
                "body",
                f"a body file is sent as is: the template's body must be 'input' (not {body!r})",
            )
    inputs: list[SourceInput] = []
    for fieldname, written, path in source_paths(preset):
        data = _read(source, fieldname, written, path)
        if inp.kind == "text":
            for number, line in _text_lines(source, fieldname, written, path, data):
                digest = content_hash(line.encode())
                inputs.append(SourceInput(len(inputs), path, digest, line=number, text=line))
        elif inp.kind == "body":
            inputs.append(SourceInput(len(inputs), path, content_hash(data), body=data))
        else:
            inputs.append(
                SourceInput(
                    len(inputs), path, content_hash(data), size=_image_size(source, fieldname, written, path)
                )
            )
    return InputSources(
        kind=inp.kind,
        inputs=tuple(inputs),
        order=inp.order,
        seed=inp.seed,
        content_type=inp.content_type,
        max_prepared_bytes=int(inp.max_prepared_mb * _MIB),
    )


def _image_size(source: str, fieldname: str, written: str, path: Path) -> tuple[int, int]:
    image_mod = _pil(source)
    try:
        with image_mod.open(path) as im:
            im.verify()  # the file's structure, without decoding every pixel
            width, height = im.size
    except image_mod.UnidentifiedImageError:
        raise PresetError(source, fieldname, written, "not an image Pillow can read") from None
    except Exception as exc:  # a damaged image: Pillow raises SyntaxError, OSError, ValueError...
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise PresetError(source, fieldname, written, f"not an image Pillow can read ({why})") from None
    return int(height), int(width)
