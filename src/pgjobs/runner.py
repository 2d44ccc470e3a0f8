"""The worker processes' loop: one procrastinate worker per queue.

Each queue gets its own procrastinate `Worker`, so its concurrency is its
own. A supervisor restarts a worker whose database connection failed, with
a capped backoff, and side tasks keep heartbeats going and sweep orphaned
jobs of dead peers.

Timing, from `WorkerConfig`: every worker updates its heartbeat each
`heartbeat_interval` seconds (10 by default). A peer is taken for dead once
its heartbeat is older than `stalled_timeout` (60 by default, which must
exceed twice the heartbeat interval), and running workers sweep for such
orphans every `stalled_timeout / 2` seconds unless `orphan_sweep_interval`
is set. A crashed worker's jobs are therefore retried between
`stalled_timeout` and `1.5 * stalled_timeout` seconds after its last
heartbeat. An event loop blocked for longer than `stalled_timeout` makes a
live worker look dead, and its jobs would then run twice. Every process on
one database must use the same two settings, because each judges the
others' heartbeats by its own `stalled_timeout`. After the database was
unreachable, a process waits one `stalled_timeout` before it sweeps again,
since peers that are alive may not have reconnected yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import procrastinate
import procrastinate.worker
import psycopg

from pgjobs import _db
from pgjobs._manager import DurableJobManager
from pgjobs.config import JobSystemConfig

logger = logging.getLogger(__name__)

_FIRST_BACKOFF = 1.0
UPDATE_HEARTBEATS_SQL = """
SELECT procrastinate_update_heartbeat_v1(worker_id)
  FROM unnest(%(worker_ids)s::bigint[]) AS worker_id
