"""`hf:` and `tf:` models (Hugging Face, TensorFlow): what the model string names, which tasks each hub
serves, and the host directory a container gets mounted read-only when the model is a local folder.

Pure: nothing here reads more than the filesystem's `is_dir`. The server side is servers/hf.py, servers/tf.py.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

HF_PREFIX = "hf:"
TF_PREFIX = "tf:"
HF_TASKS = ("feature-extraction", "text-classification", "image-classification", "text-generation")
TF_TASKS = ("image-classification", "feature-extraction")
TASKS = tuple(dict.fromkeys((*HF_TASKS, *TF_TASKS)))
CONTAINER_MODELS = "/models"  # where a local model folder is mounted inside the server container


def hub_of(model: str) -> str | None:
    """`hf`, `tf`, or None for a catalog model."""
    if model.startswith(HF_PREFIX):
        return "hf"
    if model.startswith(TF_PREFIX):
        return "tf"
    return None


def hub_ref(model: str) -> str:
    """What follows `hf:` / `tf:`: a hub id, a handle, `keras:<Name>` or a path."""
    return model.split(":", 1)[1] if hub_of(model) else model


def task_problem(model: str, task: str) -> str | None:
    """Why `task` does not fit `model` (None: it fits). hf: needs a task; tf: defaults to image-classification;
    catalog models have their own and take none."""
    hub = hub_of(model)
    if hub is None:
        return "only hf: and tf: models take a task (a catalog model has its own)" if task else None
    allowed = HF_TASKS if hub == "hf" else TF_TASKS
    if hub == "hf" and not task:
        return f"an hf: model needs a task: one of {', '.join(HF_TASKS)}"
    if task and task not in allowed:
        return f"a {hub}: model's task is one of {', '.join(allowed)}"
    if not hub_ref(model):
        return f"{hub}: needs a model after the colon"
    return None


def local_model_dir(model: str, preset_dir: Path | None) -> Path | None:
    """The host folder an hf:/tf: model names, when it is one: an absolute path, or a path relative to the
    preset's folder, then to the working directory. None: a hub id, a TF Hub handle or keras:<Name>."""
    if hub_of(model) is None:
        return None
    ref = hub_ref(model)
    if not ref or re.match(r"^[a-z]+://", ref) or ref.startswith("keras:"):
        return None
    path = Path(ref).expanduser()
    candidates = (
        [path] if path.is_absolute() else [*([preset_dir / path] if preset_dir else []), Path.cwd() / path]
    )
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return None


def container_model(model: str, preset_dir: Path | None) -> tuple[str, list[tuple[str, str]]]:
    """The model string the server in a container gets, and the read-only mount it needs: a local folder
    becomes `/models/<name>-<hash>` inside; anything else is passed as is, with no mount."""
    folder = local_model_dir(model, preset_dir)
    if folder is None:
        return model, []
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.name).strip("-.") or "model"
    inside = f"{CONTAINER_MODELS}/{slug}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}"
    return f"{model.split(':', 1)[0]}:{inside}", [(str(folder), inside)]
