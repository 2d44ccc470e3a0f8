"""The sending methods of `JobSystem`: send, send_many and their sync twins.

Each method validates everything first (`_sending`), then writes through the
pool on the loop that owns it, or on the caller's connection (`_defer`).
The overloads make a payload of the wrong type a static error when the
queue is given by its definition object.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypedDict, TypeVar, Unpack, overload

import procrastinate
import procrastinate.jobs
import psycopg

from pgjobs import _defer, _loop, _sending
from pgjobs._sending import Delay
from pgjobs.config import JobSystemConfig, Queue

T = TypeVar("T")
P = TypeVar("P")


class SendOptions(TypedDict, total=False):
    """Keyword options of `send` and `send_sync` other than `connection`."""

    delay: Delay
    run_at: datetime.datetime | None
    priority: int | None
    singleton_key: str | None
    lock: str | None
    raise_on_duplicate: bool


class SendManyOptions(TypedDict, total=False):
    """Keyword options of `send_many` and `send_many_sync` other than `connection`."""

    delay: Delay
    run_at: datetime.datetime | None
    priority: int | None
    singleton_keys: Sequence[str | None] | None
    lock: str | None


class SendMethods:
    """Sending, for a class that provides the config, app and loop runners."""

    config: JobSystemConfig
    app: procrastinate.App
    _dsn: str

    async def _run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        raise NotImplementedError

    def _run_sync(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        raise NotImplementedError

    @overload
    async def send(
        self,
        queue: str,
        payload: Any,
        *,
        connection: psycopg.AsyncConnection[Any] | None = ...,
        **options: Unpack[SendOptions],
    ) -> int | None: ...

    @overload
    async def send(
        self,
        queue: Queue[P],
        payload: P | Mapping[str, Any],
        *,
        connection: psycopg.AsyncConnection[Any] | None = ...,
        **options: Unpack[SendOptions],
    ) -> int | None: ...

    async def send(
        self,
        queue: Queue[Any] | str,
        payload: Any,
        *,
        delay: Delay = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
        singleton_key: str | None = None,
        lock: str | None = None,
        connection: psycopg.AsyncConnection[Any] | None = None,
        raise_on_duplicate: bool = False,
    ) -> int | None:
        """Validate a payload and enqueue one job; return its id.

        Every argument is checked before anything is written. Without
        `connection`, the first call starts the system.

        Args:
            queue: the queue's name or its definition object.
            payload: an instance of the queue's model or a mapping it accepts.
            delay: seconds (or a timedelta) before the job may start.
            run_at: aware datetime before which the job does not start.
            priority: overrides the queue's priority; higher runs first.
            singleton_key: while a job with this key is queued or running, a
                second send with the key creates nothing. Keys are shared by
                all queues, as procrastinate's queueing locks are.
            lock: jobs sharing a lock never run at the same time.
            connection: the caller's psycopg connection; the job is written in
                its current transaction and vanishes if that rolls back.
            raise_on_duplicate: raise `DuplicateJob` instead of returning None
                when the singleton key is taken.

        Returns:
            The job id, or None when the singleton key is taken.

        Raises:
            QueueNotFound: the queue is not configured.
            PayloadValidationError: the payload fails the model or cannot be
                stored; `field` names the value at fault.
            SendOptionError: an invalid option, such as a naive `run_at`.
            DuplicateJob: the key is taken and `raise_on_duplicate` is true.
            DatabaseUnavailable: the database cannot be reached.
            SchemaError: the schema is not installed.
        """
        job = _sending.build_job(
            self.config,
            queue,
            payload,
            delay=delay,
            run_at=run_at,
            priority=priority,
            singleton_key=singleton_key,
            lock=lock,
        )
        ids = await self._defer([job], connection, raise_on_duplicate)
        return ids[0] if ids else None

    @overload
    def send_sync(
        self,
        queue: str,
        payload: Any,
        *,
        connection: psycopg.Connection[Any] | None = ...,
        **options: Unpack[SendOptions],
    ) -> int | None: ...

    @overload
    def send_sync(
        self,
        queue: Queue[P],
        payload: P | Mapping[str, Any],
        *,
        connection: psycopg.Connection[Any] | None = ...,
        **options: Unpack[SendOptions],
    ) -> int | None: ...

    def send_sync(
        self,
        queue: Queue[Any] | str,
        payload: Any,
        *,
        delay: Delay = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
        singleton_key: str | None = None,
        lock: str | None = None,
        connection: psycopg.Connection[Any] | None = None,
        raise_on_duplicate: bool = False,
    ) -> int | None:
        """Enqueue one job from sync code; see `send` for the arguments.

        Safe to call from any thread. `connection` is a sync
        `psycopg.Connection`.

        Raises:
            UsageError: called from a running event loop; use `send` there.
        """
        _loop.reject_running_loop()
        job = _sending.build_job(
            self.config,
            queue,
            payload,
            delay=delay,
            run_at=run_at,
            priority=priority,
            singleton_key=singleton_key,
            lock=lock,
        )
        ids = self._defer_sync([job], connection, raise_on_duplicate)
        return ids[0] if ids else None

    @overload
    async def send_many(
        self,
        queue: str,
        payloads: Sequence[Any],
        *,
        connection: psycopg.AsyncConnection[Any] | None = ...,
        **options: Unpack[SendManyOptions],
    ) -> list[int]: ...

    @overload
    async def send_many(
        self,
        queue: Queue[P],
        payloads: Sequence[P | Mapping[str, Any]],
        *,
        connection: psycopg.AsyncConnection[Any] | None = ...,
        **options: Unpack[SendManyOptions],
    ) -> list[int]: ...

    async def send_many(
        self,
        queue: Queue[Any] | str,
        payloads: Sequence[Any],
        *,
        delay: Delay = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
        singleton_keys: Sequence[str | None] | None = None,
        lock: str | None = None,
        connection: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[int]:
        """Validate every payload, then enqueue all in one statement.

        Either every job is written or none is. The options apply to every
        job, except `singleton_keys`, which contains one key (or None) per
        payload.

        Returns:
            The job ids, in the order of `payloads`.

        Raises:
            PayloadValidationError: a payload is invalid; the message names
                its index, and nothing is written.
            DuplicateJob: a key is repeated in the call or already taken;
                nothing is written.
            QueueNotFound, SendOptionError, DatabaseUnavailable, SchemaError:
                as for `send`.
        """
        jobs = _sending.build_jobs(
            self.config,
            queue,
            payloads,
            delay=delay,
            run_at=run_at,
            priority=priority,
            singleton_keys=singleton_keys,
            lock=lock,
        )
        if not jobs:
            return []
        return await self._defer(jobs, connection, True)

    @overload
    def send_many_sync(
        self,
        queue: str,
        payloads: Sequence[Any],
        *,
        connection: psycopg.Connection[Any] | None = ...,
        **options: Unpack[SendManyOptions],
    ) -> list[int]: ...

    @overload
    def send_many_sync(
        self,
        queue: Queue[P],
        payloads: Sequence[P | Mapping[str, Any]],
        *,
        connection: psycopg.Connection[Any] | None = ...,
        **options: Unpack[SendManyOptions],
    ) -> list[int]: ...

    def send_many_sync(
        self,
        queue: Queue[Any] | str,
        payloads: Sequence[Any],
        *,
        delay: Delay = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
        singleton_keys: Sequence[str | None] | None = None,
        lock: str | None = None,
        connection: psycopg.Connection[Any] | None = None,
    ) -> list[int]:
        """Enqueue many jobs from sync code; see `send_many`.

        Raises:
            UsageError: called from a running event loop; use `send_many` there.
        """
        _loop.reject_running_loop()
        jobs = _sending.build_jobs(
            self.config,
            queue,
            payloads,
            delay=delay,
            run_at=run_at,
            priority=priority,
            singleton_keys=singleton_keys,
            lock=lock,
        )
        if not jobs:
            return []
        return self._defer_sync(jobs, connection, True)

    async def _defer(
        self,
        jobs: list[procrastinate.jobs.Job],
        connection: psycopg.AsyncConnection[Any] | None,
        raise_on_duplicate: bool,
    ) -> list[int]:
        if connection is not None:
            return await _defer.defer_on_connection(
                connection,
                jobs,
                schema=self.config.schema_name,
                raise_on_duplicate=raise_on_duplicate,
            )
        return await self._run(lambda: self._defer_on_pool(jobs, raise_on_duplicate))

    def _defer_sync(
        self,
        jobs: list[procrastinate.jobs.Job],
        connection: psycopg.Connection[Any] | None,
        raise_on_duplicate: bool,
    ) -> list[int]:
        if connection is not None:
            return _defer.defer_on_sync_connection(
                connection,
                jobs,
                schema=self.config.schema_name,
                raise_on_duplicate=raise_on_duplicate,
            )
        return self._run_sync(lambda: self._defer_on_pool(jobs, raise_on_duplicate))

    async def _defer_on_pool(
        self, jobs: list[procrastinate.jobs.Job], raise_on_duplicate: bool
    ) -> list[int]:
        return await _defer.defer_on_pool(
            self.app,
            jobs,
            dsn=self._dsn,
            schema=self.config.schema_name,
            raise_on_duplicate=raise_on_duplicate,
        )
