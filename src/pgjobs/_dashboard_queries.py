"""The dashboard's SQL and the mapping of its rows to models.

Each function takes a pooled connection and is written once. `Dashboard` runs
it on the job system's loop, and `SyncDashboard` reaches it through the same
coroutine. The SQL lives in `pgjobs/sql/dashboard/`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Mapping
from importlib import resources
from typing import Any, Literal, LiteralString

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgjobs import _dashboard_rows, _defer
from pgjobs._dashboard_args import MAX_JOB_ID, PageQuery, encode_cursor
from pgjobs._dashboard_models import (
    COUNT_LIMIT,
    FINISHED_STATES,
    CancelResult,
    JobDetail,
    JobPage,
    JobSummary,
    PruneResult,
    RerunResult,
    Stats,
)
from pgjobs.config import JobSystemConfig
from pgjobs.errors import JobNotFound, JobStateError

logger = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[Any]

# Ids per DELETE statement of prune: each range is one short transaction.
PRUNE_BATCH_IDS = 20_000


def _load(name: str) -> LiteralString:
    folder = resources.files("pgjobs.sql") / "dashboard"
    # Files shipped inside the package are as trusted as code. mypy treats
    # LiteralString as str, so no cast is needed for it to accept this.
    text: LiteralString = (folder / name).read_text(encoding="utf-8")
    return text


STATS_SQL = _load("stats.sql")
COUNT_SQL = _load("count_jobs.sql")
JOB_DETAIL_SQL = _load("job_detail.sql")
LOCK_JOB_SQL = _load("lock_job.sql")
RERUN_SQL = _load("rerun_job.sql")
CANCEL_SQL = _load("cancel_job.sql")
JOB_STATE_SQL = _load("job_state.sql")
PRUNE_SQL = _load("prune_jobs.sql")
PRUNE_RANGE_SQL = _load("prune_range.sql")

# Each page query is a `candidates` CTE chosen by the filters, followed by
# the shared SELECT that adds the times from the event table.
_CANDIDATES = {
    "latest": _load("jobs_latest.sql"),
    "filtered": _load("jobs_filtered.sql"),
    "search": _load("jobs_search.sql"),
}
_PAGE_ROWS = _load("page_rows.sql")
_COUNT_CANDIDATES = "SELECT count(*) AS total FROM candidates"


@contextlib.asynccontextmanager
async def read_snapshot(conn: Connection) -> AsyncIterator[None]:
    """Run the block in one read-only snapshot, without JIT or parallel plans.

    One snapshot keeps the statistics and the page of `get_data` consistent
    with each other. JIT is off because the planner's cost estimates of the
    merged job-list scans can pass jit_above_cost, and compiling then takes
    hundreds of milliseconds for a query that runs in one or two. Parallel
    workers are off because starting them cost more than the count of
    waiting jobs they share (about 20 ms against 10 ms on PostgreSQL 15 with
    2 cores and 45,000 waiting jobs). Pipeline mode sends BEGIN and the
    settings with the first query, in one round trip.
    """
    async with conn.pipeline(), conn.transaction():
        await conn.execute(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", prepare=False
        )
        await conn.execute("SET LOCAL jit = off", prepare=False)
        await conn.execute(
            "SET LOCAL max_parallel_workers_per_gather = 0", prepare=False
        )
        yield


def _candidates_kind(query: PageQuery) -> str:
    if query.search is not None:
        return "search"
    if query.queue is not None or query.state is not None:
        return "filtered"
    return "latest"


def _page_sql(kind: str) -> LiteralString:
    return "WITH RECURSIVE " + _CANDIDATES[kind] + "\n" + _PAGE_ROWS


def _capped_count_sql(kind: str) -> LiteralString:
    return "WITH RECURSIVE " + _CANDIDATES[kind] + "\n" + _COUNT_CANDIDATES


async def _fetch_all(
    conn: Connection,
    query: LiteralString,
    params: Mapping[str, Any],
    *,
    custom_plan: bool = False,
) -> list[dict[str, Any]]:
    # custom_plan: plan each call with its own values, never from a prepared
    # statement, so that optional filters written as (%(x)s IS NULL OR ...)
    # fold away and each plan uses the index of the filters actually given.
    # Other queries let psycopg prepare them after a few calls, which saves
    # their planning time.
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, params, prepare=False if custom_plan else None)
        return await cursor.fetchall()


async def _fetch_one(
    conn: Connection,
    query: LiteralString,
    params: Mapping[str, Any],
    *,
    custom_plan: bool = False,
) -> dict[str, Any] | None:
    rows = await _fetch_all(conn, query, params, custom_plan=custom_plan)
    return rows[0] if rows else None


async def fetch_stats(conn: Connection, config: JobSystemConfig) -> Stats:
    """Count jobs per queue and state."""
    rows = await _fetch_all(conn, STATS_SQL, {})
    return _dashboard_rows.build_stats(rows, config)


async def fetch_page(
    conn: Connection, query: PageQuery, *, total: int | None = None
) -> JobPage:
    """Read one page of jobs, newest first, and count the matches.

    `total`, when given, is the exact count of the filters, known already.
    """
    kind = _candidates_kind(query)
    params = query.params(
        limit=query.per_page + 1, offset=query.offset, before=query.before
    )
    rows = await _fetch_all(conn, _page_sql(kind), params, custom_plan=True)
    jobs = [JobSummary.model_validate(_dashboard_rows.summary(row)) for row in rows]
    more = len(jobs) > query.per_page
    jobs = jobs[: query.per_page]
    estimate = False
    if total is None and rows and rows[0]["total_matches"] is not None:
        total = int(rows[0]["total_matches"])
    if total is None and not rows and query.offset == 0 and query.before == MAX_JOB_ID:
        total = 0
    if total is None:
        total, estimate = await count_jobs(conn, query, kind)
    return JobPage(
        jobs=jobs,
        page=query.page,
        per_page=query.per_page,
        total=total,
        total_is_estimate=estimate,
        pages=max(1, math.ceil(total / query.per_page)),
        next_cursor=encode_cursor(jobs[-1].id, query.page + 1) if more else None,
    )


async def count_jobs(conn: Connection, query: PageQuery, kind: str) -> tuple[int, bool]:
    """Return (number of matches, whether it is only a lower bound)."""
    if query.task is None and query.search is None:
        params = query.params(limit=0, offset=0, before=MAX_JOB_ID)
        row = await _fetch_one(conn, COUNT_SQL, params, custom_plan=True)
        return (int(row["total"]) if row else 0), False
    # No index counts task or search matches, so they are counted one by one,
    # up to a limit that keeps the cost of one page bounded.
    params = query.params(limit=COUNT_LIMIT + 1, offset=0, before=MAX_JOB_ID)
    row = await _fetch_one(conn, _capped_count_sql(kind), params, custom_plan=True)
    counted = int(row["total"]) if row else 0
    if counted > COUNT_LIMIT:
        return COUNT_LIMIT, True
    return counted, False


def total_from_stats(stats: Stats, query: PageQuery) -> int | None:
    """Return the exact count of the page's filters from `stats`, if it has it."""
    if query.task is not None or query.search is not None:
        return None
    if query.queue is None:
        counts = stats.totals
    else:
        found = [queue for queue in stats.queues if queue.queue == query.queue]
        if not found:
            return 0
        counts = found[0]
    if query.state is None:
        return counts.total
    return int(getattr(counts, query.state))


