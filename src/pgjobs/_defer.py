"""Writing jobs: through the pool, or on the caller's own connection.

A taken singleton key surfaces here as a unique violation from PostgreSQL,
because only the database can check keys without a race. It is turned into
None or `DuplicateJob` and never passed on as a database error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import procrastinate
import procrastinate.exceptions
import procrastinate.jobs
import procrastinate.manager
import psycopg
import psycopg.rows
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from pgjobs import _db
from pgjobs.errors import DuplicateJob, SendOptionError, UsageError

# procrastinate's index covers queued jobs only; pgjobs' own also covers
# running ones. Either may report a taken singleton key.
SINGLETON_INDEXES = frozenset(
    {procrastinate.manager.QUEUEING_LOCK_CONSTRAINT, "pgjobs_singleton_active_idx"}
)

# Used on a caller's own connection, whose search_path is its own: every
# name is qualified with the schema, and the function's search path is
# pinned by the schema migration.
_DEFER_ON_CONNECTION_SQL = sql.SQL(
    "SELECT unnest({schema}.procrastinate_defer_jobs_v1("
    "%(jobs)s::{schema}.procrastinate_job_to_defer_v1[])) AS id"
)


def duplicate_key(exc: BaseException) -> str | None:
    """Return the singleton key (or "" if unknown) of a taken-key error, else None."""
    if isinstance(exc, procrastinate.exceptions.AlreadyEnqueued):
        cause = exc.__cause__
        if isinstance(cause, procrastinate.exceptions.UniqueViolation):
            return cause.queueing_lock or ""
        return ""
    if (
        isinstance(exc, procrastinate.exceptions.UniqueViolation)
        and exc.constraint_name in SINGLETON_INDEXES
    ):
        return exc.queueing_lock or ""
    if (
        isinstance(exc, psycopg.errors.UniqueViolation)
        and exc.diag.constraint_name in SINGLETON_INDEXES
    ):
        return ""
    return None


def _on_duplicate(
    jobs: Sequence[procrastinate.jobs.Job],
    exc: BaseException,
    raise_on_duplicate: bool,
) -> list[int]:
    key = duplicate_key(exc)
    if key is None:
        raise exc
    if raise_on_duplicate or len(jobs) > 1:
        raise _duplicate_error(jobs, key) from None
    return []


def _duplicate_error(jobs: Sequence[procrastinate.jobs.Job], key: str) -> DuplicateJob:
    # A violation of the pgjobs index reports no key. With one keyed job the
    # key is that job's, and among several the first keyed job is named.
    keyed = [job for job in jobs if job.queueing_lock]
    job = next((job for job in keyed if job.queueing_lock == key), keyed[0])
    return DuplicateJob(job.queue, key or job.queueing_lock or "")


async def defer_on_pool(
    app: procrastinate.App,
    jobs: list[procrastinate.jobs.Job],
    *,
    dsn: str,
    schema: str,
    raise_on_duplicate: bool,
) -> list[int]:
    """Write `jobs` through the app's pool in one statement; return their ids.

    A taken singleton key returns [] for one job (or raises `DuplicateJob`
    when asked, and always for several, since nothing was written).
    """
    try:
        with _db.translate_errors(dsn, schema):
            deferred = await app.job_manager.batch_defer_jobs_async(jobs)
    except (
        procrastinate.exceptions.AlreadyEnqueued,
        procrastinate.exceptions.UniqueViolation,
    ) as exc:
        return _on_duplicate(jobs, exc, raise_on_duplicate)
    return [job.id for job in deferred if job.id is not None]


def _defer_statement(
    jobs: Sequence[procrastinate.jobs.Job], schema: str
) -> tuple[sql.Composed, dict[str, Any]]:
    query = _DEFER_ON_CONNECTION_SQL.format(schema=sql.Identifier(schema))
    rows = [
        (
            job.queue,
            job.task_name,
            job.priority,
            job.lock,
            job.queueing_lock,
            Jsonb(job.task_kwargs),
            job.scheduled_at,
        )
        for job in jobs
    ]
    return query, {"jobs": rows}


def _use_savepoint(
    connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
) -> bool:
    """Tell whether the insert must run in a savepoint of the caller's transaction.

    Inside a transaction, a failed insert (a taken singleton key) would
    abort the caller's whole transaction; a savepoint confines it. Outside
    one, the single statement is atomic by itself.
    """
    status = connection.info.transaction_status
    if status == TransactionStatus.INERROR:
        raise UsageError(
            "the connection passed to send is in a failed transaction; roll it "
            "back before sending"
        )
    return status == TransactionStatus.INTRANS


def _check_connection(connection: object, expected: type[Any], method: str) -> None:
    if not isinstance(connection, expected):
        other = "send_sync" if method == "send" else "send"
        raise SendOptionError(
            f"connection= of {method}() must be a psycopg.{expected.__name__}, got "
            f"{type(connection).__name__}; use {other}() for the other kind"
        )


async def defer_on_connection(
    connection: psycopg.AsyncConnection[Any],
    jobs: list[procrastinate.jobs.Job],
    *,
    schema: str,
    raise_on_duplicate: bool,
) -> list[int]:
    """Write `jobs` in the current transaction of the caller's connection.

    The caller commits or rolls back; a taken singleton key leaves the
    caller's transaction as it was.
    """
    _check_connection(connection, psycopg.AsyncConnection, "send")
    query, params = _defer_statement(jobs, schema)
    # psycopg's info.dsn leaves out the password.
    dsn = connection.info.dsn
    savepoint = _use_savepoint(connection)
    idle = connection.info.transaction_status == TransactionStatus.IDLE
    try:
        with _db.translate_errors(dsn, schema):
            async with connection.cursor(row_factory=psycopg.rows.tuple_row) as cur:
                if savepoint:
                    async with connection.transaction():
                        await cur.execute(query, params)
                else:
                    await cur.execute(query, params)
                rows = await cur.fetchall()
    except psycopg.errors.UniqueViolation as exc:
        if idle and not connection.autocommit:
            # The insert opened the transaction and failed in it: roll back
            # to the idle state the caller left.
            await connection.rollback()
        return _on_duplicate(jobs, exc, raise_on_duplicate)
    return [row[0] for row in rows]


def defer_on_sync_connection(
    connection: psycopg.Connection[Any],
    jobs: list[procrastinate.jobs.Job],
    *,
    schema: str,
    raise_on_duplicate: bool,
) -> list[int]:
    """Sync twin of `defer_on_connection`, for a `psycopg.Connection`."""
    _check_connection(connection, psycopg.Connection, "send_sync")
    query, params = _defer_statement(jobs, schema)
    # psycopg's info.dsn leaves out the password.
    dsn = connection.info.dsn
    savepoint = _use_savepoint(connection)
    idle = connection.info.transaction_status == TransactionStatus.IDLE
    try:
        with (
            _db.translate_errors(dsn, schema),
            connection.cursor(row_factory=psycopg.rows.tuple_row) as cur,
        ):
            if savepoint:
                with connection.transaction():
                    cur.execute(query, params)
            else:
                cur.execute(query, params)
            rows = cur.fetchall()
    except psycopg.errors.UniqueViolation as exc:
        if idle and not connection.autocommit:
            connection.rollback()
        return _on_duplicate(jobs, exc, raise_on_duplicate)
    return [row[0] for row in rows]