"""
# Ten years: a heartbeat age that no live or dead worker reaches.
_NEVER_PRUNE = 10 * 365 * 86400.0
_MAX_BACKOFF = 30.0
_STOP_REQUEST_INTERVAL = 0.1


class _QueueWorker(procrastinate.worker.Worker):
    """A procrastinate worker that may leave cron schedules to a sibling.

    Every procrastinate worker runs a periodic deferrer for all schedules of
    its app. The database keeps one job per tick anyway, so one deferrer per
    process is enough and the others are skipped.
    """

    def __init__(self, *, defer_schedules: bool, **options: Any) -> None:
        super().__init__(**options)
        self.defer_schedules = defer_schedules

    # NOTE: overrides a private method of procrastinate 3.10. If a later
    # release renames it, every worker defers schedules again, which costs
    # one query per tick and queue but stays correct.
    async def _periodic_deferrer(self) -> None:
        if self.defer_schedules:
            await super()._periodic_deferrer()  # type: ignore[no-untyped-call]


class WorkerGroup:
    """The per-queue workers, heartbeats and orphan sweeper of one process."""

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
        # Loop time since which every heartbeat and sweep succeeded; None
        # while the database is unreachable.
        self._reachable_since: float | None = None
        self._heartbeat_conn: psycopg.AsyncConnection[Any] | None = None
        self._outage_seen = False

    @property
    def running(self) -> bool:
        """True while the group's task has not finished."""
        return self._task is not None and not self._task.done()

    @property
    def worker_ids(self) -> list[int]:
        """Database ids of the workers registered now."""
        return [
            worker.worker_id
            for worker in self._workers.values()
            if worker.worker_id is not None
        ]

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

        Jobs still running then are interrupted and put back to be retried.
        Returns once every worker has written its final statuses and left
        the database. Safe to call twice.
        """
        self._stopping.set()
        if isinstance(self.app.job_manager, DurableJobManager):
            self.app.job_manager.stop_trying(self.config.worker.graceful_timeout)
        task = self._task
        if task is None:
            return
        # A worker created just before stop() clears its stop flag when it
        # starts, so the request is repeated until the group is done.
        while not task.done():
            for worker in self._workers.values():
                worker.stop()  # type: ignore[no-untyped-call]
            await asyncio.wait({task}, timeout=_STOP_REQUEST_INTERVAL)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        if isinstance(self.app.job_manager, DurableJobManager):
            self.app.job_manager.keep_trying()
        self._reachable_since = asyncio.get_running_loop().time()
        logger.info(
            "Starting workers for queues %s",
            ", ".join(self.queues),
            extra={"action": "start_workers"},
        )
        supervisors = [
            asyncio.create_task(
                self._supervise(name, defer_schedules=index == 0),
                name=f"pgjobs-worker-{name}",
            )
            for index, name in enumerate(self.queues)
        ]
        side_tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="pgjobs-heartbeat")
        ]
        if self.sweep is not None:
            side_tasks.append(
                asyncio.create_task(self._sweep_loop(), name="pgjobs-sweeper")
            )
        try:
            await asyncio.gather(*supervisors)
        finally:
            for side_task in side_tasks:
                side_task.cancel()
            await asyncio.gather(*side_tasks, return_exceptions=True)
            await self._drop_heartbeat_connection()
            logger.info("Stopped workers", extra={"action": "stop_workers"})

    def _make_worker(self, name: str, defer_schedules: bool) -> _QueueWorker:
        settings = self.config.worker
        definition = self.config.queues[name]
        return _QueueWorker(
            defer_schedules=defer_schedules,
            app=self.app,
            queues=[name],
            name=f"{settings.name}:{name}",
            concurrency=definition.concurrency,
            wait=True,
            fetch_job_polling_interval=settings.polling_interval,
            abort_job_polling_interval=settings.abort_polling_interval,
            shutdown_graceful_timeout=settings.graceful_timeout,
            # LISTEN needs a session of its own, which a transaction-mode
            # pooler does not give; polling then finds the jobs.
            listen_notify=settings.listen_notify
            and not self.config.pool.transaction_pooling,
            install_signal_handlers=False,
            update_heartbeat_interval=settings.heartbeat_interval,
            # procrastinate prunes stalled workers when a worker starts, and
            # after an outage that would delete peers that are alive but not
            # reconnected yet. pgjobs' sweep prunes them instead, with the
            # outage taken into account.
            stalled_worker_timeout=(
                settings.stalled_timeout if self.sweep is None else _NEVER_PRUNE
            ),
        )

    async def _supervise(self, name: str, *, defer_schedules: bool) -> None:
        loop = asyncio.get_running_loop()
        backoff = _FIRST_BACKOFF
        while not self._stopping.is_set():
            worker = self._make_worker(name, defer_schedules)
            self._workers[name] = worker
            started = loop.time()
            failure: Exception | None = None
            try:
                await worker.run()  # type: ignore[no-untyped-call]
            except Exception as exc:
                failure = exc
            if failure is None and self._stopping.is_set():
                break
            # A worker that ran for a while ended on a new outage, not on the
            # one that raised the backoff: it starts again from the shortest.
            if loop.time() - started > _MAX_BACKOFF:
                backoff = _FIRST_BACKOFF
            if failure is not None:
                if _db.is_connection_error(failure):
                    self._reachable_since = None
                    self._outage_seen = True
                logger.error(
                    "Worker of queue %s failed; restarting in %.0f s",
                    name,
                    backoff,
                    exc_info=failure,
                    extra={"action": "worker_failed", "queue": name},
                )
                self.report_error(failure)
            else:
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

    async def _beat(self) -> bool:
        """Update the heartbeat of every worker of this group now.

        Returns False when no worker is registered, so nothing was written.

        Heartbeats go through a connection of their own, opened again at
        each beat after a failure. The pool's reconnection backs off for up
        to half a minute after an outage, and a heartbeat that late would
        make this live process look dead to its peers.
        """
        loop = asyncio.get_running_loop()
        worker_ids = self.worker_ids
        if not worker_ids:
            return False
        try:
            if self._heartbeat_conn is None or self._heartbeat_conn.closed:
                self._heartbeat_conn = await _db.connect(self.config)
            await self._heartbeat_conn.execute(
                UPDATE_HEARTBEATS_SQL, {"worker_ids": worker_ids}
            )
        except Exception:
            self._reachable_since = None
            self._outage_seen = True
            await self._drop_heartbeat_connection()
            raise
        if self._reachable_since is None:
            self._reachable_since = loop.time()
        return True

    async def _drop_heartbeat_connection(self) -> None:
        conn, self._heartbeat_conn = self._heartbeat_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _heartbeat_loop(self) -> None:
        # procrastinate stops a worker's heartbeat as soon as the worker
        # begins to stop, while its jobs may run for the graceful timeout or,
        # for a sync handler, until the thread returns. Without this beat a
        # peer would take such a worker for dead and run its jobs twice.
        interval = self.config.worker.heartbeat_interval
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                beaten = await self._beat()
            except Exception as exc:
                # Logged once per outage: the database being down is already
                # reported by every worker.
                if not failing:
                    logger.warning(
                        "Could not update worker heartbeats: %s",
                        exc,
                        extra={"action": "heartbeat_failed"},
                    )
                failing = True
            else:
                if failing and beaten:
                    logger.info(
                        "Worker heartbeats updated again",
                        extra={"action": "heartbeat_restored"},
                    )
                failing = failing and not beaten

    def _outage_is_recent(self) -> bool:
        # During an outage no worker can beat, and afterwards each process
        # reconnects at its own pace. Until the database has been reachable
        # for a whole stalled timeout, a stale heartbeat may belong to a
        # live worker that has not reconnected yet.
        if self._reachable_since is None:
            return True
        elapsed = asyncio.get_running_loop().time() - self._reachable_since
        return elapsed < self.config.worker.stalled_timeout

    async def _sweep_loop(self) -> None:
        assert self.sweep is not None  # the loop only starts with a sweep
        interval = self.config.worker.sweep_interval
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)
            if self._stopping.is_set():
                return
            if self._outage_is_recent():
                # Also true just after start-up, which is not worth a line.
                level = logging.INFO if self._outage_seen else logging.DEBUG
                logger.log(
                    level,
                    "Orphan sweep postponed until this process has reached the "
                    "database for %g s, so that peers can reconnect first",
                    self.config.worker.stalled_timeout,
                    extra={"action": "sweep_postponed"},
                )
                continue
            try:
                # This process's own workers are alive: beat first, so that
                # the sweep never takes their jobs for orphans.
                await self._beat()
                await self.sweep()
            except Exception as exc:
                if _db.is_connection_error(exc):
                    self._reachable_since = None
                    self._outage_seen = True
                logger.exception(
                    "Orphan sweep failed; retrying in %.0f s",
                    interval,
                    extra={"action": "sweep_failed"},
                )
                self.report_error(exc)
