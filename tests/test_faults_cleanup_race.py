"""Issue 7, on a shared engine: looking for labelled containers (`tui-profiler clean`, and the orphan check
every start runs) must not fail because another session removes one of its containers at that moment.
A thread creates and removes labelled containers as fast as the engine allows while both listings run."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tests.conftest import session_label_value
from tui_profiler.runtime.base import SESSION_LABEL
from tui_profiler.runtime.docker import OWNER_LABEL, DockerRuntime, remove_labelled

pytestmark = pytest.mark.docker
BASE_IMAGE = "tui-profiler-base:bookworm"


def test_listings_survive_containers_vanishing(docker_client: Any) -> None:
    sid = session_label_value("faults-race")
    # another host's owner: remove_orphans must leave these alone; they only exist to vanish
    labels = {SESSION_LABEL: sid, OWNER_LABEL: "another-host:1:1"}
    stop = threading.Event()
    churned = [0]

    def churn() -> None:
        while not stop.is_set():
            c = docker_client.containers.create(BASE_IMAGE, ["true"], labels=labels)
            c.remove(force=True)
            churned[0] += 1

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    listings = 0
    try:
        while churned[0] < 60:
            remove_labelled(f"{SESSION_LABEL}={sid}", dry_run=True)
            asyncio.run(DockerRuntime().remove_orphans(dry_run=True))
            listings += 2
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        remove_labelled(f"{SESSION_LABEL}={sid}")
    print(f"\n{listings} listings while {churned[0]} containers came and went")
