"""Return types of the dashboard, its limits and its argument error.

Re-exported by `pgjobs.dashboard`; import them from there.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pgjobs.errors import PgJobsError

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

MAX_OFFSET = 10_000
"""The number of jobs a page number may skip; deeper pages need the cursor.

A page number is served with OFFSET, whose cost grows with the depth; the
keyset cursor in `JobPage.next_cursor` costs the same at any depth.
"""

COUNT_LIMIT = 10_000
"""Matches counted one by one, where no index or counter gives the total."""

MAX_SEARCH_CHARS = 500
"""The longest accepted `search` text."""


class DashboardQueryError(PgJobsError, ValueError):
    """An invalid dashboard argument: page, per_page, cursor, state, search, age.

    `argument` names the parameter, `value` is what was passed and `maximum`
    the documented limit it broke, where there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        argument: str | None = None,
        value: Any = None,
        maximum: int | None = None,
    ) -> None:
        super().__init__(message)
        self.argument = argument
        self.value = value
        self.maximum = maximum


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
        total: jobs matching the filters. It is exact, except with a task
            filter or a search on a page past its last match. There, jobs
            are counted one by one up to `COUNT_LIMIT`. Beyond that, `total`
            is `COUNT_LIMIT` and `total_is_estimate` is True, which means
            that the real number is larger.
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
    """One attempt of a job.

    pgjobs writes a record only for a failed attempt, a non-null result or a
    recovery. Other attempts are rebuilt from procrastinate's events, with
    no worker or error. outcome is one of succeeded, failed, timed_out,
    aborted, interrupted, worker_lost, or running for the attempt under way.
    """

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
    """One entry of a job's timeline, as procrastinate recorded it.

    `JobDetail.events` lists them by `at`. A 'scheduled' event's `at` is the
    start time it set, which may be in the future.
    """

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
    one (see `Dashboard.cancel_job` for how it ends), "unchanged" for a
    finished one. `state` is the state right after the call.
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
