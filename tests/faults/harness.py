"""Drive `tui-profiler run ... --headless` as a real subprocess and pick the moment to hurt it by watching
the session's files, the engine and the output lines — never by sleeping blindly.

Containers are matched by the owner label the sweep puts on them (`<host>:<pid>:<start>` of the profiler),
so on a shared engine a check only ever sees (and removes) the containers of the run under test.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SESSION_LABEL = "tui-profiler.session"
OWNER_LABEL = "tui-profiler.owner"

# The smallest useful sweep of `smoke`: one container (1 CPU, 2 GiB), two cells (scales 0.5 and 1), enough
# warm-up and timed requests that each phase lasts long enough to be hit on purpose.
TINY = [
    "resources.cpus=1",
    "resources.memory_gb=2",
    "input.scales=0.5,1",
    "load.concurrency=1",
    "load.warmup=15",
    "load.requests=25",
]
# A developer override: run against an existing server image instead of `ensure_server_image` (useful
# while the image is being rebuilt on a shared engine). Unset in CI, where scripts/test.sh builds it first.
IMAGE_OVERRIDE = os.environ.get("TUI_PROFILER_FAULTS_IMAGE", "")
if IMAGE_OVERRIDE:
    TINY.append(f"image={IMAGE_OVERRIDE}")


def sets(*pairs: str) -> list[str]:
    out: list[str] = []
    for p in pairs:
        out += ["--set", p]
    return out


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Complete rows only (a line being written is left out), read without pandas so polling is cheap."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        return [dict(zip(header, r, strict=True)) for r in reader if len(r) == len(header)]


class CliRun:
    """One `python -m tui_profiler ...` subprocess with its output in a file."""

    def __init__(
        self, args: list[str], out_dir: Path, *, env: dict[str, str] | None = None, log_name: str = "cli.log"
    ) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = out_dir.parent / f"{out_dir.name}-{log_name}"
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tui_profiler", *args],
            cwd=str(REPO),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            start_new_session=True,
        )
        self.owner_prefix = f"{os.uname().nodename}:{self.proc.pid}:"
        self.rc: int | None = None

    # ---------------------------------------------------------------- what can be watched

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def session_dir(self) -> Path | None:
        dirs = (
            [p for p in self.out_dir.iterdir() if (p / "meta.json").exists()] if self.out_dir.exists() else []
        )
        return max(dirs, key=lambda p: p.stat().st_mtime) if dirs else None

    def requests(self) -> list[dict[str, str]]:
        d = self.session_dir()
        return read_csv_rows(d / "requests.csv") if d else []

    def cells(self) -> list[dict[str, str]]:
        d = self.session_dir()
        return read_csv_rows(d / "cells.csv") if d else []

    def containers(self, client: Any) -> list[Any]:
        """This run's containers (matched by the owner label: this subprocess's pid)."""
        # the plain list (no per-container inspect): other sessions' containers come and go meanwhile
        import docker.errors

        found = client.api.containers(all=True, filters={"label": SESSION_LABEL})
        mine = []
        for c in found:
            if (c.get("Labels") or {}).get(OWNER_LABEL, "").startswith(self.owner_prefix):
                try:
                    mine.append(client.containers.get(c["Id"]))
                except docker.errors.NotFound:
                    pass  # removed a moment ago
        return mine

    # ---------------------------------------------------------------- control

    def wait_for(
        self, predicate: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.02
    ) -> Any:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the run exited (rc {self.proc.returncode}) before {what}:\n{self.tail()}"
                )
            time.sleep(poll_s)
        raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}:\n{self.tail()}")

    def send(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout_s: float = 120) -> int:
        try:
            self.rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the run did not exit within {timeout_s:.0f}s:\n{self.tail()}") from None
        self._log.close()
        return self.rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def reported_requests(self) -> int | None:
        """The number of finished requests the run says it kept (printed when it stops early)."""
        m = re.search(r"(\d+) finished requests? kept", self.text())
        return int(m.group(1)) if m else None


def run_cli(
    args: list[str], timeout_s: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (stdout and stderr captured as text)."""
    return subprocess.run(
        [sys.executable, "-m", "tui_profiler", *args],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def remove_containers(containers: list[Any]) -> None:
    for c in containers:
        try:
            c.remove(force=True, v=True)
        except Exception:
            pass


class EngineProxy:
    """A unix-socket relay to the Docker engine that can be taken down and brought back: the profiler
    under test talks to the engine only through it (DOCKER_HOST), so an engine outage can be played
    without touching the machine's shared dockerd."""

    def __init__(self, path: Path, target: str = "/var/run/docker.sock") -> None:
        import socket
        import threading

        self._socket_mod = socket
        self._threading = threading
        self.path = path
        self.target = target
        self._listener: Any = None
        self._conns: list[Any] = []
        self._lock = threading.Lock()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def up(self) -> None:
        socket = self._socket_mod
        if self.path.exists():
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(64)
        self._listener = listener
        self._threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """The engine is gone: no new connection, and every open one is cut."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self.path.exists():
            self.path.unlink()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(self._socket_mod.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener: Any) -> None:
        socket = self._socket_mod
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: Any, dst: Any) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass
