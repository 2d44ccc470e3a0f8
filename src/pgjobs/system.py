"""The job system: lazy start, sending, workers and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

import procrastinate
import procrastinate.jobs
import psycopg
import psycopg_pool

from pgjobs import _db, _loop, _sending, bootstrap
from pgjobs._manager import DurableJobManager
from pgjobs._send_methods import SendMethods
from pgjobs.config import JobSystemConfig, Queue, build_config
from pgjobs.errors import UsageError
from pgjobs.types import Handler

if TYPE_CHECKING:
    from pgjobs.dashboard import Dashboard, SyncDashboard
    from pgjobs.runner import WorkerGroup

logger = logging.getLogger(__name__)

T = TypeVar("T")
HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])

Handlers: TypeAlias = (
    Mapping[str, Handler]
    | Mapping[Queue[Any], Handler]
    | Mapping[str | Queue[Any], Handler]
)
"""Handlers keyed by queue name, by queue definition, or by either."""
P = TypeVar("P")


class JobSystem(SendMethods):
    """A configured job system; build it with `create_job_system`.

    Nothing touches the database until the first call that needs it. That
    first call opens the pool and the procrastinate app once, even when
    several callers arrive at the same time. The pool belongs to the event
    loop that opened it; calls from other loops or threads are handed to it.
    Sending is documented in `SendMethods`, which this class inherits.
    """

    def __init__(self, config: JobSystemConfig) -> None:
        if config.dsn is None:
            raise UsageError("JobSystem needs a config with a dsn")
        self.config = config
        self._dsn = config.dsn.get_secret_value()
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector())
        self.app.job_manager = DurableJobManager(self.app.connector)
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        self._owner = _loop.LoopOwner(self._start, self._forget_loop)
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
        await _db.check_reachable(self.config)
        pool = _db.create_pool(self.config)
        try:
            await pool.open(wait=True, timeout=self.config.pool.connect_timeout)
            await self.app.open_async(pool)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, psycopg.Error | psycopg_pool.PoolTimeout):
                raise _db.unavailable(self._dsn, exc) from None
            raise
        self._pool = pool
        logger.info(
            "Connected to PostgreSQL at %s (schema %s)",
            _db.describe_dsn(self._dsn),
            self.config.schema_name,
            extra={"action": "start"},
        )

    def _forget_loop(self) -> None:
        # The loop that owned the pool was closed (asyncio.run returned), so
        # the pool went with it; the next call starts afresh on its own loop.
        self._pool = None
        self._detach_pool()
        self._setup.forget()

    def _detach_pool(self) -> None:
        # procrastinate keeps the first pool it was given and ignores later
        # ones, so a fresh connector lets the next start hand it a new pool.
        self.app.connector = procrastinate.PsycopgConnector()
        self.app.job_manager.connector = self.app.connector

    async def _run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `make()` on the loop that owns the pool, starting it if needed."""
        return await self._owner.run(make)

    def _run_sync(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `make()` from sync code on the loop that owns the pool.

        Raises:
            UsageError: called from a running event loop.
        """
        return self._owner.run_sync(make)

    async def get_app(self) -> procrastinate.App:
        """Start the system if needed and return its open procrastinate app."""
        await self._run(_noop)
        return self.app

    # -- handlers, workers, schema ----------------------------------------

    def handler(self, queue: str | Queue[Any]) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function as the handler of `queue`.

        `init_jobs()` and `pgjobs worker` use registered handlers when no
        mapping is passed. The function is returned unchanged.

        Raises:
            QueueNotFound: the queue is not configured.
            UsageError: another function is already registered for the queue.
        """
        name, _ = _sending.resolve_queue(self.config, queue)

        def register(function: HandlerT) -> HandlerT:
            existing = self._handlers.get(name)
            if existing is not None and existing is not function:
                raise UsageError(
                    f"queue {name!r} already has the handler "
                    f"{_describe(existing)}; remove one of the two "
                    f"registrations of {_describe(function)} or "
                    f"{_describe(existing)}"
                )
            self._handlers[name] = function
            return function

        return register

    @property
    def handlers(self) -> dict[str, Handler]:
        """Handlers registered with the `handler` decorator, by queue name."""
        return dict(self._handlers)

    async def init_jobs(
        self,
        handlers: Handlers | None = None,
        *,
        start_worker: bool = True,
        queues: Sequence[str] | None = None,
    ) -> None:
        """Prepare the database and start the workers unless start_worker is False.

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
        resolved = self._setup.resolve_handlers(_widen(handlers), queues)
        await self._run(lambda: self._setup.run(resolved, start_worker, queues))

    def init_jobs_sync(
        self,
        handlers: Handlers | None = None,
        *,
        start_worker: bool = True,
        queues: Sequence[str] | None = None,
    ) -> None:
        """Run `init_jobs` from sync code; workers run on a background thread."""
        resolved = self._setup.resolve_handlers(_widen(handlers), queues)
        self._run_sync(lambda: self._setup.run(resolved, start_worker, queues))

    async def run_worker(
        self,
        handlers: Handlers | None = None,
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
        owner = self._owner.loop
        if owner is not None and not owner.is_closed():
            if owner is asyncio.get_running_loop():
                await self._shutdown()
            else:
                await _loop.bridge(owner, self._shutdown)
        self._owner.close_thread()

    def stop_sync(self) -> None:
        """Run `stop` from sync code.

        Raises:
            UsageError: called from a running event loop; use `stop` there.
        """
        _loop.reject_running_loop()
        owner = self._owner.loop
        if owner is not None and not owner.is_closed():
            asyncio.run_coroutine_threadsafe(self._shutdown(), owner).result()
        self._owner.close_thread()

    async def _shutdown(self) -> None:
        starting = self._owner.starting
        if starting is not None and not starting.done():
            # A start still running would open a pool after this closes one.
            with contextlib.suppress(Exception):
                await asyncio.shield(starting)
        await self._setup.stop_workers()
        pool = self._pool
        self._pool = None
        self._owner.reset()
        if pool is None:
            return
        await self.app.close_async()
        self._detach_pool()
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


def _widen(handlers: Handlers | None) -> Mapping[str | Queue[Any], Handler] | None:
    # Mapping is invariant in its key type, so a dict keyed by str alone is
    # not a Mapping[str | Queue, ...] to mypy, although reading it is safe.
    return cast("Mapping[str | Queue[Any], Handler] | None", handlers)


def create_job_system(config: JobSystemConfig | Mapping[str, Any]) -> JobSystem:
    """Validate `config` and return a job system. Does no I/O.

    Raises:
        ConfigError: the configuration is invalid; every problem is listed.
    """
    return JobSystem(build_config(config))


def _describe(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}.{name}" if module else name
