"""The model-server image: find it, or build it from `servers/Dockerfile` with the docker SDK.

`ensure_server_image()` is blocking (call it in a thread from async code). The build context is a temp
folder holding `servers/` and the wheelhouse hard-linked in (no copy of ~3 GB of wheels); the wheelhouse
(`/var/cache/tui-profiler/wheels`) is made with `pip download` from the configured index when missing.
The torch layer comes first in the Dockerfile, so a code change rebuilds in seconds from the layer
cache; when neither the server code nor the base image changed, the existing image is used as is
(checked through a source-hash label, without sending the build context at all).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tui_profiler import __version__
from tui_profiler.errors import ExitCode, ProfilerError

Progress = Callable[[str], None] | None

SERVER_REPO = "tui-profiler-server"
DEPS_REPO = "tui-profiler-server-deps"  # the venv with torch & co. (holds the wheels too; never run)
IMAGE_LABEL = "tui-profiler.image"
SOURCE_HASH_LABEL = "tui-profiler.source-hash"
PUBLIC_BASE = "python:3.11-slim"
LOCAL_BASE = os.environ.get("TUI_PROFILER_BASE_IMAGE", "tui-profiler-base:bookworm")
CACHE_DIR = Path(os.environ.get("TUI_PROFILER_CACHE", "/var/cache/tui-profiler"))
WHEELHOUSE = Path(os.environ.get("TUI_PROFILER_WHEELS", str(CACHE_DIR / "wheels")))
TORCH_SPEC = "torch==2.14.1 torchvision==0.29.1"
SERVER_PACKAGES = [*TORCH_SPEC.split(), "numpy", "pillow", "aiohttp"]
# Hugging Face models (`hf:`): installed in the dependency layer on top of torch, from their own small wheelhouse
HF_SPEC = "transformers==5.25.0 tokenizers==0.23.3 safetensors==0.8.0"
HF_WHEELHOUSE = Path(os.environ.get("TUI_PROFILER_HF_WHEELS", str(CACHE_DIR / "hf-wheels")))
# The TensorFlow variant (`tf:` models, `images build --variant tf`): its own image, no torch
TF_REPO = "tui-profiler-server-tf"
TF_SPEC = "tensorflow-cpu==2.21.0"
TF_PACKAGES = [TF_SPEC, "numpy", "pillow", "aiohttp"]
TF_WHEELHOUSE = Path(os.environ.get("TUI_PROFILER_TF_WHEELS", str(CACHE_DIR / "tf-wheels")))
VARIANTS = ("torch", "tf")  # the server image's variants: torch (+ transformers), TensorFlow
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the repo (or site-packages) holding servers/
HF_BUILD_ARGS = {"HF_PIP_ARGS": "--no-index --find-links /hf-wheels --find-links /wheels", "HF_SPEC": HF_SPEC}


ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the engine colours a build step's stderr


class ImageBuildError(ProfilerError, RuntimeError):
    """The server image could not be built; the message says why and what to do."""

    exit_code = ExitCode.CELL_FAILED


def server_tag(variant: str = "torch") -> str:
    return f"{TF_REPO if variant == 'tf' else SERVER_REPO}:{__version__}"


def variant_for_model(model: str) -> str:
    """The server image variant a model needs: `tf` for `tf:` models, else the torch one."""
    return "tf" if model.startswith("tf:") else "torch"


def servers_dir() -> Path:
    d = PACKAGE_ROOT / "servers"
    if not (d / "Dockerfile").exists():
        raise ImageBuildError(
            f"servers/Dockerfile not found under {PACKAGE_ROOT}: install tui-profiler from "
            "its repository (pip install -e .) so the server sources are at hand"
        )
    return d


def _server_files(variant: str = "torch") -> list[Path]:
    d = servers_dir()
    return sorted([d / ("Dockerfile.tf" if variant == "tf" else "Dockerfile"), *d.glob("*.py")])


def _say(progress: Progress, line: str) -> None:
    if progress is not None:
        progress(line)


def _client() -> Any:
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:
        raise ImageBuildError(f"no Docker engine reachable ({exc}); start one (scripts/engine.sh)") from exc
    return client


def _image_exists(client: Any, name: str) -> Any | None:
    import docker

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def choose_base_image(client: Any, progress: Progress = None) -> str:
    """`python:3.11-slim` when it is there locally; else the local Debian base (made when missing)."""
    override = os.environ.get("TUI_PROFILER_SERVER_BASE")
    if override:
        if not _image_exists(client, override):
            raise ImageBuildError(f"TUI_PROFILER_SERVER_BASE={override}: no such local image")
        return override
    if _image_exists(client, PUBLIC_BASE):
        return PUBLIC_BASE
    if _image_exists(client, LOCAL_BASE):
        return LOCAL_BASE
    script = PACKAGE_ROOT / "scripts" / "base-image.sh"
    if not script.exists():
        raise ImageBuildError(
            f"neither {PUBLIC_BASE} nor {LOCAL_BASE} is a local image, and scripts/base-image.sh (which makes "
            f"{LOCAL_BASE}) was not found under {PACKAGE_ROOT}; run it from the repository, or `docker pull "
            f"{PUBLIC_BASE}` where a registry is reachable"
        )
    _say(progress, f"base image: neither {PUBLIC_BASE} nor {LOCAL_BASE} is local; running {script} (1-2 min)")
    _run_streaming(["bash", str(script)], progress, what="scripts/base-image.sh")
    if not _image_exists(client, LOCAL_BASE):
        raise ImageBuildError(f"scripts/base-image.sh finished but {LOCAL_BASE} is still missing")
    return LOCAL_BASE


def _run_streaming(cmd: list[str], progress: Progress, *, what: str) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            tail = [*tail[-19:], line]
            _say(progress, line)
    if proc.wait() != 0:
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail[-3:]))


def ensure_wheelhouse(progress: Progress = None) -> Path:
    """The wheelhouse the image installs from, downloaded with pip from the configured index if missing."""
    if not (WHEELHOUSE.is_dir() and any(WHEELHOUSE.glob("torch-*.whl"))):
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        _say(
            progress,
            f"wheelhouse: downloading {' '.join(SERVER_PACKAGES)} into {WHEELHOUSE} (~3 GB, minutes)",
        )
        pip_download(SERVER_PACKAGES, WHEELHOUSE, progress, what="pip download of the server wheels")
    ensure_extra_wheelhouse(HF_WHEELHOUSE, HF_SPEC.split(), "transformers-*.whl", progress, size="~50 MB")
    return WHEELHOUSE


def ensure_extra_wheelhouse(
    dest: Path, packages: list[str], marker: str, progress: Progress, *, size: str
) -> Path:
    """A variant's own wheelhouse (transformers', TensorFlow's), downloaded when `marker` is not in it."""
    if dest.is_dir() and any(dest.glob(marker)):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    _say(progress, f"wheelhouse: downloading {' '.join(packages)} into {dest} ({size})")
    pip_download(packages, dest, progress, what=f"pip download of {' '.join(packages)}")
    return dest


