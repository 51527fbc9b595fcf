"""Image pull timed for real: a local registry (Debian's docker-registry) on a free 127.0.0.1 port, a
small image pushed there and removed locally, then pulled through the docker runtime."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tui_profiler.runtime.common import free_port
from tui_profiler.runtime.docker import DockerRuntime

pytestmark = pytest.mark.docker
REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
BLOB_BYTES = 4 * 2**20  # random, so the compressed layer is about this size


@pytest.fixture
def local_registry(tmp_path: Path) -> Iterator[str]:
    if not Path(REGISTRY_BIN).exists():
        pytest.skip("docker-registry is not installed (scripts/test.sh installs it)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = open(tmp_path / "registry.log", "wb")
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"registry did not start: {(tmp_path / 'registry.log').read_text()[-500:]}"
                )
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _build_small_image(client, ref: str) -> None:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (
            ("Dockerfile", b"FROM scratch\nCOPY blob /blob\nLABEL tui-profiler.test=pull\n"),
            ("blob", os.urandom(BLOB_BYTES)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=ref, rm=True)


async def test_pull_timed_from_local_registry(docker_client, local_registry: str) -> None:  # type: ignore[no-untyped-def]
    ref = f"{local_registry}/tui-profiler-pull-test:{secrets.token_hex(4)}"
    _build_small_image(docker_client, ref)
    try:
        repo, tag = ref.rsplit(":", 1)
        for event in docker_client.images.push(repo, tag=tag, stream=True, decode=True):
            assert "error" not in event, event
        docker_client.images.remove(ref, force=True)
        with pytest.raises(Exception):  # noqa: B017 - ImageNotFound: gone locally
            docker_client.images.get(ref)

        rt = DockerRuntime()
        phases: list[tuple[str, float | None, str]] = []
        pulled = await rt.ensure_image(ref, on_phase=lambda p, s, d: phases.append((p, s, d)))
        assert pulled.seconds is not None and pulled.seconds > 0
        assert pulled.nbytes is not None and 0.9 * BLOB_BYTES <= pulled.nbytes <= 1.2 * BLOB_BYTES
        assert phases == [("image_pull", pulled.seconds, f"{pulled.nbytes} bytes")]
        assert pulled.image.labels.get("tui-profiler.test") == "pull"
        print(f"\npull: {pulled.nbytes} bytes in {pulled.seconds:.3f} s")

        again = await rt.ensure_image(ref)  # now local: 'cached', no time
        assert again.seconds is None and again.nbytes is None
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(ref, force=True)
