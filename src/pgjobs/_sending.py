"""Building procrastinate jobs from `send` arguments, and writing them."""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from typing import Any

import procrastinate.exceptions
import procrastinate.jobs
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pgjobs import _payload
from pgjobs.config import MAX_PRIORITY, JobSystemConfig, Queue
from pgjobs.errors import (
    DuplicateJob,
    PayloadValidationError,
    PgJobsError,
    QueueNotFound,
)

MAX_KEY_CHARS = 255
MAX_DELAY_SECONDS = 100 * 365 * 86400
SINGLETON_INDEXES = frozenset(
    {
        procrastinate.manager.QUEUEING_LOCK_CONSTRAINT,
        "pgjobs_singleton_active_idx",
    }
)

# Used for a caller's own connection, whose search_path is its own: every
# name is qualified with the schema, and the function's search path is
# pinned by the schema migration.
_DEFER_ON_CONNECTION_SQL = sql.SQL(
    "SELECT unnest({schema}.procrastinate_defer_jobs_v1("
    "%(jobs)s::{schema}.procrastinate_job_to_defer_v1[])) AS id"
)


__all__ = ["PayloadValidationError", "SendOptionError"]


class SendOptionError(PgJobsError, ValueError):
    """An invalid option passed to `send`."""


def resolve_queue(
    config: JobSystemConfig, queue: str | Queue[Any]
) -> tuple[str, Queue[Any]]:
    """Return the name and definition of `queue`, given by name or object."""
    if isinstance(queue, Queue):
        name = config.queue_name_of(queue)
        if name is None:
            raise QueueNotFound(repr(queue), list(config.queues))
        return name, queue
    if not isinstance(queue, str):
        raise QueueNotFound(repr(queue), list(config.queues))
    definition = config.queues.get(queue)
    if definition is None:
        raise QueueNotFound(queue, list(config.queues))
    return queue, definition


def _check_key(option: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SendOptionError(
            f"{option} must be a string, got {type(value).__name__} {value!r}"
        )
    if not value or len(value) > MAX_KEY_CHARS:
        raise SendOptionError(
            f"{option} must be 1 to {MAX_KEY_CHARS} characters, got "
            f"{len(value)}: {value[:40]!r}"
        )
    if "\x00" in value:
        raise SendOptionError(f"{option} {value!r} contains a NUL character")
    return value


def scheduled_time(
    delay: float | datetime.timedelta | None,
    run_at: datetime.datetime | None,
) -> datetime.datetime | None:
    """Return when the job may start, from `delay` or `run_at`, or None."""
    if delay is not None and run_at is not None:
        raise SendOptionError(
            "pass either delay or run_at, not both "
            f"(got delay={delay!r}, run_at={run_at!r})"
        )
    if run_at is not None:
        if not isinstance(run_at, datetime.datetime):
            raise SendOptionError(
                f"run_at must be a datetime, got {type(run_at).__name__} {run_at!r}"
            )
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise SendOptionError(
                f"run_at {run_at!r} has no time zone; pass an aware datetime, "
                "e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
            )
        return run_at
    if delay is None:
        return None
    if isinstance(delay, datetime.timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise SendOptionError(
            f"delay must be seconds or a timedelta, got {type(delay).__name__} "
            f"{delay!r}"
        )
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_DELAY_SECONDS:
        raise SendOptionError(
            f"delay must be between 0 and {MAX_DELAY_SECONDS} seconds, got {delay!r}"
        )
    if seconds == 0:
        return None
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)


def build_job(
    config: JobSystemConfig,
    queue: str | Queue[Any],
    payload: Any,
    *,
    delay: float | datetime.timedelta | None,
    run_at: datetime.datetime | None,
    priority: int | None,
    singleton_key: str | None,
    lock: str | None,
) -> procrastinate.jobs.Job:
    """Validate every argument of `send` and return the job to write."""
    name, definition = resolve_queue(config, queue)
    if priority is None:
        priority = definition.priority
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise SendOptionError(
            f"priority must be an integer, got {type(priority).__name__} {priority!r}"
        )
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise SendOptionError(
            f"priority {priority} is out of range; use -{MAX_PRIORITY} to "
            f"{MAX_PRIORITY}"
        )
    data = _payload.to_json_payload(
        name, definition, payload, max_bytes=config.max_payload_bytes
    )
    return procrastinate.jobs.Job(
        queue=name,
        task_name=name,
        task_kwargs={"payload": data},
        priority=priority,
        lock=_check_key("lock", lock),
        queueing_lock=_check_key("singleton_key", singleton_key),
        scheduled_at=scheduled_time(delay, run_at),
    )


def duplicate_key(exc: BaseException) -> str | None:
    """Return the singleton key if `exc` is a singleton-key violation."""
    if isinstance(exc, procrastinate.exceptions.AlreadyEnqueued):
        cause = exc.__cause__
        if isinstance(cause, procrastinate.exceptions.UniqueViolation):
            return cause.queueing_lock or ""
        return ""
    if isinstance(exc, procrastinate.exceptions.UniqueViolation):
        if exc.constraint_name in SINGLETON_INDEXES:
            return exc.queueing_lock or ""
    if isinstance(exc, psycopg.errors.UniqueViolation):
        if exc.diag.constraint_name in SINGLETON_INDEXES:
            return ""
    return None


def duplicate_error(jobs: Sequence[procrastinate.jobs.Job], key: str) -> DuplicateJob:
    """Build the error for a singleton conflict among `jobs`."""
    keys = [job.queueing_lock for job in jobs if job.queueing_lock]
    job = next((job for job in jobs if job.queueing_lock == key), None)
    if job is None:
        job = next(job for job in jobs if job.queueing_lock)
    return DuplicateJob(job.queue, key or (keys[0] if keys else ""))


def defer_on_connection_query(schema: str) -> sql.Composed:
    """Return the insert query for a caller's connection, schema-qualified."""
    return _DEFER_ON_CONNECTION_SQL.format(schema=sql.Identifier(schema))


def defer_parameters(jobs: Sequence[procrastinate.jobs.Job]) -> dict[str, Any]:
    """Return the parameters of the insert query for `jobs`."""
    return {
        "jobs": [
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
    }
