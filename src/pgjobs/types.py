"""Shared types: the job context handed to handlers, and handler signatures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias


@dataclass(frozen=True)
class JobContext:
    """Information about the running job, passed to its handler.

    A handler that takes a second parameter receives this object.
    """

    job_id: int
    queue: str
    attempt: int
    retry_limit: int
    worker_name: str
    scheduled_for: float | None = None
    interrupted_runs: int = 0
    """Earlier runs that a stopping worker interrupted, which use no retry."""
    _abort_checks: tuple[Callable[[], bool], ...] = field(default=(), repr=False)

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure now would not be retried."""
        return self.attempt - self.interrupted_runs > self.retry_limit

    def should_abort(self) -> bool:
        """Return True once the job is cancelled, timed out or the worker stops.

        A sync handler cannot be interrupted from outside its thread; a
        long-running one should check this and return or raise promptly.
        """
        return any(check() for check in self._abort_checks)


Handler: TypeAlias = Callable[..., Any] | Callable[..., Awaitable[Any]]
"""A queue's handler: `(payload)` or `(payload, context)`, sync or async."""
