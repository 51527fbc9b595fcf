"""Stopping a sweep: the user's stop request, and waiting on work that a stop must be able to cut short."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Stopped(Exception):
    """The user asked to stop (`StopControl.request`)."""


class StopControl:
    """A sweep's stop request and what it cancels (one task per busy host)."""

    def __init__(self) -> None:
        self.requested = False
        self._current: set[asyncio.Future[Any]] = set()

    def request(self) -> None:
        """Cancel what is running. Safe to call from a signal handler on the loop's thread."""
        self.requested = True
        for task in list(self._current):
            if not task.done():
                task.cancel()

    def check(self) -> None:
        if self.requested:
            raise Stopped()

    async def interruptible(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro`, raising Stopped instead when a stop cancels it."""
        if self.requested:
            coro.close()
            raise Stopped()
        task = asyncio.ensure_future(coro)
        self._current.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if self.requested:
                raise Stopped() from None
            raise
        finally:
            self._current.discard(task)


async def in_daemon_thread(fn: Callable[[], T]) -> T:
    """Run a long blocking call (an image build) in a daemon thread. Unlike asyncio.to_thread, a stop
    request does not have to wait for it: the interpreter's exit does not join a daemon thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def succeed(value: T) -> None:
        if not future.done():
            future.set_result(value)

    def fail(exc: BaseException) -> None:
        if not future.done():
            future.set_exception(exc)

    def work() -> None:
        try:
            value = fn()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(fail, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(succeed, value)

    threading.Thread(target=work, name="tui-profiler-image", daemon=True).start()
    return await future
