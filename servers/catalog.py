"""The model catalog: which models the server can load, their input kind and default size.

Importing this module is cheap (no torch): the profiler reads the metadata (`CATALOG`, `input_shape`)
to plan inputs. Building a model (`build_model`) imports torch/torchvision, and happens only in the
server process.

Weights:
- `random`: the architecture with random initialisation (weights=None, weights_backbone=None): identical
  compute, no download.
- `pretrained`: torchvision's weights enum or torch.hub. Weights baked into the image at build time are
  found under $TUI_PROFILER_BAKED_TORCH_HOME; otherwise they are downloaded into $TORCH_HOME with a short
  socket timeout, and an offline machine fails fast with one clear message (`ModelLoadError`).

`python -m servers.catalog --download NAME [NAME ...]` fetches pretrained weights (used by the Dockerfile's
PRETRAINED build argument).
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from servers.decoder import DECODER_SMALL  # torch-free at import, like this module

DOWNLOAD_TIMEOUT_S = float(os.environ.get("TUI_PROFILER_DOWNLOAD_TIMEOUT_S", "15"))
BAKED_TORCH_HOME_ENV = "TUI_PROFILER_BAKED_TORCH_HOME"


class ModelLoadError(RuntimeError):
    """A model could not be built; the message is one line a user can act on."""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    task: str  # classification | segmentation | detection | text-embedding | hub
    input_kind: str  # "image" (float32 N,3,H,W) | "tokens" (int64 N,T)
    default_size: tuple[int, ...]  # N,3,H,W for images, N,T for tokens
    description: str
    warmup_size: tuple[int, ...]  # small input the server warms up with
    source: str = "torchvision"  # torchvision | builtin | hub
    extra: dict[str, Any] = field(default_factory=dict)


# A MiniLM-sized encoder (all-MiniLM-L6-v2's shape), built with torch.nn only.
TEXT_ENCODER = {"layers": 6, "hidden": 384, "heads": 12, "ffn": 1536, "vocab": 30522, "max_tokens": 512}

CATALOG: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        ModelEntry(
            "resnet50",
            "classification",
            "image",
            (1, 3, 224, 224),
            "torchvision ResNet-50 (25.6 M params)",
            (1, 3, 224, 224),
        ),
        ModelEntry(
            "mobilenet_v3_small",
            "classification",
            "image",
            (1, 3, 224, 224),
            "torchvision MobileNetV3-Small (2.5 M params)",
            (1, 3, 224, 224),
        ),
        ModelEntry(
            "fcn_resnet50",
            "segmentation",
            "image",
            (1, 3, 520, 520),
            "torchvision FCN-ResNet50 semantic segmentation (the reference quick start)",
            (1, 3, 128, 128),
        ),
        ModelEntry(
            "deeplabv3_resnet50",
            "segmentation",
            "image",
            (1, 3, 520, 520),
            "torchvision DeepLabV3-ResNet50 semantic segmentation",
            (1, 3, 128, 128),
        ),
        ModelEntry(
            "ssdlite320_mobilenet_v3_large",
            "detection",
            "image",
            (1, 3, 320, 320),
            "torchvision SSDlite320 MobileNetV3-Large detector (resizes to 320 inside)",
            (1, 3, 320, 320),
        ),
        ModelEntry(
            "text_encoder",
            "text-embedding",
            "tokens",
            (1, 128),
            "torch-only MiniLM-sized encoder (6 layers, hidden 384, 12 heads, vocab 30522); cost scales "
            "with token length",
            (1, 16),
            source="builtin",
            extra=dict(TEXT_ENCODER),
        ),
        ModelEntry(
            "decoder_small",
            "text-generation",
            "tokens",
            (1, 128),
            "torch-only GPT-2-small-sized decoder (12 layers, d_model 768, 12 heads, vocab 50257, context "
            "2048, ~124 M params) with a KV cache and a byte-level tokenizer; OpenAI /v1/completions and "
            "/v1/chat/completions",
            (1, 16),
            source="builtin",
            extra=dict(DECODER_SMALL),
        ),
        ModelEntry(
            "hub",
            "hub",
            "image",
            (1, 3, 224, 224),
            "any Torch Hub model: --hub-repo OWNER/REPO[:REF] --hub-model NAME --input-kind --input-size",
            (1, 3, 224, 224),
            source="hub",
        ),
    ]
}


def get_entry(
    name: str, *, input_kind: str | None = None, input_size: Sequence[int] | None = None
) -> ModelEntry:
    """The catalog entry for `name`; input_kind / input_size override the defaults (the hub entry's spec)."""
    if name not in CATALOG:
        raise ModelLoadError(f"unknown model {name!r}; the catalog has: {', '.join(CATALOG)}")
    entry = CATALOG[name]
    if input_kind is None and input_size is None:
        return entry
    kind = input_kind or entry.input_kind
    if kind not in ("image", "tokens"):
        raise ModelLoadError(f"--input-kind {kind!r}: must be 'image' or 'tokens'")
    size = tuple(int(v) for v in input_size) if input_size else entry.default_size
    if kind == "image" and len(size) != 4:
        raise ModelLoadError(f"--input-size {size}: an image input is N,3,H,W (4 numbers)")
    if kind == "tokens" and len(size) != 2:
        raise ModelLoadError(f"--input-size {size}: a token input is N,T (2 numbers)")
    warm = size if kind == "tokens" or size[2] * size[3] <= 224 * 224 else (size[0], size[1], 128, 128)
    return ModelEntry(
        entry.name, entry.task, kind, size, entry.description, tuple(warm), entry.source, dict(entry.extra)
    )


def input_shape(
    entry: ModelEntry, *, scale: float = 1.0, token_len: int | None = None, batch: int = 1
) -> tuple[int, ...]:
    """The input shape at a scale (images: both sides times `scale`) or a token length (text)."""
    if entry.input_kind == "tokens":
        t = token_len if token_len is not None else max(1, round(entry.default_size[1] * scale))
        return (batch, int(t))
    _, c, h, w = entry.default_size
    return (batch, c, max(1, round(h * scale)), max(1, round(w * scale)))


def example_input_array(shape: Sequence[int], kind: str, seed: int = 0) -> Any:
    """A numpy input of `shape`: normalised-looking float32 pixels, or int64 token ids."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if kind == "tokens":
        return rng.integers(1000, TEXT_ENCODER["vocab"], size=tuple(shape), dtype=np.int64)
    return rng.standard_normal(tuple(shape), dtype=np.float32)


# ---------------------------------------------------------------- building (torch from here on)


def build_model(
    entry: ModelEntry, weights: str, *, hub_repo: str | None = None, hub_model: str | None = None
) -> Any:
    """Build the model in eval mode on the CPU. Raises ModelLoadError with one actionable line."""
    if weights not in ("random", "pretrained"):
        raise ModelLoadError(f"--weights {weights!r}: must be 'random' or 'pretrained'")
    if entry.source == "builtin":
        if weights == "pretrained":
            raise ModelLoadError(
                f"{entry.name} is a torch-only model with no published weights: use --weights random "
                "(identical compute), or a Torch Hub entry for a pretrained text model"
            )
        if entry.task == "text-generation":
            from servers.decoder import build_decoder

            model = build_decoder(**entry.extra)
        else:
            model = build_text_encoder(**entry.extra)
    elif entry.source == "hub":
        model = _build_hub(hub_repo, hub_model, weights)
    else:
        model = _build_torchvision(entry.name, weights)
    model.eval()
    return model


def _with_download_timeout(what: str, fn: Any) -> Any:
    """Run a download with a short socket timeout; turn network failures into one clear line."""
    import urllib.error

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return fn()
    except (urllib.error.URLError, TimeoutError, ConnectionError, socket.gaierror, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ModelLoadError(
            f"could not download {what} ({reason}); no network? Use --weights random (same compute, no "
            "download), or bake the weights into the image at build time (build argument PRETRAINED)"
        ) from exc
    finally:
        socket.setdefaulttimeout(old)


def _use_baked_hub_dir(filename: str | None = None, repo_dir: str | None = None) -> None:
    """Point torch.hub at the weights baked into the image when they are there (read-only is fine)."""
    import torch

    baked = os.environ.get(BAKED_TORCH_HOME_ENV)
    if not baked:
        return
    hub_dir = os.path.join(baked, "hub")
    if (filename and os.path.exists(os.path.join(hub_dir, "checkpoints", filename))) or (
        repo_dir and os.path.isdir(os.path.join(hub_dir, repo_dir))
    ):
        torch.hub.set_dir(hub_dir)


def _build_torchvision(name: str, weights: str) -> Any:
    import torchvision

    if weights == "random":
        kwargs: dict[str, Any] = {"weights": None}
        if name not in ("resnet50", "mobilenet_v3_small"):
            kwargs["weights_backbone"] = None
        return torchvision.models.get_model(name, **kwargs)
    w = torchvision.models.get_model_weights(name).DEFAULT
    _use_baked_hub_dir(filename=os.path.basename(w.url))
    return _with_download_timeout(
        f"the pretrained weights of {name} from {w.url}",
        lambda: torchvision.models.get_model(name, weights=w),
    )


def _build_hub(repo: str | None, model_name: str | None, weights: str) -> Any:
    import torch

    if not repo or not model_name:
        raise ModelLoadError("the hub entry needs --hub-repo OWNER/REPO[:REF] and --hub-model NAME")
    owner_repo = repo.split(":")[0]
    if owner_repo == "pytorch/vision":
        # torchvision is installed: the hub repository's entry points are this same code, so build it
        # here instead of downloading the repository (works offline for random weights).
        import torchvision

        if model_name not in torchvision.models.list_models():
            raise ModelLoadError(f"--hub-model {model_name!r}: pytorch/vision has no such model")
        return _build_torchvision(model_name, weights)
    ref = repo.split(":")[1] if ":" in repo else None
    if ref:
        _use_baked_hub_dir(repo_dir=f"{owner_repo.replace('/', '_')}_{ref.replace('/', '_')}")
    kwargs: dict[str, Any] = {"pretrained": weights == "pretrained"}

    def load() -> Any:
        try:
            return torch.hub.load(repo, model_name, trust_repo=True, **kwargs)
        except TypeError:  # newer hub models take `weights=` instead of `pretrained=`
            return torch.hub.load(
                repo, model_name, trust_repo=True, weights="DEFAULT" if weights == "pretrained" else None
            )

    try:
        return _with_download_timeout(f"the Torch Hub repository {repo}", load)
    except RuntimeError as exc:  # torch.hub's own "no internet connection" message
        if isinstance(exc, ModelLoadError):
            raise
        raise ModelLoadError(f"Torch Hub {repo} {model_name}: {str(exc).splitlines()[0]}") from exc


def build_text_encoder(*, layers: int, hidden: int, heads: int, ffn: int, vocab: int, max_tokens: int) -> Any:
    """A BERT-style encoder from torch.nn: embeddings + TransformerEncoder + mean pooling."""
    import torch
    from torch import nn

    class TextEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.max_tokens = max_tokens
            self.vocab = vocab
            self.tokens = nn.Embedding(vocab, hidden)
            self.positions = nn.Embedding(max_tokens, hidden)
            self.norm = nn.LayerNorm(hidden)
            layer = nn.TransformerEncoderLayer(
                hidden, heads, ffn, dropout=0.0, activation="gelu", batch_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
            x = self.norm(self.tokens(ids) + self.positions(pos))
            x = self.encoder(x)
            return x.mean(dim=1)  # sentence embedding, as sentence-transformers pools MiniLM

    return TextEncoder()


def hash_tokenize(text: str, max_tokens: int = TEXT_ENCODER["max_tokens"]) -> list[int]:
    """A stand-in tokenizer for `{"text": ...}`: one id per word/punctuation mark (stable hash), with
    [CLS]=101 / [SEP]=102 around it like BERT. The compute only depends on the count, which matches a
    WordPiece tokenizer's within a small factor."""
    import re
    import zlib

    words = re.findall(r"\w+|[^\w\s]", text.lower())
    ids = [1000 + zlib.crc32(w.encode()) % (TEXT_ENCODER["vocab"] - 1000) for w in words]
    return [101, *ids[: max_tokens - 2], 102]


def model_size(model: Any) -> tuple[int, int]:
    """(parameter count, bytes of parameters + buffers)."""
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    nbytes += sum(b.numel() * b.element_size() for b in model.buffers())
    return int(params), int(nbytes)


def pixels(shape: Sequence[int]) -> int:
    return int(math.prod(shape[-2:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m servers.catalog", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--download",
        nargs="*",
        default=[],
        metavar="NAME",
        help="fetch the pretrained weights of these catalog models into $TORCH_HOME",
    )
    parser.add_argument("--list", action="store_true", help="list the catalog")
    args = parser.parse_args(argv)
    if args.list or not args.download:
        for e in CATALOG.values():
            print(
                f"{e.name:32} {e.task:15} {e.input_kind:7} {','.join(map(str, e.default_size)):14} {e.description}"
            )
        return 0
    for name in args.download:
        try:
            entry = get_entry(name)
            if entry.source != "torchvision":
                raise ModelLoadError(f"{name}: only torchvision catalog models can be baked by name")
            build_model(entry, "pretrained")
        except ModelLoadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"downloaded pretrained weights of {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
