"""Dashboard: queue statistics, job lists, job detail, rerun, cancel and prune.

The data layer of an admin page or an admin API. Every query is raw,
parameterised SQL over procrastinate's tables and pgjobs' attempt records,
run through the job system's own pool. `Dashboard` is async; `SyncDashboard`
runs the same coroutines from sync code. Every return value is a pydantic
model, so `model.model_dump(mode="json")` is ready for a JSON endpoint.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from pgjobs.errors import PgJobsError

if TYPE_CHECKING:
    from pgjobs.system import JobSystem

JobState = Literal[
    "queued",
    "scheduled",
    "retrying",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "aborted",
]
"""A job's state as users see it.

queued: waiting and ready now. scheduled: waiting for a start time in the
future. retrying: waiting again after a failed attempt. running: claimed by
a worker. The other four are final.
"""

JOB_STATES: tuple[JobState, ...] = (
    "queued",
    "scheduled",
    "retrying",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "aborted",
)
FINISHED_STATES: tuple[JobState, ...] = ("succeeded", "failed", "cancelled", "aborted")

MAX_PER_PAGE = 500
"""The largest accepted `per_page`."""

MAX_OFFSET = 100_000
"""The deepest row a page number may reach; deeper pages need the cursor."""

MAX_SEARCH_CHARS = 500
"""The longest accepted `search` text."""


class DashboardQueryError(PgJobsError, ValueError):
    """An invalid argument of a dashboard query: page, per_page, cursor, state."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class QueueStats(_Model):
    """Job counts of one queue, or of all queues together in `Stats.totals`.

    Attributes:
        queue: the queue name ("*" in the totals).
        configured: False for a queue found in the table that the job
            system's configuration no longer defines.
        oldest_ready_age_seconds: seconds since the oldest ready job became
            ready (its start time, or when it was sent); None when no job is
            ready.
        settings: the queue's settings as last recorded by `init_jobs`.
    """

    queue: str
    configured: bool
    queued: int = 0
    scheduled: int = 0
    running: int = 0
    retrying: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    aborted: int = 0
    total: int = 0
    oldest_ready_age_seconds: float | None = None
    settings: dict[str, Any] | None = None


class Stats(_Model):
    """Counts per queue, configured queues first, and their totals."""

    queues: list[QueueStats]
    totals: QueueStats
    generated_at: datetime.datetime


class JobSummary(_Model):
    """One row of a job list.

    Times come from procrastinate's event table: `created_at` is when the
    job was sent, `started_at` when its latest attempt started and
    `finished_at` when it reached a final state.
    """

    id: int
    queue: str
    task: str
    state: JobState
    priority: int
    singleton_key: str | None
    attempts: int
    created_at: datetime.datetime | None
    scheduled_at: datetime.datetime | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None


class JobPage(_Model):
    """One page of jobs, newest first, and where the next page starts.

    Attributes:
        total: jobs matching the filters; an estimate when
            `total_is_estimate` is True.
        pages: pages of `per_page` jobs needed for `total`, at least 1.
        next_cursor: pass it as `cursor` to get the next page; None on the
            last page.
    """

    jobs: list[JobSummary]
    page: int
    per_page: int
    total: int
    total_is_estimate: bool
    pages: int
    next_cursor: str | None


class AttemptRecord(_Model):
    """One recorded attempt: a failure, a stored result or a recovery."""

    attempt: int
    outcome: str
    worker_id: int | None
    worker_name: str | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    duration_seconds: float | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    result: Any = None


class JobEvent(_Model):
    """One entry of a job's timeline, as procrastinate recorded it."""

    type: str
    at: datetime.datetime | None


class JobDetail(_Model):
    """Everything known about one job."""

    id: int
    queue: str
    task: str
    state: JobState
    payload: Any
    priority: int
    singleton_key: str | None
    lock: str | None
    attempts: int
    retry_limit: int | None
    created_at: datetime.datetime | None
    scheduled_at: datetime.datetime | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    abort_requested: bool
    result: Any = None
    events: list[JobEvent]
    attempt_history: list[AttemptRecord]


class RerunResult(_Model):
    """Outcome of `rerun_job`.

    `job_id` is the new job's id, or None with `duplicate=True` when a job
    with the same singleton key is already queued or running.
    """

    original_id: int
    job_id: int | None
    duplicate: bool


class CancelResult(_Model):
    """Outcome of `cancel_job`.

    action: "cancelled" for a waiting job, "abort_requested" for a running
    one (it ends as aborted), "unchanged" for a finished one.
    """

    job_id: int
    previous_state: JobState
    state: JobState
    action: Literal["cancelled", "abort_requested", "unchanged"]


class PruneResult(_Model):
    """Number of jobs that `prune` deleted."""

    deleted: int


class DashboardData(_Model):
    """Statistics and one page of jobs, read together."""

    stats: Stats
    page: JobPage


class Dashboard:
    """Async queries and actions for an admin page; get it as `jobs.dashboard`."""

    def __init__(self, system: JobSystem) -> None:
        self._system = system

    async def get_stats(self) -> Stats:
        """Count jobs per queue and state."""
        raise NotImplementedError

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
        """Return one page of jobs, newest first."""
        raise NotImplementedError

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
        """Return the statistics and one page of jobs."""
        raise NotImplementedError

    async def get_job_by_id(self, job_id: int) -> JobDetail | None:
        """Return one job with its timeline and attempts, or None."""
        raise NotImplementedError

    async def rerun_job(self, job_id: int) -> RerunResult:
        """Enqueue a fresh copy of a finished job."""
        raise NotImplementedError

    async def cancel_job(self, job_id: int) -> CancelResult:
        """Cancel a waiting job or request the abort of a running one."""
        raise NotImplementedError

    async def prune(
        self,
        *,
        older_than: datetime.timedelta | float,
        states: Sequence[JobState] = FINISHED_STATES,
    ) -> PruneResult:
        """Delete finished jobs older than `older_than`."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the dashboard holds; safe to call twice."""
        raise NotImplementedError


class SyncDashboard:
    """The dashboard for sync code; get it as `jobs.dashboard_sync`."""

    def __init__(self, system: JobSystem) -> None:
        self._system = system
        self._dashboard = Dashboard(system)

    def get_stats(self) -> Stats:
        """Count jobs per queue and state; see `Dashboard.get_stats`."""
        raise NotImplementedError

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
        raise NotImplementedError

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
        raise NotImplementedError

    def get_job_by_id(self, job_id: int) -> JobDetail | None:
        """Return one job or None; see `Dashboard.get_job_by_id`."""
        raise NotImplementedError

    def rerun_job(self, job_id: int) -> RerunResult:
        """Enqueue a fresh copy of a finished job; see `Dashboard.rerun_job`."""
        raise NotImplementedError

    def cancel_job(self, job_id: int) -> CancelResult:
        """Cancel or abort a job; see `Dashboard.cancel_job`."""
        raise NotImplementedError

    def prune(
        self,
        *,
        older_than: datetime.timedelta | float,
        states: Sequence[JobState] = FINISHED_STATES,
    ) -> PruneResult:
        """Delete old finished jobs; see `Dashboard.prune`."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the dashboard holds; safe to call twice."""
        raise NotImplementedError
