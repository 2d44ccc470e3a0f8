"""What runs inside a worker: one procrastinate task per queue.

Each queue's task validates the stored payload, calls the user's handler
under the queue's timeout, records the attempt, and leaves retrying to
procrastinate through `QueueRetryStrategy`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import datetime
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import procrastinate
import procrastinate.job_context
import procrastinate.jobs
import psycopg_pool
import pydantic
import pydantic_core
from procrastinate.retry import BaseRetryStrategy, RetryDecision

from pgjobs import _attempts, _payload
from pgjobs.config import JobSystemConfig, Queue
from pgjobs.errors import JobTimeout, PayloadValidationError, WorkerLost
from pgjobs.types import Handler, JobContext

logger = logging.getLogger(__name__)

# Exponents above this would only overflow; the cap applies long before.
_MAX_BACKOFF_EXPONENT = 62


class WorkerInterrupted(Exception):
    """The worker stopped before the job finished; the job is always retried."""


NON_RETRIABLE: tuple[type[BaseException], ...] = (PayloadValidationError,)


class Runtime(Protocol):
    """What a queue task needs from its job system."""

    @property
    def config(self) -> JobSystemConfig: ...

    @property
    def pool(self) -> psycopg_pool.AsyncConnectionPool: ...

    def report_error(self, exc: BaseException) -> None: ...


def retry_delay(definition: Queue[Any], attempts: int) -> float:
    """Return the seconds to wait before the retry that follows `attempts`.

    `attempts` counts the runs so far, so the first retry gets the base delay.
    """
    if not definition.retry_backoff:
        return definition.retry_delay
    base = definition.retry_delay or 1.0
    exponent = min(max(attempts - 1, 0), _MAX_BACKOFF_EXPONENT)
    return float(min(definition.retry_delay_max, base * 2**exponent))


class QueueRetryStrategy(BaseRetryStrategy):
    """procrastinate retry strategy built from a queue's retry settings."""

    def __init__(self, definition: Queue[Any]) -> None:
        self.definition = definition

    def get_retry_decision(
        self, *, exception: BaseException, job: procrastinate.jobs.Job
    ) -> RetryDecision | None:
        if isinstance(exception, WorkerInterrupted):
            return RetryDecision(retry_in={"seconds": 0})
        if not isinstance(exception, Exception):
            return None
        if isinstance(exception, NON_RETRIABLE):
            return None
        if job.attempts >= self.definition.retry_limit:
            return None
        delay = retry_delay(self.definition, job.attempts + 1)
        retry_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            seconds=delay
        )
        return RetryDecision(retry_at=retry_at)


