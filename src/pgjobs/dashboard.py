"""Dashboard: queue statistics, job lists, job detail, rerun, cancel and prune.

The data layer of an admin page or an admin API. Every query is raw,
parameterised SQL over procrastinate's tables and pgjobs' attempt records,
run through the job system's own pool. `Dashboard` is async; `SyncDashboard`
runs the same coroutines from sync code. Every return value is a pydantic
model, so `model.model_dump(mode="json")` is ready for a JSON endpoint.

Speed at a million jobs rests on migration 0002: counters of finished jobs
kept by triggers, partial indexes on (queue_name, status, id) for waiting
and running jobs and for finished ones, and indexes for search.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from pgjobs import _dashboard_args, _dashboard_queries, _db
from pgjobs._dashboard_models import (
    COUNT_LIMIT,
    FINISHED_STATES,
    JOB_STATES,
    MAX_OFFSET,
    MAX_PER_PAGE,
    MAX_SEARCH_CHARS,
    AttemptRecord,
    CancelResult,
    DashboardData,
    DashboardQueryError,
    JobDetail,
    JobEvent,
    JobPage,
    JobState,
    JobSummary,
    PruneResult,
    QueueStats,
    RerunResult,
    Stats,
)
from pgjobs._masking import mask_payload
from pgjobs.errors import JobNotFound

if TYPE_CHECKING:
    from pgjobs.system import JobSystem

T = TypeVar("T")

__all__ = [
    "COUNT_LIMIT",
    "FINISHED_STATES",
    "JOB_STATES",
    "MAX_OFFSET",
    "MAX_PER_PAGE",
    "MAX_SEARCH_CHARS",
    "AttemptRecord",
    "CancelResult",
    "Dashboard",
    "DashboardData",
    "DashboardQueryError",
    "JobDetail",
    "JobEvent",
    "JobPage",
    "JobState",
    "JobSummary",
    "PruneResult",
    "QueueStats",
    "RerunResult",
    "Stats",
    "SyncDashboard",
]


def _job_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DashboardQueryError(
            f"job_id must be a whole number, got {value!r}",
            argument="job_id",
            value=value,
        )
    return value


def _exists(job_id: int) -> bool:
    # Ids outside bigint cannot exist; asking PostgreSQL would fail instead.
    return 0 < job_id <= _dashboard_args.MAX_JOB_ID


class Dashboard:
    """Async queries and actions for an admin page; get it as `jobs.dashboard`.

    Each call borrows a connection from the job system's pool (starting the
    system if needed) and returns it before returning.
    """

    def __init__(self, system: JobSystem) -> None:
        self._system = system

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with _db.connection(self._system.pool, self._system.dsn) as conn:
            yield conn

    async def _call(
        self,
        operation: Callable[[psycopg.AsyncConnection[Any]], Coroutine[Any, Any, T]],
        *,
        read: bool = False,
    ) -> T:
        async def run() -> T:
            async with self._connection() as conn:
                if not read:
                    return await operation(conn)
                async with _dashboard_queries.read_snapshot(conn):
                    return await operation(conn)

        return await self._system._run(run)

    async def get_stats(self) -> Stats:
        """Count jobs per queue and state.

        Lists every configured queue, even with no job, then every queue that
        has jobs but is not configured (with `configured=False`).

        Raises:
            DatabaseUnavailable: the database cannot be reached.
        """
        config = self._system.config
        return await self._call(
            lambda conn: _dashboard_queries.fetch_stats(conn, config)
        )

    async def get_recent_jobs(
        self,
        *,
        page: int = 1,
        per_page: int = 50,
        queue: str | None = None,
        state: JobState | None = None,
        task: str | None = None,
        search: str | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """Return one page of jobs, newest first.

        Args:
            page: page number from 1; it may skip at most `MAX_OFFSET` jobs.
            per_page: jobs per page, 1 to `MAX_PER_PAGE`.
            queue: only jobs of this queue.
            state: only jobs in this state (see `JobState`).
            task: only jobs of this procrastinate task; in pgjobs the task
                name is the queue name. This filter is checked row by row,
                so combine it with `queue` on large tables.
            search: a job id, a singleton key, or a value found anywhere in
                the payload. Values match whole and case-sensitively: "42"
                matches the string "42" and the number 42, not "4200". Ids,
                keys and finished jobs' payloads are found through indexes.
                The payloads of waiting and running jobs are read one by
                one, so a search takes longer the more of them there are.
                A value shared by many jobs makes a slow search.
            cursor: the `next_cursor` of the previous page. It reads the
                next page at the same cost however deep it is, and jobs sent
                meanwhile do not shift it. The page number comes from it, so
                `page` is then ignored.

        Raises:
            DashboardQueryError: an argument is invalid or above its maximum.
            DatabaseUnavailable: the database cannot be reached.
        """
        query = _dashboard_args.page_query(
            page=page,
            per_page=per_page,
            queue=queue,
            state=state,
            task=task,
            search=search,
            cursor=cursor,
        )
        return await self._call(
            lambda conn: _dashboard_queries.fetch_page(conn, query), read=True
        )

    async def get_data(
        self,
        *,
        page: int = 1,
        per_page: int = 50,
        queue: str | None = None,
        state: JobState | None = None,
        task: str | None = None,
        search: str | None = None,
        cursor: str | None = None,
    ) -> DashboardData:
        """Return the statistics and one page of jobs, on one connection.

        Takes the arguments of `get_recent_jobs`. Without task or search
        filters, the page's total is taken from the statistics.
        """
        query = _dashboard_args.page_query(
            page=page,
            per_page=per_page,
            queue=queue,
            state=state,
            task=task,
            search=search,
            cursor=cursor,
        )
        config = self._system.config

        async def read(conn: psycopg.AsyncConnection[Any]) -> DashboardData:
            stats = await _dashboard_queries.fetch_stats(conn, config)
            total = _dashboard_queries.total_from_stats(stats, query)
            page = await _dashboard_queries.fetch_page(conn, query, total=total)
            return DashboardData(stats=stats, page=page)

        return await self._call(read, read=True)

    async def get_job_by_id(self, job_id: int) -> JobDetail | None:
        """Return one job with its timeline and attempt history, or None.

        Raises:
            DashboardQueryError: `job_id` is not an integer.
        """
        checked = _job_id(job_id)
        if not _exists(checked):
            return None
        config = self._system.config
        detail = await self._call(
            lambda conn: _dashboard_queries.fetch_job(conn, checked, config), read=True
        )
        definition = None if detail is None else config.queues.get(detail.queue)
        if detail is None or definition is None or definition.payload_model is None:
            return detail
        # Secret fields of the payload model are stored in clear for the
        # handler; what the dashboard returns may reach a page or a log.
        masked = mask_payload(detail.payload, definition.payload_model)
        return detail.model_copy(update={"payload": masked})

    async def rerun_job(self, job_id: int) -> RerunResult:
        """Send a finished job again as a new job; the original stays as it is.

        The copy has the same queue, task, payload, priority, lock and
        singleton key, no attempts (a fresh retry budget) and starts now.

        Returns:
            The new job's id, or `duplicate=True` and no id when a job with
            the same singleton key is waiting or running.

        Raises:
            JobNotFound: no job has this id (never sent, or pruned).
            JobStateError: the job is queued, scheduled, retrying or running.
        """
        checked = _job_id(job_id)
        if not _exists(checked):
            raise JobNotFound(checked)
        return await self._call(lambda conn: _dashboard_queries.rerun(conn, checked))

    async def cancel_job(self, job_id: int) -> CancelResult:
        """Cancel a waiting job or request the abort of a running one.

        A waiting job becomes cancelled at once. A running job gets an abort
        request (`action="abort_requested"`) and ends once, in a final state,
        without a retry. Its worker cancels an async handler, and the job
        ends as aborted. A sync handler cannot be interrupted, so it sees
        `context.should_abort()` turn true: if it then raises, the job ends
        as aborted; if it returns, as succeeded. A finished job is left as
        it is (`action="unchanged"`).

        Raises:
            JobNotFound: no job has this id (never sent, or pruned).
        """
        checked = _job_id(job_id)
        if not _exists(checked):
            raise JobNotFound(checked)
        return await self._call(lambda conn: _dashboard_queries.cancel(conn, checked))

    async def prune(
        self,
        *,
        older_than: datetime.timedelta | float,
        states: Sequence[JobState] = FINISHED_STATES,
    ) -> PruneResult:
        """Delete finished jobs whose last event is older than `older_than`.

        Their events and attempt records are deleted with them. The table is
        walked in id ranges, each deleted in its own short transaction.

        Args:
            older_than: a timedelta, or seconds.
            states: finished states to delete; waiting and running jobs are
                never pruned.

        Raises:
            DashboardQueryError: a negative age or a state that is not final.
        """
        seconds, statuses = _dashboard_args.prune_arguments(older_than, states)
        return await self._call(
            lambda conn: _dashboard_queries.prune(conn, seconds, statuses)
        )

    async def close(self) -> None:
        """Do nothing: the dashboard keeps no connection between calls.

        Connections belong to the job system's pool, which `jobs.stop()`
        closes. Safe to call any number of times; the dashboard stays usable.
        """


class SyncDashboard:
    """The dashboard for sync code; get it as `jobs.dashboard_sync`.

    Each method runs the matching `Dashboard` coroutine on the loop that owns
    the job system's pool and blocks until it returns. Calling one from a
    running event loop raises `UsageError`.
    """

    def __init__(self, system: JobSystem) -> None:
        self._system = system
        self._dashboard = Dashboard(system)

    def get_stats(self) -> Stats:
        """Count jobs per queue and state; see `Dashboard.get_stats`."""
        return self._system._run_sync(self._dashboard.get_stats)

    def get_recent_jobs(
        self,
        *,
        page: int = 1,
        per_page: int = 50,
        queue: str | None = None,
        state: JobState | None = None,
        task: str | None = None,
        search: str | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """Return one page of jobs; see `Dashboard.get_recent_jobs`."""
        return self._system._run_sync(
            lambda: self._dashboard.get_recent_jobs(
                page=page,
                per_page=per_page,
                queue=queue,
                state=state,
                task=task,
                search=search,
                cursor=cursor,
            )
        )

    def get_data(
        self,
        *,
        page: int = 1,
        per_page: int = 50,
        queue: str | None = None,
        state: JobState | None = None,
        task: str | None = None,
        search: str | None = None,
        cursor: str | None = None,
    ) -> DashboardData:
        """Return the statistics and one page; see `Dashboard.get_data`."""
        return self._system._run_sync(
            lambda: self._dashboard.get_data(
                page=page,
                per_page=per_page,
                queue=queue,
                state=state,
                task=task,
                search=search,
                cursor=cursor,
            )
        )

    def get_job_by_id(self, job_id: int) -> JobDetail | None:
        """Return one job or None; see `Dashboard.get_job_by_id`."""
        return self._system._run_sync(lambda: self._dashboard.get_job_by_id(job_id))

    def rerun_job(self, job_id: int) -> RerunResult:
        """Send a finished job again; see `Dashboard.rerun_job`."""
        return self._system._run_sync(lambda: self._dashboard.rerun_job(job_id))

    def cancel_job(self, job_id: int) -> CancelResult:
        """Cancel or abort a job; see `Dashboard.cancel_job`."""
        return self._system._run_sync(lambda: self._dashboard.cancel_job(job_id))

    def prune(
        self,
        *,
        older_than: datetime.timedelta | float,
        states: Sequence[JobState] = FINISHED_STATES,
    ) -> PruneResult:
        """Delete old finished jobs; see `Dashboard.prune`."""
        return self._system._run_sync(
            lambda: self._dashboard.prune(older_than=older_than, states=states)
        )

    def close(self) -> None:
        """Do nothing; see `Dashboard.close`.

        Unlike the other methods it does not go through the job system's
        loop, which would start the system just to do nothing.
        """
