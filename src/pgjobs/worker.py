"""What runs inside a worker: one procrastinate task per queue.

Each queue's task validates the stored payload, calls the user's handler
under the queue's timeout, records the attempt, and leaves retrying to
procrastinate through `QueueRetryStrategy`.

Timeouts:
    An async handler past its timeout is cancelled; the attempt is recorded
    as ``timed_out`` and retried while the retry budget lasts.

    A thread cannot be cancelled, so a sync handler past its timeout keeps
    running while its `JobContext.should_abort()` returns True. The job stays
    in ``doing`` and its worker keeps sending heartbeats until the thread
    returns. Only then is the attempt recorded as ``timed_out`` (whatever
    the thread returned) and the retry scheduled. A retry therefore never
    runs beside the timed-out thread. A sync handler that never checks
    `should_abort()` keeps its job running, occupies its concurrency slot
    and delays `stop()` until it returns.

Stops:
    When the worker stops, a job still running after the graceful timeout is
    interrupted: an async handler is cancelled, a sync handler sees
    `should_abort()` turn true. An interrupted attempt is recorded as
    ``interrupted`` and the job goes back to ``todo`` at once. Interrupted
    runs do not use up the retry budget. A sync handler that returns
    normally after the request keeps its result, and its job succeeds.
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
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

import procrastinate
import procrastinate.job_context
import procrastinate.jobs
import psycopg_pool
import pydantic
import pydantic_core
from procrastinate.retry import BaseRetryStrategy, RetryDecision

from pgjobs import _attempts, _payload
from pgjobs._manager import DurableJobManager
from pgjobs.config import JobSystemConfig, Queue
from pgjobs.errors import JobTimeout, PayloadValidationError, WorkerLost
from pgjobs.types import Handler, JobContext

logger = logging.getLogger(__name__)

# 2**62 seconds is far beyond any cap; stopping there keeps the float finite.
_MAX_BACKOFF_EXPONENT = 62

NON_RETRIABLE: tuple[type[BaseException], ...] = (PayloadValidationError,)


class WorkerInterrupted(Exception):
    """The worker stopped before the job finished; the job is always retried."""


class Runtime(Protocol):
    """The parts of a job system that a queue task uses."""

    @property
    def config(self) -> JobSystemConfig: ...

    @property
    def pool(self) -> psycopg_pool.AsyncConnectionPool: ...

    @property
    def app(self) -> procrastinate.App: ...

    def report_error(self, exc: BaseException) -> None: ...


def retry_delay(definition: Queue[Any], attempts: int) -> float:
    """Return the seconds to wait before the retry that follows `attempts` runs.

    The first retry waits `retry_delay`. With `retry_backoff`, each further
    retry waits twice as long, up to `retry_delay_max`, and a zero
    `retry_delay` then starts at one second.
    """
    if not definition.retry_backoff:
        return definition.retry_delay
    base = definition.retry_delay or 1.0
    exponent = min(max(attempts - 1, 0), _MAX_BACKOFF_EXPONENT)
    return float(min(definition.retry_delay_max, base * 2.0**exponent))


class QueueRetryStrategy(BaseRetryStrategy):
    """procrastinate retry strategy built from a queue's retry settings.

    procrastinate counts every run in `job.attempts`, interrupted ones too.
    The queue task counts the interrupted runs and stores its decision with
    `remember` before procrastinate asks for it.
    """

    def __init__(self, definition: Queue[Any]) -> None:
        self.definition = definition
        self._decisions: dict[int, RetryDecision | None] = {}

    def decide(
        self,
        *,
        exception: BaseException,
        job: procrastinate.jobs.Job,
        interrupted_runs: int = 0,
    ) -> RetryDecision | None:
        """Return when to retry after `exception`, or None to fail the job."""
        if isinstance(exception, WorkerInterrupted):
            return RetryDecision(retry_in={"seconds": 0})
        if not isinstance(exception, Exception) or isinstance(exception, NON_RETRIABLE):
            return None
        counted_runs = job.attempts - interrupted_runs
        if counted_runs >= self.definition.retry_limit:
            return None
        delay = retry_delay(self.definition, counted_runs + 1)
        now = datetime.datetime.now(datetime.UTC)
        return RetryDecision(retry_at=now + datetime.timedelta(seconds=delay))

    def remember(self, job_id: int, decision: RetryDecision | None) -> None:
        """Store the decision that `get_retry_decision` returns next for a job."""
        self._decisions[job_id] = decision

    def get_retry_decision(
        self, *, exception: BaseException, job: procrastinate.jobs.Job
    ) -> RetryDecision | None:
        if job.id is not None and job.id in self._decisions:
            return self._decisions.pop(job.id)
        return self.decide(exception=exception, job=job)


def takes_context(handler: Callable[..., Any], position: int = 2) -> bool:
    """Tell whether `handler` accepts a positional argument at `position`.

    A handler takes the context as its second argument, an on_failed hook as
    its third.
    """
    try:
        parameters = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    has_varargs = any(p.kind == p.VAR_POSITIONAL for p in parameters)
    return len(positional) >= position or has_varargs


def is_async(function: Callable[..., Any]) -> bool:
    """Tell whether calling `function` returns a coroutine."""
    call = getattr(function, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)


def _storable_result(value: Any) -> tuple[Any, str | None]:
    """Return (JSON value, None) or (None, why the value cannot be stored)."""
    if value is None:
        return None, None
    try:
        data = pydantic_core.to_jsonable_python(value)
    except (pydantic_core.PydanticSerializationError, ValueError) as exc:
        # pydantic raises a plain ValueError for "Maximum serialization depth
        # exceeded": the job still succeeded, only its result is not stored.
        return None, f"result of type {type(value).__name__} is not JSON: {exc}"
    problem = _payload.find_unstorable(data)
    if problem:
        return None, problem.replace("payload", "result", 1)
    return data, None


# An async handler is cancelled at its timeout, so only a sync handler's
# thread needs a flag of its own for should_abort(). Async runs share this
# one, which nothing sets: creating an Event per job costs more than a no-op
# job's handler call.
_NEVER_SET = threading.Event()


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
        self.retry_strategy = QueueRetryStrategy(definition)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.__name__ = f"pgjobs_queue_{queue_name}"
        self.set_handler(handler)

    def set_handler(self, handler: Handler) -> None:
        """Use `handler` for the jobs fetched from now on."""
        self.handler = handler
        self.with_context = takes_context(handler)
        self.handler_is_async = is_async(handler)

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """Return the thread pool of sync handlers, sized to the concurrency."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.definition.concurrency,
                thread_name_prefix=f"pgjobs-{self.queue_name}",
            )
        return self._executor

    def shutdown(self) -> None:
        """Release the handler threads; call it once no job runs."""
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
        assert job.id is not None  # procrastinate only runs stored jobs
        timed_out = _NEVER_SET if self.handler_is_async else threading.Event()
        job_context = JobContext(
            job_id=job.id,
            queue=self.queue_name,
            attempt=job.attempts + 1,
            retry_limit=self.definition.retry_limit,
            worker_name=context.worker_name or "",
            scheduled_for=float(timestamp) if timestamp is not None else None,
            interrupted_runs=await self._interrupted_runs(job),
            _abort_checks=(context.should_abort, timed_out.is_set),
        )
        run = _Run(self, context, job_context)

        try:
            argument = _payload.load_payload(self.definition, payload or {})
        except pydantic.ValidationError as exc:
            error = PayloadValidationError(
                self.queue_name,
                f"stored payload of job {job.id} no longer matches "
                f"{self.definition.payload_model}: {exc}",
            )
            await run.failed(error, payload)
            raise error from None

        try:
            result = await self._run_handler(argument, job_context, timed_out)
        except asyncio.CancelledError as exc:
            await run.cancelled(exc)
        except Exception as exc:
            await run.failed(exc, argument)
            raise
        return await run.succeeded(result)

    async def _interrupted_runs(self, job: procrastinate.jobs.Job) -> int:
        # Only a job that ran before can have interrupted runs, so a first
        # run costs no query.
        if job.attempts == 0 or job.id is None:
            return 0
        try:
            async with self.runtime.pool.connection() as conn:
                return await _attempts.count_interrupted(conn, job.id)
        except Exception as exc:
            logger.exception(
                "Could not count the interrupted runs of job %s; counting none",
                job.id,
                extra={
                    "action": "count_interrupted_failed",
                    "job_id": job.id,
                    "queue": self.queue_name,
                },
            )
            self.runtime.report_error(exc)
            return 0

    async def _run_handler(
        self, argument: Any, job_context: JobContext, timed_out: threading.Event
    ) -> Any:
        args = (argument, job_context) if self.with_context else (argument,)
        if not self.handler_is_async:
            return await self._run_sync(args, job_context, timed_out)

        timeout = self.definition.timeout
        try:
            async with asyncio.timeout(timeout) as scope:
                return await self.handler(*args)
        except TimeoutError:
            if scope.expired():
                raise JobTimeout(
                    self.queue_name, job_context.job_id, timeout or 0
                ) from None
            raise

    async def _run_sync(
        self, args: tuple[Any, ...], job_context: JobContext, timed_out: threading.Event
    ) -> Any:
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, self.handler, *args)
        thread = loop.run_in_executor(self.executor(), call)
        try:
            done, _ = await asyncio.wait({thread}, timeout=self.definition.timeout)
        except asyncio.CancelledError:
            # Abort or stop: should_abort() is already true for the handler.
            # The job is released only once the thread has returned.
            await _wait_for_thread(thread)
            if thread.exception() is not None:
                raise
            _uncancel()
            return thread.result()
        if done:
            return thread.result()

        timed_out.set()
        logger.warning(
            "Sync handler of job %s passed its %s s timeout; the job stays "
            "running until its thread returns",
            job_context.job_id,
            self.definition.timeout,
            extra={
                "action": "sync_timeout",
                "queue": self.queue_name,
                "job_id": job_context.job_id,
                "attempt": job_context.attempt,
            },
        )
        await _wait_for_thread(thread)
        timeout = JobTimeout(
            self.queue_name, job_context.job_id, self.definition.timeout or 0
        )
        raise timeout from thread.exception()


