"""Exceptions raised by pgjobs.

Every exception derives from `PgJobsError`, and also from the builtin that
matches its meaning where one fits, so callers can catch either. Messages
name the value, the rule and the fix; none contains a password or a full
connection string.
"""

from __future__ import annotations

from collections.abc import Sequence

import pydantic


class PgJobsError(Exception):
    """Base class of every error that pgjobs raises."""


def _bullets(problems: Sequence[str]) -> str:
    return "\n".join(f"  - {problem}" for problem in problems)


class ConfigError(PgJobsError, ValueError):
    """Invalid job system configuration; `problems` lists every issue found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(
            f"invalid pgjobs configuration ({count} {noun}):\n{_bullets(problems)}"
        )


class QueueNotFound(PgJobsError, LookupError):
    """A queue that the configuration does not define.

    `queue` is the name asked for, or None for a queue definition object
    that is not in the config; `known` lists the configured names.
    """

    def __init__(
        self, queue: str | None, known: Sequence[str], *, message: str | None = None
    ) -> None:
        self.queue = queue
        self.known = sorted(known)
        names = ", ".join(repr(name) for name in self.known) or "none"
        super().__init__(
            message
            or f"queue {queue!r} is not configured (configured queues: {names}); "
            "add it to JobSystemConfig.queues or fix the name"
        )


class PayloadValidationError(PgJobsError, ValueError):
    """A payload that fails its queue's model or cannot be stored as JSON.

    `field` is the path of the offending value (`payload.items[2].name`) when
    one value is at fault, else None.
    """

    def __init__(self, queue: str, message: str, *, field: str | None = None) -> None:
        self.queue = queue
        self.field = field
        self.detail = message
        super().__init__(f"invalid payload for queue {queue!r}: {message}")


class SendOptionError(PgJobsError, ValueError):
    """An invalid option passed to `send`, such as a naive `run_at`."""


class HandlerError(PgJobsError, ValueError):
    """Handlers that do not match the configured queues."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"handlers do not match the configured queues:\n{_bullets(problems)}"
        )


class DuplicateJob(PgJobsError):
    """A job with the same singleton key is already queued or running."""

    def __init__(
        self, queue: str, singleton_key: str, *, message: str | None = None
    ) -> None:
        self.queue = queue
        self.singleton_key = singleton_key
        super().__init__(
            message
            or f"a job with singleton key {singleton_key!r} is already queued or "
            f"running (queue {queue!r}); wait for it to finish, or send without "
            "raise_on_duplicate=True to receive None instead"
        )


class JobNotFound(PgJobsError, LookupError):
    """A job id that does not exist (never created, or already pruned)."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(
            f"job {job_id!r} not found; it never existed or was pruned "
            "(list jobs with `pgjobs jobs` or dashboard.get_recent_jobs())"
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


# Inputs under these top-level fields are never quoted: they may contain secrets.
_SECRET_FIELDS = frozenset({"dsn"})


def describe_location(location: Sequence[int | str], root: str = "") -> str:
    """Return a pydantic error location as a path: `queues.emails.timeout`."""
    parts = [root] if root else []
    for part in location:
        if part == "[key]":
            # pydantic's marker for an invalid dict key; the key is the path.
            continue
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif parts:
            parts.append(f".{part}")
        else:
            parts.append(part)
    return "".join(parts) or "config"


def describe_validation_errors(
    exc: pydantic.ValidationError, *, root: str = ""
) -> list[str]:
    """Turn a pydantic error into one line per problem, with the bad value.

    Each line names the field (under `root`, such as `payload`), the rule
    broken and the value received. Values of secret fields (the dsn) and of
    the whole input are never shown, since they may contain a password.
    """
    problems = []
    for error in exc.errors(include_url=False):
        location = error["loc"]
        where = describe_location(location, root)
        message = error["msg"].removeprefix("Value error, ")
        secret = not location or location[0] in _SECRET_FIELDS
        # A value_error message comes from a pgjobs validator, which quotes
        # the value itself.
        if secret or error["type"] == "value_error":
            problems.append(f"{where}: {message}")
            continue
        problems.append(f"{where}: {message} (got {error['input']!r:.200})")
    return problems