def pip_download(
    packages: list[str], dest: Path, progress: Progress, *, what: str, extra: tuple[str, ...] = ()
) -> None:
    """Wheels only, from the configured index, into `dest` (`extra`: e.g. another platform's tags)."""
    _run_streaming(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "--only-binary=:all:",
            *extra,
            "-d",
            str(dest),
            *packages,
        ],
        progress,
        what=what,
    )


def source_hash(base_image_id: str, wheel_names: list[str], variant: str = "torch") -> str:
    """What the image is made of: the server files, the base image and the wheel set."""
    h = hashlib.sha256()
    for f in _server_files(variant):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(base_image_id.encode())
    h.update("\n".join(sorted(wheel_names)).encode())
    h.update(f"prometheus_client {_metrics_client_version()}".encode())  # vendored into servers/_vendor
    return h.hexdigest()[:16]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:  # another filesystem or no hard links: copy instead
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(src, dst)


def _make_context(wheels: Path | None, hf_wheels: Path | None = None, variant: str = "torch") -> Path:
    parent = CACHE_DIR if CACHE_DIR.is_dir() and os.access(CACHE_DIR, os.W_OK) else None
    ctx = Path(tempfile.mkdtemp(prefix="build-context-", dir=parent))
    (ctx / "servers").mkdir()
    for f in _server_files(variant):
        shutil.copy2(f, ctx / "servers" / f.name)
    _vendor_metrics_client(ctx / "servers")
    for folder, source in (("wheels", wheels), ("hf-wheels", hf_wheels)):
        (ctx / folder).mkdir()
        for w in sorted(source.iterdir()) if source is not None else []:
            if w.is_file():
                _link_or_copy(w, ctx / folder / w.name)
    return ctx


