"""The job system: lazy start, sending, workers and shutdown."""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import procrastinate
import procrastinate.exceptions
import procrastinate.jobs
import psycopg
import psycopg_pool

from pgjobs import _db, _sending, bootstrap
from pgjobs._loop import LoopThread
from pgjobs.config import JobSystemConfig, Queue, build_config
from pgjobs.errors import DatabaseUnavailable, UsageError
from pgjobs.types import Handler

if TYPE_CHECKING:
    from pgjobs.dashboard import Dashboard, SyncDashboard
    from pgjobs.runner import WorkerGroup

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = TypeVar("P")
Delay = float | datetime.timedelta | None


class JobSystem:
    """A configured job system; build it with `create_job_system`.

    Nothing touches the database until the first call that needs it. That
    first call opens the pool and the procrastinate app once, even when
    several callers arrive at the same time. The pool belongs to the event
    loop that opened it; calls from other loops or threads are handed to it.
    """

    def __init__(self, config: JobSystemConfig) -> None:
        self.config = config
        assert config.dsn is not None
        self._dsn = config.dsn.get_secret_value()
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector())
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Future[None] | None = None
        self._lock = threading.Lock()
        self._loop_thread: LoopThread | None = None
        self._handlers: dict[str, Handler] = {}
        self._setup = bootstrap.Setup(self)
        self._dashboard: Dashboard | None = None
        self._sync_dashboard: SyncDashboard | None = None

    def __repr__(self) -> str:
        target = _db.describe_dsn(self._dsn)
        return f"<JobSystem {target} schema={self.config.schema_name!r}>"

    # -- start-up and loop ownership --------------------------------------

    @property
    def started(self) -> bool:
        """True once the pool is open."""
        return self._pool is not None

    @property
    def pool(self) -> psycopg_pool.AsyncConnectionPool:
        """The open connection pool; raises `UsageError` before the start."""
        if self._pool is None:
            raise UsageError(
                "the job system is not started; await jobs.get_app() or call any "
                "method that uses the database first"
            )
        return self._pool

    @property
    def dsn(self) -> str:
        """The connection string; treat it as a secret."""
        return self._dsn

    def report_error(self, exc: BaseException) -> None:
        """Pass `exc` to the configured on_error callback, if any."""
        callback = self.config.on_error
        if callback is None:
            return
        try:
            callback(exc)
        except Exception:
            logger.exception(
                "on_error callback raised", extra={"action": "on_error_failed"}
            )

    async def _start(self) -> None:
        pool = _db.create_pool(self.config)
        target = _db.describe_dsn(self._dsn)
        try:
            await pool.open(wait=True, timeout=self.config.pool.connect_timeout)
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            await pool.close()
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {target} within "
                f"{self.config.pool.connect_timeout:g} s ({type(exc).__name__}); "
                "check that the server is running and the dsn is right"
            ) from None
        await self.app.open_async(pool)
        self._pool = pool
        logger.info(
            "Connected to PostgreSQL at %s (schema %s)",
            target,
            self.config.schema_name,
            extra={"action": "start"},
        )

    async def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not None and self._loop.is_closed():
                self._forget_loop()
            if self._loop is None:
                self._loop = loop
            owner = self._loop
            if owner is loop and self._starting is None:
                self._starting = loop.create_task(self._start(), name="pgjobs-start")
            starting = self._starting
        if owner is not loop:
            await self._bridge(owner, self._ensure_started)
            return
        assert starting is not None
        try:
            await asyncio.shield(starting)
        except BaseException:
            with self._lock:
                if self._starting is starting and starting.done():
                    self._starting = None
                    self._loop = None
            raise

    def _forget_loop(self) -> None:
        # The loop that owned the pool was closed (asyncio.run returned), so
        # the pool went with it; the next call starts afresh on its own loop.
        self._loop = None
        self._starting = None
        self._pool = None
        self._setup.forget()

    @staticmethod
    async def _bridge(
        owner: asyncio.AbstractEventLoop,
        make: Callable[[], Coroutine[Any, Any, T]],
    ) -> T:
        future = asyncio.run_coroutine_threadsafe(make(), owner)
        return await asyncio.wrap_future(future)

    async def _run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `make()` on the loop that owns the pool, starting it if needed."""
        await self._ensure_started()
        owner = self._loop
        if owner is None or owner is asyncio.get_running_loop():
            return await make()
        return await self._bridge(owner, make)

    def _run_sync(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `make()` from sync code: on the owning loop, or on a thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise UsageError(
                "a sync method of the job system was called from a running event "
                "loop, where it would block; use the async method with await"
            )
        with self._lock:
            owner = self._loop
            if owner is not None and owner.is_closed():
                owner = None
            if owner is None:
                if self._loop_thread is None or self._loop_thread.loop.is_closed():
                    self._loop_thread = LoopThread("pgjobs-loop")
                owner = self._loop_thread.loop
        return asyncio.run_coroutine_threadsafe(self._run(make), owner).result()

    async def get_app(self) -> procrastinate.App:
        """Start the system if needed and return its open procrastinate app."""
        await self._run(_noop)
        return self.app

    # -- sending ----------------------------------------------------------

    @overload
    async def send(
        self,
        queue: Queue[P],
        payload: P | Mapping[str, Any],
        *,
        delay: Delay = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
        singleton_key: str | None = None,
        lock: str | None = None,
        connection: psycopg.AsyncConnection[Any] | None = None,
        raise_on_duplicate: bool = False,
    ) -> int | None: ...

    @overload
    async def send(
        self,
        queue: str,
        payload: Any,
        *,
        delay: Delay = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
        singleton_key: str | None = None,
        lock: str | None = None,
        connection: psycopg.AsyncConnection[Any] | None = None,
        raise_on_duplicate: bool = False,
    ) -> int | None: ...

    async def send(
        self,
        queue: str | Queue[Any],
        payload: Any,
        *,
        delay: Delay = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
        singleton_key: str | None = None,
        lock: str | None = None,
        connection: psycopg.AsyncConnection[Any] | None = None,
        raise_on_duplicate: bool = False,
    ) -> int | None:
        """Validate a payload and enqueue one job; return its id.

        Args:
            queue: the queue's name or its definition object.
            payload: a model instance or a mapping the queue's model accepts.
            delay: seconds (or a timedelta) before the job may start.
            run_at: aware datetime before which the job does not start.
            priority: overrides the queue's priority; higher runs first.
            singleton_key: while a job with this key is queued or running, a
                second send with the key creates nothing.
            lock: jobs sharing a lock never run at the same time.
            connection: the caller's psycopg connection; the job is written in
                its current transaction and vanishes if that rolls back.
            raise_on_duplicate: raise `DuplicateJob` instead of returning None
                when the singleton key is taken.

        Returns:
            The job id, or None when the singleton key is taken.

        Raises:
            QueueNotFound, PayloadValidationError, SendOptionError,
            DuplicateJob, DatabaseUnavailable.
        """
        job = _sending.build_job(
            self.config,
            queue,
            payload,
            delay=delay,
            run_at=run_at,
            priority=priority,
            singleton_key=singleton_key,
            lock=lock,
        )
        ids = await self._defer([job], connection, raise_on_duplicate)
        return ids[0] if ids else None

    def send_sync(
        self,
        queue: str | Queue[Any],
        payload: Any,
        *,
        delay: Delay = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
        singleton_key: str | None = None,
        lock: str | None = None,
        connection: psycopg.Connection[Any] | None = None,
        raise_on_duplicate: bool = False,
    ) -> int | None:
        """Enqueue one job from sync code; see `send` for the arguments."""
        job = _sending.build_job(
            self.config,
            queue,
            payload,
            delay=delay,
            run_at=run_at,
            priority=priority,
            singleton_key=singleton_key,
            lock=lock,
        )
        if connection is not None:
            ids = self._defer_on_sync_connection([job], connection, raise_on_duplicate)
        else:
            ids = self._run_sync(lambda: self._defer_on_pool([job], raise_on_duplicate))
        return ids[0] if ids else None

    async def send_many(
        self,
        queue: str | Queue[Any],
        payloads: Sequence[Any],
        *,
        delay: Delay = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
        connection: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[int]:
        """Validate every payload, then enqueue all in one round trip.

        Either every job is written or none is: one invalid payload raises
        `PayloadValidationError` naming its index before anything is sent.
        """
        jobs = self._build_many(queue, payloads, delay, run_at, priority)
        if not jobs:
            return []
        return await self._defer(jobs, connection, True)

    def send_many_sync(
        self,
        queue: str | Queue[Any],
        payloads: Sequence[Any],
        *,
        delay: Delay = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
        connection: psycopg.Connection[Any] | None = None,
    ) -> list[int]:
        """Enqueue many jobs from sync code; see `send_many`."""
        jobs = self._build_many(queue, payloads, delay, run_at, priority)
        if not jobs:
            return []
        if connection is not None:
            return self._defer_on_sync_connection(jobs, connection, True)
        return self._run_sync(lambda: self._defer_on_pool(jobs, True))

    def _build_many(
        self,
        queue: str | Queue[Any],
        payloads: Sequence[Any],
        delay: Delay,
        run_at: datetime.datetime | None,
        priority: int | None,
    ) -> list[procrastinate.jobs.Job]:
        if isinstance(payloads, str | bytes | Mapping) or not isinstance(
            payloads, Sequence
        ):
            raise _sending.SendOptionError(
                f"payloads must be a list of payloads, got {type(payloads).__name__}"
            )
        jobs = []
        for index, payload in enumerate(payloads):
            try:
                job = _sending.build_job(
                    self.config,
                    queue,
                    payload,
                    delay=delay,
                    run_at=run_at,
                    priority=priority,
                    singleton_key=None,
                    lock=None,
                )
            except _sending.PayloadValidationError as exc:
                raise type(exc)(exc.queue, f"payloads[{index}]: {exc}") from None
            jobs.append(job)
        return jobs

    async def _defer(
        self,
        jobs: list[procrastinate.jobs.Job],
        connection: psycopg.AsyncConnection[Any] | None,
        raise_on_duplicate: bool,
    ) -> list[int]:
        if connection is None:
            return await self._run(
                lambda: self._defer_on_pool(jobs, raise_on_duplicate)
            )
        query = _sending.defer_on_connection_query(self.config.schema_name)
        try:
            with _db.translate_errors(self._dsn):
                async with connection.cursor() as cursor:
                    await cursor.execute(query, _sending.defer_parameters(jobs))
                    rows = await cursor.fetchall()
        except psycopg.errors.UniqueViolation as exc:
            return _on_duplicate(jobs, exc, raise_on_duplicate)
        return [row[0] for row in rows]

    def _defer_on_sync_connection(
        self,
        jobs: list[procrastinate.jobs.Job],
        connection: psycopg.Connection[Any],
        raise_on_duplicate: bool,
    ) -> list[int]:
        query = _sending.defer_on_connection_query(self.config.schema_name)
        try:
            with _db.translate_errors(self._dsn), connection.cursor() as cursor:
                cursor.execute(query, _sending.defer_parameters(jobs))
                rows = cursor.fetchall()
        except psycopg.errors.UniqueViolation as exc:
            return _on_duplicate(jobs, exc, raise_on_duplicate)
        return [row[0] for row in rows]

    async def _defer_on_pool(
        self, jobs: list[procrastinate.jobs.Job], raise_on_duplicate: bool
    ) -> list[int]:
        try:
            with _db.translate_errors(self._dsn):
                deferred = await self.app.job_manager.batch_defer_jobs_async(jobs)
        except (
            procrastinate.exceptions.AlreadyEnqueued,
            procrastinate.exceptions.UniqueViolation,
        ) as exc:
            return _on_duplicate(jobs, exc, raise_on_duplicate)
        return [job.id for job in deferred if job.id is not None]

    # -- handlers, workers, schema ----------------------------------------

    def handler(
        self, queue: str | Queue[Any]
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Register the decorated function as the handler of `queue`.

        `init_jobs()` and `pgjobs worker` use registered handlers when no
        mapping is passed.
        """
        name, _ = _sending.resolve_queue(self.config, queue)

        def register(function: Callable[..., T]) -> Callable[..., T]:
            self._handlers[name] = function
            return function

        return register

    @property
    def handlers(self) -> dict[str, Handler]:
        """Handlers registered with the `handler` decorator, by queue name."""
        return dict(self._handlers)

    async def init_jobs(
        self,
        handlers: Mapping[str | Queue[Any], Handler] | None = None,
        *,
        start_worker: bool = True,
        queues: Sequence[str] | None = None,
    ) -> None:
        """Prepare the database and, unless told not to, start the workers.

        Steps: start the pool, install the schema if absent (under an
        advisory lock), recover orphaned jobs, check the handlers against the
        queues, register one task per queue and the cron schedules, and start
        the workers as a task on the running loop. Calling it again does
        nothing new.

        Args:
            handlers: queue name (or definition) to handler; defaults to the
                handlers registered with `handler`.
            start_worker: False prepares everything but runs no worker here.
            queues: work only these queues in this process (all by default).

        Raises:
            HandlerError: handlers and queues do not match; nothing is written.
            SchemaError: the schema exists at another version.
            DatabaseUnavailable: the database cannot be reached.
        """
        resolved = self._setup.resolve_handlers(handlers, queues)
        await self._run(lambda: self._setup.run(resolved, start_worker, queues))

    def init_jobs_sync(
        self,
        handlers: Mapping[str | Queue[Any], Handler] | None = None,
        *,
        start_worker: bool = True,
        queues: Sequence[str] | None = None,
    ) -> None:
        """Run `init_jobs` from sync code; workers run on a background thread."""
        resolved = self._setup.resolve_handlers(handlers, queues)
        self._run_sync(lambda: self._setup.run(resolved, start_worker, queues))

    async def run_worker(
        self,
        handlers: Mapping[str | Queue[Any], Handler] | None = None,
        *,
        queues: Sequence[str] | None = None,
    ) -> None:
        """Run workers in the foreground until `stop()` is called."""
        await self.init_jobs(handlers, queues=queues)
        group = self._setup.workers
        if group is not None:
            await self._run(group.wait)

    async def migrate(self) -> list[str]:
        """Install or upgrade the schema; return the names of what was applied."""
        return await self._run(self._setup.migrate)

    async def recover_orphans(self) -> list[Any]:
        """Settle jobs left running by dead workers now; return what was done."""
        return await self._run(self._setup.recover_orphans)

    @property
    def workers(self) -> WorkerGroup | None:
        """The workers running in this process, if any."""
        return self._setup.workers

    async def stop(self) -> None:
        """Stop workers gracefully, then close the pool. Safe to call twice.

        Running jobs get the graceful timeout to finish; the rest are aborted
        and put back to be retried. Every final status is written before the
        pool closes.
        """
        owner = self._loop
        if owner is not None and not owner.is_closed():
            if owner is asyncio.get_running_loop():
                await self._shutdown()
            else:
                await self._bridge(owner, self._shutdown)
        thread = self._loop_thread
        self._loop_thread = None
        if thread is not None:
            thread.close()

    def stop_sync(self) -> None:
        """Run `stop` from sync code."""
        owner = self._loop
        if owner is not None and not owner.is_closed():
            asyncio.run_coroutine_threadsafe(self._shutdown(), owner).result()
        thread = self._loop_thread
        self._loop_thread = None
        if thread is not None:
            thread.close()

    async def _shutdown(self) -> None:
        await self._setup.stop_workers()
        pool = self._pool
        with self._lock:
            self._pool = None
            self._starting = None
            self._loop = None
        if pool is not None:
            await self.app.close_async()
            self.app.connector = procrastinate.PsycopgConnector()
            self.app.job_manager.connector = self.app.connector
            await pool.close()
            logger.info("Stopped the job system", extra={"action": "stop"})

    # -- dashboard --------------------------------------------------------

    @property
    def dashboard(self) -> Dashboard:
        """Async queries and actions for an admin page."""
        from pgjobs.dashboard import Dashboard

        if self._dashboard is None:
            self._dashboard = Dashboard(self)
        return self._dashboard

    @property
    def dashboard_sync(self) -> SyncDashboard:
        """The dashboard for sync code."""
        from pgjobs.dashboard import SyncDashboard

        if self._sync_dashboard is None:
            self._sync_dashboard = SyncDashboard(self)
        return self._sync_dashboard


async def _noop() -> None:
    return None


def _on_duplicate(
    jobs: Sequence[procrastinate.jobs.Job],
    exc: BaseException,
    raise_on_duplicate: bool,
) -> list[int]:
    key = _sending.duplicate_key(exc)
    if key is None:
        raise exc
    if raise_on_duplicate or len(jobs) > 1:
        raise _sending.duplicate_error(jobs, key) from None
    return []


def create_job_system(config: JobSystemConfig | Mapping[str, Any]) -> JobSystem:
    """Validate `config` and return a job system. Does no I/O.

    Raises:
        ConfigError: the configuration is invalid; every problem is listed.
    """
    return JobSystem(build_config(config))