async def fetch_job(
    conn: Connection, job_id: int, config: JobSystemConfig
) -> JobDetail | None:
    """Read one job with its timeline and attempt history, or None."""
    row = await _fetch_one(conn, JOB_DETAIL_SQL, {"job_id": job_id})
    if row is None:
        return None
    return _dashboard_rows.build_detail(row, config)


async def rerun(conn: Connection, job_id: int) -> RerunResult:
    """Send a copy of a finished job; see `Dashboard.rerun_job`."""
    try:
        async with conn.transaction():
            job = await _fetch_one(conn, LOCK_JOB_SQL, {"job_id": job_id})
            if job is None:
                raise JobNotFound(job_id)
            if job["state"] not in FINISHED_STATES:
                raise JobStateError(
                    job_id,
                    job["state"],
                    "only a finished job (succeeded, failed, cancelled or aborted) "
                    "can be rerun, or it would run twice; cancel it first or wait "
                    "for it to finish",
                )
            params = {
                "queue_name": job["queue_name"],
                "task_name": job["task_name"],
                "priority": job["priority"],
                "lock": job["lock"],
                "queueing_lock": job["queueing_lock"],
                "args": Jsonb(job["args"]),
            }
            created = await _fetch_one(conn, RERUN_SQL, params)
    except psycopg.errors.UniqueViolation as exc:
        if _defer.duplicate_key(exc) is None:
            raise
        logger.info(
            "Job %s not rerun: its singleton key is taken by a waiting or running job",
            job_id,
            extra={"action": "rerun_duplicate", "job_id": job_id},
        )
        return RerunResult(original_id=job_id, job_id=None, duplicate=True)
    assert created is not None
    new_id = int(created["id"])
    logger.info(
        "Reran job %s as job %s",
        job_id,
        new_id,
        extra={"action": "rerun", "queue": job["queue_name"], "job_id": new_id},
    )
    return RerunResult(original_id=job_id, job_id=new_id, duplicate=False)


