"""How every container the tool starts is confined: the target, a fleet host's measuring container and its
one-shot facts container all take their settings from `hardened`.

No new privileges, all capabilities dropped, a read-only root filesystem (with a tmpfs at /tmp where the
container writes), a pids limit, a non-root user (the image's own, or nobody when the image would run as
root). A target's published port is bound to 127.0.0.1 only and the Docker socket is never mounted into
it (`runtime.docker`).
"""

from __future__ import annotations

import os
from typing import Any

from tui_profiler.runtime.base import TargetFailed
from tui_profiler.session.schema import CellStatus

NOBODY = "65534:65534"
DOCKER_SOCKETS = {"/var/run/docker.sock", "/run/docker.sock"}


def hardened(
    user: str = NOBODY, *, tmpfs_size: str | None = None, pids_limit: int | None = None
) -> dict[str, Any]:
    """The docker SDK's `containers.create`/`run` settings that confine a container: run as `user`, no new
    privileges, no capabilities, a read-only root; a writable /tmp of `tmpfs_size` and at most
    `pids_limit` processes when given."""
    kwargs: dict[str, Any] = dict(
        user=user,
        security_opt=["no-new-privileges"],
        cap_drop=["ALL"],
        read_only=True,
    )
    if tmpfs_size is not None:
        kwargs["tmpfs"] = {"/tmp": f"rw,nosuid,nodev,size={tmpfs_size},mode=1777"}
    if pids_limit is not None:
        kwargs["pids_limit"] = pids_limit
    return kwargs


def is_root_user(user: str) -> bool:
    """Whether an image's configured user ("", "0", "root", "root:group") runs as root."""
    name = user.split(":", 1)[0].strip()
    return name in ("", "0", "root")


def target_user(asked: str | None, image_user: str) -> str:
    """Who a target runs as: the user asked for, else the image's own unless that is root, else nobody."""
    return asked or (image_user if not is_root_user(image_user) else NOBODY)


def check_mounts(mounts: list[tuple[str, str]]) -> None:
    """Refuse a mount of the Docker socket (it would hand the target the engine)."""
    for host, _ in mounts:
        resolved = os.path.realpath(host)
        if resolved in DOCKER_SOCKETS or host in DOCKER_SOCKETS or resolved.endswith("/docker.sock"):
            raise TargetFailed(
                CellStatus.REFUSED, f"mount {host}: the Docker socket is never mounted into a target"
            )
