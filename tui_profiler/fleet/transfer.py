"""Sending an image a host lacks: `docker save` -> `load` through the SDK, or a registry the user names.

The save stream goes straight into the target's load request, chunk by chunk, so an image of several GB
is never held in memory; its bytes are counted on the way. Blocking (docker SDK calls): async callers run
it in a thread. Every failure is one line naming the image, the way and what went wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tui_profiler.errors import ExitCode, ProfilerError

PROGRESS_EVERY = 64 * 2**20  # bytes between two progress lines


class ImageTransferError(ProfilerError, RuntimeError):
    """An image that could not be sent; the message is one line."""

    exit_code = ExitCode.CELL_FAILED


@dataclass(frozen=True)
class ImageSent:
    """How an image got to a host: timed, and its byte count when it went as a save stream.
    Both None when the host already had it (how="present")."""

    seconds: float | None
    nbytes: int | None
    how: str  # "present", "docker save -> load", "registry <address>"


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _image_id(client: Any, ref: str) -> str | None:
    """The id of `ref` (a name or an id) on that engine, None when it has no such image."""
    import docker.errors

    try:
        return str(client.images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None


class _CountingStream:
    """The save stream's chunks, counted as the load request reads them."""

    def __init__(self, chunks: Iterable[bytes], progress: Callable[[str], None] | None, ref: str) -> None:
        self._chunks = chunks
        self._progress = progress
        self._ref = ref
        self.nbytes = 0

    def __iter__(self) -> Iterator[bytes]:
        next_report = PROGRESS_EVERY
        for chunk in self._chunks:
            self.nbytes += len(chunk)
            if self._progress is not None and self.nbytes >= next_report:
                self._progress(f"sending {self._ref}: {self.nbytes / 2**20:.0f} MiB")
                next_report += PROGRESS_EVERY
            yield chunk


def send_image(
    source: Any,
    target: Any,
    ref: str,
    *,
    registry: str = "",
    progress: Callable[[str], None] | None = None,
) -> ImageSent:
    """Make `ref` (as it is on the `source` engine) present on the `target` engine, both docker SDK clients."""
    src_id = _image_id(source, ref)
    if src_id is None:
        raise ImageTransferError(f"sending {ref}: the source engine has no image {ref!r}")
    if _image_id(target, src_id) is not None:
        if _image_id(target, ref) != src_id:  # the same image under another name: give it this one too
            repo, tag = _split(ref)
            target.images.get(src_id).tag(repo, tag)
        return ImageSent(None, None, "present")
    if registry:
        return _through_registry(source, target, ref, src_id, registry, progress)
    how = "docker save -> load"
    if progress is not None:
        progress(f"sending {ref} ({how})")
    stream: _CountingStream | None = None
    t0 = time.perf_counter()
    try:
        image = source.images.get(src_id)
        # The tar names the image `ref` only (not its other tags there); an id as `ref` goes unnamed.
        stream = _CountingStream(image.save(named=ref if ref in image.tags else False), progress, ref)
        target.images.load(stream)
    except Exception as exc:
        sent = stream.nbytes if stream is not None else 0
        raise ImageTransferError(
            f"sending {ref} ({how}) failed after {sent} bytes: {_one_line(exc)}"
        ) from exc
    seconds = time.perf_counter() - t0
    if _image_id(target, src_id) is None:
        raise ImageTransferError(f"sending {ref} ({how}): loaded, but the target has no image {src_id}")
    if _image_id(target, ref) != src_id:
        raise ImageTransferError(
            f"sending {ref} ({how}): loaded, but the target has no {ref} with id {src_id}"
        )
    if progress is not None:
        progress(f"sent {ref}: {stream.nbytes / 2**20:.0f} MiB in {seconds:.1f} s")
    return ImageSent(seconds, stream.nbytes, how)


def _split(ref: str) -> tuple[str, str]:
    from docker.utils import parse_repository_tag

    repo, tag = parse_repository_tag(ref)
    return str(repo), str(tag or "latest")


def _through_registry(
    source: Any, target: Any, ref: str, src_id: str, registry: str, progress: Callable[[str], None] | None
) -> ImageSent:
    """Tag and push on the source, pull and tag back to `ref` on the target; the registry names dropped after."""
    how = f"registry {registry}"
    repo, tag = _split(ref)
    remote_repo = f"{registry.rstrip('/')}/{repo.rsplit('/', 1)[-1]}"
    remote_ref = f"{remote_repo}:{tag}"
    if progress is not None:
        progress(f"sending {ref} ({how})")
    t0 = time.perf_counter()
    try:
        source.images.get(src_id).tag(remote_repo, tag)
        try:
            for line in source.images.push(remote_repo, tag=tag, stream=True, decode=True):
                if "error" in line:
                    raise ImageTransferError(str(line.get("error")))
        finally:
            source.images.remove(remote_ref)  # only the tag: `ref` still names the image there
        pulled = target.images.pull(remote_repo, tag=tag)
        pulled.tag(repo, tag)
        target.images.remove(remote_ref)
    except Exception as exc:
        raise ImageTransferError(f"sending {ref} ({how}) failed: {_one_line(exc)}") from exc
    seconds = time.perf_counter() - t0
    if _image_id(target, ref) != src_id:
        raise ImageTransferError(
            f"sending {ref} ({how}): pulled, but the target has no {ref} with id {src_id}"
        )
    return ImageSent(seconds, None, how)