async def cancel(conn: Connection, job_id: int) -> CancelResult:
    """Cancel a waiting job or request the abort of a running one."""
    async with conn.transaction():
        job = await _fetch_one(conn, LOCK_JOB_SQL, {"job_id": job_id})
        if job is None:
            raise JobNotFound(job_id)
        previous = job["state"]
        if previous in FINISHED_STATES:
            return CancelResult(
                job_id=job_id,
                previous_state=previous,
                state=previous,
                action="unchanged",
            )
        params = {"job_id": job_id, "abort": previous == "running"}
        await _fetch_one(conn, CANCEL_SQL, params)
        now = await _fetch_one(conn, JOB_STATE_SQL, {"job_id": job_id})
    assert now is not None
    action: Literal["cancelled", "abort_requested"] = (
        "abort_requested" if previous == "running" else "cancelled"
    )
    logger.info(
        "Job %s %s",
        job_id,
        "abort requested" if action == "abort_requested" else "cancelled",
        extra={"action": action, "queue": job["queue_name"], "job_id": job_id},
    )
    return CancelResult(
        job_id=job_id, previous_state=previous, state=now["state"], action=action
    )


async def prune(
    conn: Connection, older_than_seconds: float, statuses: tuple[str, ...]
) -> PruneResult:
    """Delete finished jobs whose last event is older than the given age."""
    bounds = await _fetch_one(conn, PRUNE_RANGE_SQL, {"age": older_than_seconds})
    deleted = 0
    if bounds is None or bounds["first_id"] is None:
        return PruneResult(deleted=0)
    first_id, last_id = int(bounds["first_id"]), int(bounds["last_id"])
    while first_id <= last_id:
        end_id = first_id + PRUNE_BATCH_IDS
        row = await _fetch_one(
            conn,
            PRUNE_SQL,
            {
                "first_id": first_id,
                "end_id": end_id,
                "statuses": list(statuses),
                "cutoff": bounds["cutoff"],
            },
        )
        deleted += int(row["deleted"]) if row else 0
        first_id = end_id
    logger.info(
        "Pruned %d finished jobs older than %g s",
        deleted,
        older_than_seconds,
        extra={"action": "prune"},
    )
    return PruneResult(deleted=deleted)
