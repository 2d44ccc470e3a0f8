"""The worker processes' loop: one procrastinate worker per queue.

Each queue gets its own procrastinate `Worker`, so its concurrency is its
own. A supervisor restarts a worker whose database connection failed, with
a capped backoff, and a side task sweeps orphaned jobs of dead peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import procrastinate
import procrastinate.worker

from pgjobs.config import JobSystemConfig

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 30.0


class WorkerGroup:
    """The per-queue workers and the orphan sweeper of one process."""

    def __init__(
        self,
        *,
        app: procrastinate.App,
        config: JobSystemConfig,
        queues: Sequence[str],
        sweep: Callable[[], Awaitable[Any]] | None,
        report_error: Callable[[BaseException], None],
    ) -> None:
        self.app = app
        self.config = config
        self.queues = list(queues)
        self.sweep = sweep
        self.report_error = report_error
        self._workers: dict[str, procrastinate.worker.Worker] = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True while the group's task has not finished."""
        return self._task is not None and not self._task.done()

    def start(self) -> asyncio.Task[None]:
        """Start the group on the running loop and return its task."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="pgjobs-workers"
            )
        return self._task

    async def wait(self) -> None:
        """Wait until the group stops."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Stop fetching, let running jobs finish up to the graceful timeout.

        Jobs still running then are aborted and put back to be retried.
        Returns once every worker has written its final statuses.
        """
        self._stopping.set()
        task = self._task
        if task is None:
            return
        # A worker created just before stop() clears its stop flag when it
        # starts, so the request is repeated until the group is done.
        while not task.done():
            for worker in self._workers.values():
                worker.stop()
            await asyncio.wait({task}, timeout=0.1)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        logger.info(
            "Starting workers for queues %s",
            ", ".join(self.queues),
            extra={"action": "start_workers"},
        )
        supervisors = [
            asyncio.create_task(self._supervise(name), name=f"pgjobs-worker-{name}")
            for name in self.queues
        ]
        sweeper = None
        if self.sweep is not None:
            sweeper = asyncio.create_task(self._sweep_loop(), name="pgjobs-sweeper")
        try:
            await asyncio.gather(*supervisors)
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            logger.info("Stopped workers", extra={"action": "stop_workers"})

    def _make_worker(self, name: str) -> procrastinate.worker.Worker:
        settings = self.config.worker
        definition = self.config.queues[name]
        return procrastinate.worker.Worker(
            app=self.app,
            queues=[name],
            name=f"{settings.name}:{name}",
            concurrency=definition.concurrency,
            wait=True,
            fetch_job_polling_interval=settings.polling_interval,
            abort_job_polling_interval=settings.abort_polling_interval,
            shutdown_graceful_timeout=settings.graceful_timeout,
            listen_notify=settings.listen_notify,
            install_signal_handlers=False,
            update_heartbeat_interval=settings.heartbeat_interval,
            stalled_worker_timeout=settings.stalled_timeout,
        )

    async def _supervise(self, name: str) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            worker = self._make_worker(name)
            self._workers[name] = worker
            try:
                await worker.run()
            except Exception as exc:
                logger.exception(
                    "Worker of queue %s failed; restarting in %.0f s",
                    name,
                    backoff,
                    extra={"action": "worker_failed", "queue": name},
                )
                self.report_error(exc)
            else:
                if self._stopping.is_set():
                    break
                logger.warning(
                    "Worker of queue %s stopped on its own; restarting in %.0f s",
                    name,
                    backoff,
                    extra={"action": "worker_restart", "queue": name},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)
        self._workers.pop(name, None)

    async def _sweep_loop(self) -> None:
        assert self.sweep is not None
        interval = self.config.worker.sweep_interval
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)
            if self._stopping.is_set():
                return
            try:
                await self.sweep()
            except Exception as exc:
                logger.exception(
                    "Orphan sweep failed; retrying in %.0f s",
                    interval,
                    extra={"action": "sweep_failed"},
                )
                self.report_error(exc)
