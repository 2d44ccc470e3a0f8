"""The event loop that owns the pool, and how calls from elsewhere reach it.

psycopg's async pool and procrastinate's app belong to the loop that opened
them. `LoopOwner` records that loop, starts the pool on it once, and hands
calls made on other loops or threads over to it. Sync callers with no
loop of their own get a `LoopThread`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from pgjobs.errors import UsageError

T = TypeVar("T")
Start = Callable[[], Coroutine[Any, Any, None]]


class LoopThread:
    """An event loop running forever on a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    @property
    def thread(self) -> threading.Thread:
        """The thread that runs the loop."""
        return self._thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and block until it returns."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        """Stop the loop and wait for its thread to end."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join()


def reject_running_loop() -> None:
    """Raise `UsageError` if called where an event loop is running.

    A sync method there would block the loop, and deadlock when the loop
    itself owns the pool.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise UsageError(
        "a sync method of the job system was called from a running event loop, "
        "where it would block the loop; call the async method with await instead "
        "(send instead of send_sync)"
    )


async def bridge(
    owner: asyncio.AbstractEventLoop, make: Callable[[], Coroutine[Any, Any, T]]
) -> T:
    """Run `make()` on the loop `owner`, running in another thread, and await it."""
    _check_running(owner)
    future = asyncio.run_coroutine_threadsafe(make(), owner)
    return await asyncio.wrap_future(future)


def _check_running(owner: asyncio.AbstractEventLoop) -> None:
    # A coroutine handed to a loop that is not running would wait forever.
    if not owner.is_running():
        raise UsageError(
            "the event loop that opened the job system's pool is no longer "
            "running; await jobs.stop() on that loop before using the job "
            "system from another one"
        )


def _succeeded(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


class LoopOwner:
    """Owner of the pool's loop: one start, and every call run on that loop.

    Concurrent first calls share one start. A failed start is forgotten, so
    the next call tries again. When the owning loop has been closed (an
    `asyncio.run` that returned), the next call starts afresh on its own loop
    after `on_loop_lost` has dropped what belonged to the old one.
    """

    def __init__(self, start: Start, on_loop_lost: Callable[[], None]) -> None:
        self._start = start
        self._on_loop_lost = on_loop_lost
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Task[None] | None = None
        self._thread: LoopThread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop that owns the pool, or None before the first call."""
        return self._loop

    @property
    def starting(self) -> asyncio.Task[None] | None:
        """The start task on the owning loop, done once started or failed."""
        return self._starting

    def _claim(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[asyncio.AbstractEventLoop, asyncio.Task[None] | None]:
        lost = False
        with self._lock:
            if self._loop is not None and self._loop.is_closed():
                self._loop = None
                self._starting = None
                lost = True
            if self._loop is None:
                self._loop = loop
            if self._loop is loop and self._starting is None:
                self._starting = loop.create_task(self._start(), name="pgjobs-start")
            owner, starting = self._loop, self._starting
        if lost:
            self._on_loop_lost()
        return owner, starting

    def _forget_failed_start(self, starting: asyncio.Task[None]) -> None:
        with self._lock:
            if self._starting is starting:
                self._starting = None
                self._loop = None

    async def ensure_started(self) -> asyncio.AbstractEventLoop:
        """Start the pool unless done; return the loop that owns it."""
        loop = asyncio.get_running_loop()
        starting = self._starting
        if self._loop is loop and starting is not None and _succeeded(starting):
            return loop
        owner, starting = self._claim(loop)
        if owner is not loop:
            await bridge(owner, self.ensure_started)
            return owner
        assert starting is not None
        try:
            # Shielded: one caller being cancelled must not cancel the start
            # that other callers wait for.
            await asyncio.shield(starting)
        except BaseException:
            if starting.done() and (starting.cancelled() or starting.exception()):
                self._forget_failed_start(starting)
            raise
        return owner

    async def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `make()` on the owning loop, starting the pool if needed."""
        owner = await self.ensure_started()
        if owner is asyncio.get_running_loop():
            return await make()
        return await bridge(owner, make)

    def run_sync(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `make()` from sync code and block until it returns.

        Raises:
            UsageError: called from a running event loop.
        """
        reject_running_loop()
        owner = self._loop_for_sync_call()
        _check_running(owner)
        return asyncio.run_coroutine_threadsafe(self.run(make), owner).result()

    def _loop_for_sync_call(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            owner = self._loop
            if owner is not None and not owner.is_closed():
                return owner
            if self._thread is None or self._thread.loop.is_closed():
                self._thread = LoopThread("pgjobs-loop")
            return self._thread.loop

    def reset(self) -> None:
        """Forget the owning loop after shutdown; the next call starts again."""
        with self._lock:
            self._loop = None
            self._starting = None

    def close_thread(self) -> None:
        """Stop the background loop thread, if one was started."""
        with self._lock:
            thread = self._thread
            self._thread = None
        if thread is not None:
            thread.close()
