"""Exceptions raised by pgjobs.

Every exception derives from `PgJobsError`, and also from the builtin that
matches its meaning where one fits, so callers can catch either.
"""

from __future__ import annotations

from collections.abc import Sequence


class PgJobsError(Exception):
    """Base class of every error that pgjobs raises."""


class ConfigError(PgJobsError, ValueError):
    """Invalid job system configuration; `problems` lists every issue found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"invalid pgjobs configuration ({count} {noun}):\n{lines}")


class QueueNotFound(PgJobsError, LookupError):
    """A queue name that the configuration does not define."""

    def __init__(self, queue: str, known: Sequence[str]) -> None:
        self.queue = queue
        names = ", ".join(repr(name) for name in sorted(known)) or "none"
        super().__init__(
            f"queue {queue!r} is not configured (configured queues: {names}); "
            "add it to JobSystemConfig.queues or fix the name"
        )


class PayloadValidationError(PgJobsError, ValueError):
    """A payload that fails its queue's model or cannot be stored as JSON."""

    def __init__(self, queue: str, message: str) -> None:
        self.queue = queue
        super().__init__(f"invalid payload for queue {queue!r}: {message}")


class ScheduleError(ConfigError):
    """Invalid cron schedule."""


class HandlerError(PgJobsError, ValueError):
    """Handlers that do not match the configured queues."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"handlers do not match the configured queues:\n{lines}")


class DuplicateJob(PgJobsError):
    """A job with the same singleton key is already queued or running."""

    def __init__(self, queue: str, singleton_key: str) -> None:
        self.queue = queue
        self.singleton_key = singleton_key
        super().__init__(
            f"a job with singleton key {singleton_key!r} is already queued or "
            f"running (queue {queue!r}); wait for it to finish, or send without "
            "raise_on_duplicate=True to receive None instead"
        )


class JobNotFound(PgJobsError, LookupError):
    """A job id that does not exist (never created, or already pruned)."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(
            f"job {job_id!r} not found; it never existed or was pruned "
            "(list jobs with dashboard.get_recent_jobs())"
        )


class JobStateError(PgJobsError):
    """An action that the job's current state does not allow."""

    def __init__(self, job_id: int, state: str, message: str) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(f"job {job_id} is {state}: {message}")


class DatabaseUnavailable(PgJobsError, ConnectionError):
    """The database cannot be reached; the message names host, port and database."""


class SchemaError(PgJobsError):
    """The database schema is missing or at a version pgjobs cannot use."""


class JobTimeout(PgJobsError, TimeoutError):
    """A handler ran past its queue's timeout; the attempt counts as failed."""

    def __init__(self, queue: str, job_id: int, timeout: float) -> None:
        self.queue = queue
        self.job_id = job_id
        self.timeout = timeout
        super().__init__(
            f"job {job_id} on queue {queue!r} timed out after {timeout:g} s; "
            "raise the queue's timeout or make the handler faster"
        )


class WorkerLost(PgJobsError):
    """A job whose worker stopped sending heartbeats while it ran."""


class UsageError(PgJobsError, RuntimeError):
    """An API call made in a context where it cannot work."""