def _vendor_metrics_client(servers: Path) -> None:
    """The model server's /metrics needs `prometheus_client` (pure Python, no dependencies): copied from
    this machine's installation into the build context's servers/_vendor/ (about 0.3 MB in the server's
    own layer), so the torch layer is not rebuilt and no index is needed. Without it /metrics says so."""
    try:
        import prometheus_client
    except ImportError:
        return
    src = Path(prometheus_client.__file__).parent
    shutil.copytree(
        src, servers / "_vendor" / "prometheus_client", ignore=shutil.ignore_patterns("__pycache__")
    )


def _metrics_client_version() -> str:
    try:
        from importlib.metadata import version

        import prometheus_client  # noqa: F401

        return version("prometheus_client")
    except Exception:
        return ""


def _wheel_names(*folders: Path) -> list[str]:
    return [w.name for folder in folders for w in folder.iterdir() if w.is_file()]


def ensure_server_image(
    progress: Progress = None, rebuild: bool = False, *, pretrained: str = "", variant: str = "torch"
) -> str:
    """The tag of the server image (`tui-profiler-server:<version>`, or the TensorFlow variant's
    `tui-profiler-server-tf:<version>`), built when missing or stale.

    `progress` gets one line per build step; `rebuild` forces a build (the layer cache still applies);
    `pretrained` (space-separated catalog names) bakes those pretrained weights into the image.
    """
    if variant not in VARIANTS:
        raise ImageBuildError(f"--variant {variant!r}: one of {', '.join(VARIANTS)}")
    if variant == "tf" and pretrained:
        raise ImageBuildError("--pretrained bakes torchvision weights: the tf variant has no torch")
    client = _client()
    try:
        with _build_lock(progress):
            if variant == "tf":
                return _ensure_tf(client, progress, rebuild)
            return _ensure(client, progress, rebuild, pretrained)
    finally:
        client.close()


def ensure_deps_image(progress: Progress = None) -> tuple[str, str]:
    """(base image, dependency image): the image the server image runs on and the venv layer with torch it
    copies, built when missing. Other images reuse them (scripts/stacks.sh) so torch is installed once."""
    client = _client()
    try:
        with _build_lock(progress):
            base = choose_base_image(client, progress)
            wheels = ensure_wheelhouse(progress)
            wheel_names = _wheel_names(wheels, HF_WHEELHOUSE)
            return base, _ensure_deps(client, progress, base, client.images.get(base).id, wheels, wheel_names)
    finally:
        client.close()