def takes_context(handler: Callable[..., Any]) -> bool:
    """Tell whether `handler` accepts a second, context, argument."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return False
    positional = [
        parameter
        for parameter in signature.parameters.values()
        if parameter.kind
        in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    has_varargs = any(
        parameter.kind == parameter.VAR_POSITIONAL
        for parameter in signature.parameters.values()
    )
    return len(positional) >= 2 or has_varargs


def is_async(handler: Callable[..., Any]) -> bool:
    """Tell whether calling `handler` returns an awaitable."""
    call = getattr(handler, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def _storable_result(value: Any) -> tuple[Any, str | None]:
    """Return (JSON value, None) or (None, why the value cannot be stored)."""
    if value is None:
        return None, None
    try:
        data = pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError as exc:
        return None, f"result of type {type(value).__name__} is not JSON: {exc}"
    problem = _payload.find_unstorable(data)
    if problem:
        return None, problem.replace("payload", "result", 1)
    return data, None


class QueueTask:
    """The procrastinate task function of one queue."""

    def __init__(
        self,
        runtime: Runtime,
        queue_name: str,
        definition: Queue[Any],
        handler: Handler,
    ) -> None:
        self.runtime = runtime
        self.queue_name = queue_name
        self.definition = definition
        self.handler = handler
        self.with_context = takes_context(handler)
        self.handler_is_async = is_async(handler)
        self.retry_strategy = QueueRetryStrategy(definition)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.__name__ = f"pgjobs_queue_{queue_name}"

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """Return the thread pool of sync handlers, sized to the concurrency."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.definition.concurrency,
                thread_name_prefix=f"pgjobs-{self.queue_name}",
            )
        return self._executor

    def shutdown(self) -> None:
        """Release the handler threads once no job runs."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def __call__(
        self,
        context: procrastinate.JobContext,
        payload: Any = None,
        timestamp: int | None = None,
    ) -> Any:
        job = context.job
        assert job.id is not None
        attempt = job.attempts + 1
        timed_out = threading.Event()
        job_context = JobContext(
            job_id=job.id,
            queue=self.queue_name,
            attempt=attempt,
            retry_limit=self.definition.retry_limit,
            worker_name=context.worker_name or "",
            scheduled_for=float(timestamp) if timestamp is not None else None,
            _abort_checks=(context.should_abort, timed_out.is_set),
        )
        started_at = datetime.datetime.fromtimestamp(
            context.start_timestamp, datetime.UTC
        )
        try:
            argument = _payload.load_payload(self.definition, payload or {})
        except pydantic.ValidationError as exc:
            error = PayloadValidationError(
                self.queue_name,
                f"stored payload of job {job.id} no longer matches "
                f"{self.definition.payload_model}: {exc}",
            )
            await self._on_failure(context, job_context, started_at, error, payload)
            raise error from None

        try:
            result = await self._run_handler(argument, job_context, timed_out)
        except asyncio.CancelledError as exc:
            reason = context.abort_reason()
            if reason is procrastinate.job_context.AbortReason.SHUTDOWN:
                interrupted = WorkerInterrupted(
                    f"worker stopped while job {job.id} ran; the job is retried"
                )
                await self._record_failure(
                    context, attempt, started_at, interrupted, "interrupted"
                )
                raise interrupted from exc
            await self._record_failure(context, attempt, started_at, exc, "aborted")
            raise
        except Exception as exc:
            await self._on_failure(context, job_context, started_at, exc, argument)
            raise

        data, problem = _storable_result(result)
        if problem:
            logger.warning(
                "Job %s returned a result that cannot be stored: %s",
                job.id,
                problem,
                extra=self._extra(job, attempt, "result_not_stored"),
            )
        if data is not None or problem:
            await self._record(
                _attempts.Attempt(
                    job_id=job.id,
                    attempt=attempt,
                    outcome="succeeded",
                    worker_id=job.worker_id,
                    worker_name=context.worker_name,
                    started_at=started_at,
                    result=data,
                    error_message=problem,
                )
            )
        return data

    async def _run_handler(
        self, argument: Any, job_context: JobContext, timed_out: threading.Event
    ) -> Any:
        args = (argument, job_context) if self.with_context else (argument,)
        timeout = self.definition.timeout
        if self.handler_is_async:
            try:
                async with asyncio.timeout(timeout) as scope:
                    return await self.handler(*args)
            except TimeoutError:
                if scope.expired():
                    raise JobTimeout(
                        self.queue_name, job_context.job_id, timeout or 0
                    ) from None
                raise
        return await self._run_sync(args, job_context, timed_out)

    async def _run_sync(
        self, args: tuple[Any, ...], job_context: JobContext, timed_out: threading.Event
    ) -> Any:
        # A thread cannot be killed. To keep a retry from ever overlapping a
        # timed-out or cancelled run, the job stays running until the thread
        # returns; the handler sees should_abort() turn true and should stop.
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, self.handler, *args)
        future = loop.run_in_executor(self.executor(), call)
        try:
            done, _ = await asyncio.wait({future}, timeout=self.definition.timeout)
        except asyncio.CancelledError:
            await _wait_uncancellable(future)
            raise
        if done:
            return future.result()
        timed_out.set()
        logger.warning(
            "Sync handler of job %s passed its %s s timeout; waiting for its "
            "thread to return before the job is released",
            job_context.job_id,
            self.definition.timeout,
            extra={
                "action": "sync_timeout",
                "queue": self.queue_name,
                "job_id": job_context.job_id,
                "attempt": job_context.attempt,
            },
        )
        await _wait_uncancellable(future)
        raise JobTimeout(
            self.queue_name, job_context.job_id, self.definition.timeout or 0
        )

    async def _on_failure(
        self,
        context: procrastinate.JobContext,
        job_context: JobContext,
        started_at: datetime.datetime,
        exc: Exception,
        argument: Any,
    ) -> None:
        job = context.job
        outcome = "timed_out" if isinstance(exc, JobTimeout) else "failed"
        await self._record_failure(
            context, job_context.attempt, started_at, exc, outcome
        )
        self.runtime.report_error(exc)
        final = self.retry_strategy.get_retry_decision(exception=exc, job=job) is None
        if final:
            await run_on_failed(
                self.runtime,
                self.queue_name,
                self.definition,
                job_context,
                argument,
                exc,
            )

    async def _record_failure(
        self,
        context: procrastinate.JobContext,
        attempt: int,
        started_at: datetime.datetime,
        exc: BaseException,
        outcome: str,
    ) -> None:
        job = context.job
        assert job.id is not None
        error_type, message, formatted = _attempts.describe_error(exc)
        await self._record(
            _attempts.Attempt(
                job_id=job.id,
                attempt=attempt,
                outcome=outcome,
                worker_id=job.worker_id,
                worker_name=context.worker_name,
                started_at=started_at,
                error_type=error_type,
                error_message=message,
                traceback=formatted,
            )
        )

    async def _record(self, attempt: _attempts.Attempt) -> None:
        # The record is best effort: the job's status, which procrastinate
        # writes next, matters more than the details of one attempt.
        try:
            async with self.runtime.pool.connection() as conn:
                await _attempts.record(conn, attempt)
        except Exception as exc:
            logger.exception(
                "Could not record attempt %s of job %s",
                attempt.attempt,
                attempt.job_id,
                extra={
                    "action": "record_attempt_failed",
                    "queue": self.queue_name,
                    "job_id": attempt.job_id,
                    "attempt": attempt.attempt,
                },
            )
            self.runtime.report_error(exc)

    def _extra(
        self, job: procrastinate.jobs.Job, attempt: int, action: str
    ) -> dict[str, Any]:
        return {
            "action": action,
            "queue": self.queue_name,
            "job_id": job.id,
            "attempt": attempt,
            "worker_id": job.worker_id,
        }


async def _wait_uncancellable(future: asyncio.Future[Any]) -> None:
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            continue
        except Exception:
            return


async def run_on_failed(
    runtime: Runtime,
    queue_name: str,
    definition: Queue[Any],
    job_context: JobContext,
    argument: Any,
    exc: BaseException,
) -> None:
    """Call the queue's on_failed hook once, and record that it ran.

    The hook's own failure is logged and reported, never raised: the job has
    already failed for its own reason.
    """
    hook = definition.on_failed
    if hook is None:
        return
    extra = {
        "action": "on_failed",
        "queue": queue_name,
        "job_id": job_context.job_id,
        "attempt": job_context.attempt,
    }
    logger.info("Calling on_failed of job %s", job_context.job_id, extra=extra)
    try:
        args = (
            (argument, exc, job_context)
            if takes_context_third(hook)
            else (
                argument,
                exc,
            )
        )
        outcome = hook(*args)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception as hook_error:
        logger.exception(
            "on_failed hook of queue %s raised for job %s",
            queue_name,
            job_context.job_id,
            extra={**extra, "action": "on_failed_error"},
        )
        runtime.report_error(hook_error)
    try:
        async with runtime.pool.connection() as conn:
            await _attempts.mark_on_failed(
                conn, job_context.job_id, job_context.attempt
            )
    except Exception as mark_error:
        logger.exception(
            "Could not record that on_failed ran for job %s",
            job_context.job_id,
            extra={**extra, "action": "on_failed_mark_error"},
        )
        runtime.report_error(mark_error)


def takes_context_third(hook: Callable[..., Any]) -> bool:
    """Tell whether an on_failed hook accepts a third, context, argument."""
    try:
        parameters = list(inspect.signature(hook).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


AsyncHandler = Callable[..., Awaitable[Any]]

__all__ = ["QueueRetryStrategy", "QueueTask", "WorkerInterrupted", "WorkerLost"]
