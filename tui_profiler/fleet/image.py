"""The measuring image: tui-profiler's measuring side, to run next to a target on any host.

`ensure_measure_image()` (blocking: call it in a thread from async code) returns
`tui-profiler-measure:<hash>` on the local engine. The image is the base image that the server image
uses (`choose_base_image`), a venv with only what measuring needs at run time, installed offline from a
small wheelhouse (`pip download` into `CACHE_DIR / "measure-wheels"` when missing), and the
`tui_profiler` sources without the layers above `sweep` (no TUI, no commands). The hash in the tag covers
those sources, the Dockerfile, the wheel names and the base image, so an unchanged tree finds its image
by tag without sending a build context, and any code change makes a new tag.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tui_profiler import __version__
from tui_profiler.images import (
    CACHE_DIR,
    IMAGE_LABEL,
    SOURCE_HASH_LABEL,
    ImageBuildError,
    Progress,
    _build,
    _build_lock,
    _client,
    _image_exists,
    _link_or_copy,
    _say,
    choose_base_image,
    pip_download,
)

MEASURE_REPO = "tui-profiler-measure"
MEASURE_WHEELHOUSE = CACHE_DIR / "measure-wheels"
DOCKERFILE = Path(__file__).resolve().with_name("Dockerfile.measure")
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # tui_profiler/
# What the measuring side imports at run time (the same bounds as pyproject's dependencies): the load
# client (httptools, aiohttp, uvloop), inputs (numpy, pillow), the typed config (pydantic, tomli-w) and
# GPU sampling (nvidia-ml-py), the target's Prometheus metrics (prometheus_client). Not docker: the measurer talks to no engine; not pandas/scipy: fitting
# happens where the session is written.
MEASURE_PACKAGES = (
    "aiohttp>=3.9",
    "httptools>=0.6",
    "numpy>=1.26",
    "pydantic>=2.10,<3",
    "tomli-w>=1.0",
    "pillow>=10",
    "uvloop>=0.19",
    "nvidia-ml-py>=12",
    "prometheus_client>=0.17",  # [target] metrics: the scrape's text parser
)
# The layers above `sweep` (see pyproject's import-linter contract): never imported by the measurer, so
# left out of the image and its hash (a TUI edit does not make a new image to send to every host).
LEFT_OUT = frozenset({"tui", "testing", "commands", "bench", "cli.py", "__main__.py"})
_MANIFEST = "requirements.txt"  # written last: a wheelhouse without it is an interrupted download


def source_files() -> list[Path]:
    """The package files the image holds, relative to `tui_profiler/`, sorted."""
    files = []
    for path in PACKAGE_DIR.rglob("*"):
        rel = path.relative_to(PACKAGE_DIR)
        if not path.is_file() or rel.parts[0] in LEFT_OUT or "__pycache__" in rel.parts:
            continue
        if path.suffix in (".pyc", ".pyo"):
            continue
        files.append(rel)
    return sorted(files)


def _wheel_platforms(arch: str) -> list[str]:
    """The manylinux tags a cp311 wheel for a Debian bookworm (glibc 2.36) base may carry."""
    return [f"manylinux_2_{minor}_{arch}" for minor in (36, 35, 34, 31, 28, 27, 24, 17, 12, 5)] + [
        f"manylinux2014_{arch}",
        f"manylinux2010_{arch}",
        f"manylinux1_{arch}",
    ]


def ensure_measure_wheelhouse(arch: str = "x86_64", progress: Progress = None) -> Path:
    """The measuring image's wheelhouse (cp311 manylinux wheels for `arch`), downloaded when missing."""
    wanted = "\n".join(MEASURE_PACKAGES) + "\n"
    house = MEASURE_WHEELHOUSE / arch
    manifest = house / _MANIFEST
    if manifest.is_file() and manifest.read_text() == wanted:
        return house
    house.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)
    _say(progress, f"measure wheelhouse: downloading {' '.join(MEASURE_PACKAGES)} into {house}")
    platforms = [arg for tag in _wheel_platforms(arch) for arg in ("--platform", tag)]
    pip_download(
        list(MEASURE_PACKAGES),
        house,
        progress,
        what="pip download of the measuring image's wheels",
        extra=("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", *platforms),
    )
    manifest.write_text(wanted)
    return house


def wheel_names(house: Path) -> list[str]:
    return sorted(w.name for w in house.glob("*.whl"))


def measure_hash(base_image_id: str, wheels: list[str]) -> str:
    """What the image is made of: the package files (the Dockerfile among them), the wheels, the base."""
    h = hashlib.sha256()
    for rel in source_files():
        h.update(str(rel).encode() + b"\0" + (PACKAGE_DIR / rel).read_bytes() + b"\0")
    h.update(base_image_id.encode() + b"\0")
    h.update("\n".join(sorted(wheels)).encode())
    return h.hexdigest()[:16]


def _make_context(house: Path) -> Path:
    parent = CACHE_DIR if CACHE_DIR.is_dir() and os.access(CACHE_DIR, os.W_OK) else None
    ctx = Path(tempfile.mkdtemp(prefix="build-context-measure-", dir=parent))
    shutil.copy2(DOCKERFILE, ctx / "Dockerfile.measure")
    (ctx / "measure-wheels").mkdir()
    for name in wheel_names(house):
        _link_or_copy(house / name, ctx / "measure-wheels" / name)
    for rel in source_files():
        dst = ctx / "src" / "tui_profiler" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE_DIR / rel, dst)
    return ctx


def ensure_measure_image(progress: Progress = None, rebuild: bool = False) -> str:
    """The tag of the measuring image on the local engine (`tui-profiler-measure:<hash>`), built when
    missing (or when `rebuild`); `progress` gets one line per build step."""
    if not DOCKERFILE.is_file():
        raise ImageBuildError(f"{DOCKERFILE} not found: reinstall tui-profiler (it is package data)")
    client = _client()
    try:
        with _build_lock(progress):
            return _ensure(client, progress, rebuild)
    finally:
        client.close()


def _ensure(client: Any, progress: Progress, rebuild: bool) -> str:
    base = choose_base_image(client, progress)
    base_id: str = client.images.get(base).id
    arch = str(client.info().get("Architecture") or "x86_64")
    house = ensure_measure_wheelhouse(arch, progress)
    wheels = wheel_names(house)
    digest = measure_hash(base_id, wheels)
    tag = f"{MEASURE_REPO}:{digest}"
    existing = _image_exists(client, tag)
    if existing is not None and not rebuild and existing.labels.get(SOURCE_HASH_LABEL) == digest:
        _say(progress, f"{tag} is up to date")
        return tag
    _say(progress, f"building {tag} from {base} ({'forced rebuild' if rebuild else 'missing'})")
    ctx = _make_context(house)
    try:
        labels = {IMAGE_LABEL: "measure", SOURCE_HASH_LABEL: digest, "tui-profiler.version": __version__}
        buildargs = {"BASE_IMAGE": base, "MEASURE_SPEC": " ".join(MEASURE_PACKAGES)}
        image_id = _build(client, str(ctx), tag, buildargs, labels, progress, dockerfile="Dockerfile.measure")
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    _say(progress, f"built {tag} ({image_id[:19]})")
    return tag