@contextlib.contextmanager
def _build_lock(progress: Progress) -> Iterator[None]:
    """One build at a time per machine: concurrent callers (parallel test runs, several profilers) wait
    for the first build and then find the image up to date, instead of each installing torch again."""
    lock_dir = (
        CACHE_DIR if CACHE_DIR.is_dir() and os.access(CACHE_DIR, os.W_OK) else Path(tempfile.gettempdir())
    )
    with open(lock_dir / "server-image.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(progress, "another server-image build is running on this machine; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_stale_contexts() -> None:
    """Contexts left by an interrupted build (we hold the build lock, so none is in use): hard links, cheap."""
    if CACHE_DIR.is_dir():
        for d in CACHE_DIR.glob("build-context-*"):
            shutil.rmtree(d, ignore_errors=True)


def _up_to_date(existing: Any, tag: str, digest: str, rebuild: bool, progress: Progress) -> bool:
    """Whether the image `tag` was built from this source (`digest`) and no rebuild is asked for."""
    if existing is not None and not rebuild and existing.labels.get(SOURCE_HASH_LABEL) == digest:
        _say(progress, f"{tag} is up to date (source {digest})")
        return True
    return False


def _replaced(client: Any, tag: str, image_id: str, existing: Any, progress: Progress) -> None:
    """A build of `tag` finished: say so, and remove the image it replaced once nothing else tags it."""
    _say(progress, f"built {tag} ({image_id[:19]})")
    if existing is not None and existing.id != image_id:
        _remove_if_untagged(client, existing.id, progress)


def _ensure(client: Any, progress: Progress, rebuild: bool, pretrained: str) -> str:
    _remove_stale_contexts()
    tag = server_tag()
    base = choose_base_image(client, progress)
    base_id = client.images.get(base).id
    wheels = ensure_wheelhouse(progress)
    wheel_names = _wheel_names(wheels, HF_WHEELHOUSE)
    digest = source_hash(base_id + pretrained, wheel_names)
    existing = _image_exists(client, tag)
    if _up_to_date(existing, tag, digest, rebuild, progress):
        return tag
    why = "forced rebuild" if rebuild else ("missing" if existing is None else "server code or base changed")
    common = {"BASE_IMAGE": base, "PIP_ARGS": "--no-index --find-links /wheels", "TORCH_SPEC": TORCH_SPEC}
    common |= HF_BUILD_ARGS

    deps_tag = _ensure_deps(client, progress, base, base_id, wheels, wheel_names)

    # 2. the server on top: a small context (no wheels), seconds for a code change
    _say(progress, f"building {tag} from {base} + {deps_tag} ({why})")
    ctx = _make_context(None)
    try:
        buildargs = {**common, "DEPS_IMAGE": deps_tag, "SKIP_DEPS": "1", "PRETRAINED": pretrained}
        labels = {IMAGE_LABEL: "server", SOURCE_HASH_LABEL: digest, "tui-profiler.version": __version__}
        image_id = _build(client, str(ctx), tag, buildargs, labels, progress)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    _replaced(client, tag, image_id, existing, progress)
    return tag


def _ensure_deps(
    client: Any, progress: Progress, base: str, base_id: str, wheels: Path, wheel_names: list[str]
) -> str:
    """The dependencies (torch & co.), built once per base image + wheel set, with the wheels in the context."""
    common = {"BASE_IMAGE": base, "PIP_ARGS": "--no-index --find-links /wheels", "TORCH_SPEC": TORCH_SPEC}
    common |= HF_BUILD_ARGS
    deps_digest = hashlib.sha256(
        (base_id + TORCH_SPEC + HF_SPEC + "\n".join(sorted(wheel_names))).encode()
    ).hexdigest()[:16]
    deps_tag = f"{DEPS_REPO}:{deps_digest}"
    if _image_exists(client, deps_tag) is None:
        _say(
            progress,
            f"building the dependency layer {deps_tag} from {base} (torch; minutes the first time, "
            "from the layer cache after that)",
        )
        ctx = _make_context(wheels, HF_WHEELHOUSE)
        try:
            size_gb = (
                sum(f.stat().st_size for d in ("wheels", "hf-wheels") for f in (ctx / d).iterdir()) / 1e9
            )
            _say(progress, f"sending the build context ({size_gb:.1f} GB of wheels, hard-linked)")
            _build(
                client,
                str(ctx),
                deps_tag,
                {**common, "SKIP_DEPS": ""},
                {IMAGE_LABEL: "deps", "tui-profiler.version": __version__},
                progress,
                target="deps",
            )
        finally:
            shutil.rmtree(ctx, ignore_errors=True)
    return deps_tag


def _ensure_tf(client: Any, progress: Progress, rebuild: bool) -> str:
    """The TensorFlow variant: one build from servers/Dockerfile.tf with the tf wheelhouse in the context (its
    venv stage comes from the layer cache after the first build), skipped when the source hash matches."""
    _remove_stale_contexts()
    tag = server_tag("tf")
    base = choose_base_image(client, progress)
    wheels = ensure_extra_wheelhouse(
        TF_WHEELHOUSE, TF_PACKAGES, "tensorflow_cpu-*.whl", progress, size="~330 MB"
    )
    digest = source_hash(client.images.get(base).id + TF_SPEC, _wheel_names(wheels), "tf")
    existing = _image_exists(client, tag)
    if _up_to_date(existing, tag, digest, rebuild, progress):
        return tag
    _say(progress, f"building {tag} from {base} (TensorFlow from {wheels}; a minute the first time)")
    ctx = _make_context(wheels, variant="tf")
    try:
        buildargs = {"BASE_IMAGE": base, "PIP_ARGS": "--no-index --find-links /wheels", "TF_SPEC": TF_SPEC}
        labels = {IMAGE_LABEL: "server-tf", SOURCE_HASH_LABEL: digest, "tui-profiler.version": __version__}
        image_id = _build(
            client, str(ctx), tag, buildargs, labels, progress, dockerfile="servers/Dockerfile.tf"
        )
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    _replaced(client, tag, image_id, existing, progress)
    return tag


def _remove_if_untagged(client: Any, image_id: str, progress: Progress) -> None:
    """The server image this build replaced: removed when nothing else tags or uses it (disk is scarce:
    each is GBs, though it shares most layers with the new one)."""
    import docker

    try:
        old = client.images.get(image_id)
        if old.tags or old.labels.get(IMAGE_LABEL) not in ("server", "server-tf"):
            return
        client.images.remove(image_id)
        _say(progress, f"removed the replaced image {image_id[:19]}")
    except docker.errors.APIError:  # used by a container, or already gone: keep it
        pass


def _build(
    client: Any,
    ctx: str,
    tag: str,
    buildargs: dict[str, str],
    labels: dict[str, str],
    progress: Progress,
    target: str | None = None,
    dockerfile: str = "servers/Dockerfile",
) -> str:
    tail: list[str] = []
    image_id = ""
    stream = client.api.build(
        path=ctx,
        dockerfile=dockerfile,
        tag=tag,
        buildargs=buildargs,
        labels=labels,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
        target=target,
    )
    for chunk in stream:
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            said = [x for x in tail if x.startswith("error:")]  # our own one-line errors (servers.catalog)
            lines = said[-1:] or [*tail[-5:], ANSI.sub("", detail).strip()]
            raise ImageBuildError(f"building {tag} failed: " + " | ".join(x for x in lines if x))
        if "aux" in chunk and isinstance(chunk["aux"], dict):
            image_id = chunk["aux"].get("ID", image_id)
        text = ANSI.sub("", chunk.get("stream") or chunk.get("status") or "")
        for line in text.splitlines():
            line = line.rstrip()
            if line:
                tail = [*tail[-19:], line]
                _say(progress, line)
    if not image_id:
        image_id = client.images.get(tag).id
    return image_id


def build_image_from_dockerfile(
    dockerfile: str | os.PathLike[str],
    context: str | os.PathLike[str] | None = None,
    build_args: dict[str, str] | None = None,
    progress: Progress = None,
) -> str:
    """Build a preset's own serving image (`[target] dockerfile`) and return its tag.

    The context defaults to the Dockerfile's folder. The tag names the Dockerfile's path, so a rebuild
    replaces the last one and the engine's layer cache makes an unchanged rebuild take seconds."""
    path = Path(dockerfile).resolve()
    if not path.is_file():
        raise ImageBuildError(f"target.dockerfile: {dockerfile} is not a file")
    ctx = Path(context).resolve() if context else path.parent
    if not ctx.is_dir():
        raise ImageBuildError(f"target.context: {context} is not a folder")
    try:
        rel = path.relative_to(ctx)
    except ValueError:
        raise ImageBuildError(f"target.dockerfile: {dockerfile} lies outside target.context {ctx}") from None
    slug = re.sub(r"[^a-z0-9_.-]+", "-", path.parent.name.lower()).strip("-.") or "target"
    tag = f"tui-profiler-target-{slug}:{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    client = _client()
    try:
        _say(progress, f"building {tag} from {path} (context {ctx})")
        _build(
            client,
            str(ctx),
            tag,
            dict(build_args or {}),
            {IMAGE_LABEL: "target"},
            progress,
            dockerfile=str(rel),
        )
    finally:
        client.close()
    return tag


def list_images() -> list[dict[str, Any]]:
    """Images tui-profiler made: the server image(s) and the local base image."""
    client = _client()
    try:
        seen: dict[str, Any] = {}
        for img in client.images.list(filters={"label": IMAGE_LABEL}):
            seen[img.id] = img
        for name in (LOCAL_BASE,):
            img = _image_exists(client, name)
            if img is not None:
                seen[img.id] = img
        rows = []
        for img in seen.values():
            for tag in img.tags:  # untagged ones are replaced builds still used by a container
                rows.append(
                    {
                        "tag": tag,
                        "id": img.short_id.split(":")[-1],
                        "size_bytes": img.attrs.get("Size"),
                        "created": img.attrs.get("Created", "")[:19].replace("T", " "),
                        "kind": img.labels.get(IMAGE_LABEL, "base"),
                    }
                )
        return sorted(rows, key=lambda r: r["tag"])
    finally:
        client.close()