class _Run:
    """The bookkeeping of one attempt: records, hooks and the retry decision."""

    def __init__(
        self,
        task: QueueTask,
        context: procrastinate.JobContext,
        job_context: JobContext,
    ) -> None:
        self.task = task
        self.context = context
        self.job_context = job_context
        self.job = context.job

    @functools.cached_property
    def started_at(self) -> datetime.datetime:
        # Computed when an attempt is recorded; a plain success records none.
        return datetime.datetime.fromtimestamp(
            self.context.start_timestamp, datetime.UTC
        )

    async def succeeded(self, result: Any) -> Any:
        data, problem = _storable_result(result)
        if problem:
            logger.warning(
                "Job %s returned a result that cannot be stored: %s",
                self.job_context.job_id,
                problem,
                extra=self._extra("result_not_stored"),
            )
        # A plain success returns None and costs no extra write.
        if data is not None or problem:
            await self._record(
                self._attempt("succeeded", result=data, error_message=problem)
            )
        return data

    async def failed(self, exc: Exception, argument: Any) -> None:
        outcome = "timed_out" if isinstance(exc, JobTimeout) else "failed"
        await self._record_error(exc, outcome)
        self.task.runtime.report_error(exc)

        strategy = self.task.retry_strategy
        decision = strategy.decide(
            exception=exc,
            job=self.job,
            interrupted_runs=self.job_context.interrupted_runs,
        )
        strategy.remember(self.job_context.job_id, decision)
        if decision is None:
            await run_on_failed(
                self.task.runtime,
                self.task.queue_name,
                self.task.definition,
                self.job_context,
                argument,
                exc,
            )

    async def cancelled(self, exc: asyncio.CancelledError) -> NoReturn:
        """Record a cancelled attempt, then raise what procrastinate expects.

        A stop raises `WorkerInterrupted`, which is always retried. A user's
        abort request re-raises the cancellation, which ends the job aborted.
        """
        reason = self.context.abort_reason()
        if reason is procrastinate.job_context.AbortReason.SHUTDOWN:
            interrupted = WorkerInterrupted(
                f"worker stopped while job {self.job_context.job_id} ran; "
                "the job is retried"
            )
            await self._record_error(interrupted, "interrupted")
            raise interrupted from exc
        await self._record_error(exc, "aborted")
        raise exc

    async def _record_error(self, exc: BaseException, outcome: str) -> None:
        error_type, message, formatted = _attempts.describe_error(exc)
        await self._record(
            self._attempt(
                outcome,
                error_type=error_type,
                error_message=message,
                traceback=formatted,
            )
        )

    def _attempt(self, outcome: str, **details: Any) -> _attempts.Attempt:
        return _attempts.Attempt(
            job_id=self.job_context.job_id,
            attempt=self.job_context.attempt,
            outcome=outcome,
            worker_id=self.job.worker_id,
            worker_name=self.context.worker_name,
            started_at=self.started_at,
            **details,
        )

    async def _record(self, attempt: _attempts.Attempt) -> None:
        # Retried through an outage like the final status that follows. A
        # failure is only logged, because the status matters more.
        async def write() -> None:
            async with self.task.runtime.pool.connection() as conn:
                await _attempts.record(conn, attempt)

        def warn(exc: BaseException) -> None:
            logger.warning(
                "Failed to record attempt %s of job %s: %s. Retrying until "
                "the database is reachable",
                attempt.attempt,
                attempt.job_id,
                exc,
                extra=self._extra("record_attempt_retry"),
            )

        manager = self.task.runtime.app.job_manager
        try:
            if isinstance(manager, DurableJobManager):
                await manager.write_through_outage(write, warn)
            else:
                await write()
        except asyncio.CancelledError:
            # A stopping worker cancels runs that outlast its graceful
            # timeout, and one waiting here for the database has already
            # ended. The record is dropped, so that the run keeps its own
            # outcome instead of ending as aborted.
            _uncancel()
            logger.warning(
                "Dropped the record of attempt %s of job %s: the worker is "
                "stopping and the database is unreachable",
                attempt.attempt,
                attempt.job_id,
                extra=self._extra("record_attempt_dropped"),
            )
        except Exception as exc:
            logger.exception(
                "Could not record attempt %s of job %s",
                attempt.attempt,
                attempt.job_id,
                extra=self._extra("record_attempt_failed"),
            )
            self.task.runtime.report_error(exc)

    def _extra(self, action: str) -> dict[str, Any]:
        return {
            "action": action,
            "queue": self.task.queue_name,
            "job_id": self.job_context.job_id,
            "attempt": self.job_context.attempt,
            "worker_id": self.job.worker_id,
        }


async def _wait_for_thread(thread: asyncio.Future[Any]) -> None:
    """Wait until a handler thread returns, ignoring cancellation meanwhile."""
    while not thread.done():
        try:
            await asyncio.shield(thread)
        except asyncio.CancelledError:
            continue
        except Exception:
            return


def _uncancel() -> None:
    # The job finished despite the cancellation request. Clearing the
    # request keeps asyncio.timeout() and TaskGroup in callers accurate.
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def run_on_failed(
    runtime: Runtime,
    queue_name: str,
    definition: Queue[Any],
    job_context: JobContext,
    argument: Any,
    exc: BaseException,
) -> None:
    """Call the queue's on_failed hook once, and record that it ran.

    A sync hook runs on a thread, so it cannot stall the worker's loop. The
    hook's own failure is logged and reported to on_error, never raised:
    the job has already failed for its own reason.
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
    args = (argument, exc, job_context) if takes_context(hook, 3) else (argument, exc)
    try:
        if is_async(hook):
            await hook(*args)
        else:
            outcome = await asyncio.to_thread(hook, *args)
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


__all__ = ["QueueRetryStrategy", "QueueTask", "WorkerInterrupted", "WorkerLost"]
