"""A job manager whose workers neither lose nor misplace a job's final status.

procrastinate writes a job's outcome once, when its run ends. If the server
is unreachable at that moment, the write fails and the job stays `doing`
under a worker that reconnects and keeps beating, so no orphan sweep ever
takes it back. This manager retries that write with a capped backoff until
the database accepts it.

Every final write is also guarded: it applies only while the job is still
`doing` under the worker that ran it. procrastinate's own functions do not
check the worker. A peer's sweep may take a run over, after a long outage
or a loop blocked past the stalled timeout. The old run's late write could
then finish or put back the job while its new run goes on, or reopen a
job that has since failed for good.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any, LiteralString, TypeVar

import procrastinate.jobs
import procrastinate.manager
import procrastinate.utils
import psycopg_pool

from pgjobs import _db

logger = logging.getLogger(__name__)

T = TypeVar("T")

_FIRST_DELAY = 0.1
_MAX_DELAY = 2.0

# The job row is locked in a materialised CTE first, so the procrastinate
# function only runs while the row is still this worker's running job.
GUARDED_FINISH_SQL: LiteralString = """
WITH running AS MATERIALIZED (
    SELECT id FROM procrastinate_jobs
     WHERE id = %(job_id)s AND status = 'doing'
       AND worker_id IS NOT DISTINCT FROM %(worker_id)s
       FOR UPDATE
)
SELECT procrastinate_finish_job_v1(id, %(status)s, %(delete_job)s) FROM running
"""

GUARDED_RETRY_SQL: LiteralString = """
WITH running AS MATERIALIZED (
    SELECT id FROM procrastinate_jobs
     WHERE id = %(job_id)s AND status = 'doing'
       AND worker_id IS NOT DISTINCT FROM %(worker_id)s
       FOR UPDATE
)
SELECT procrastinate_retry_job_v2(
           id, %(retry_at)s, %(priority)s, %(queue)s, %(lock)s)
  FROM running
"""


class DurableJobManager(procrastinate.manager.JobManager):
    """procrastinate's job manager with guarded final writes that outlast outages."""

    def __init__(self, connector: Any) -> None:
        super().__init__(connector)
        self._stopping_since: float | None = None
        self._grace = 0.0

    def keep_trying(self) -> None:
        """Retry final writes for as long as the database stays away."""
        self._stopping_since = None

    def stop_trying(self, grace: float) -> None:
        """Bound the retries of final writes from now on.

        A stopping worker calls this so that an outage cannot hold its
        shutdown forever: each failed write keeps trying for `grace`
        seconds after this call or after its own first failure, whichever
        is later. A job whose write is abandoned stays `doing` until a
        peer's sweep finds this process's heartbeat stale.
        """
        if self._stopping_since is None:
            self._stopping_since = asyncio.get_running_loop().time()
        self._grace = grace

    def _deadline(self, failed_at: float | None, now: float) -> float | None:
        # None while the worker runs: a write then waits as long as it takes.
        if self._stopping_since is None:
            return None
        since = failed_at if failed_at is not None else now
        return max(self._stopping_since, since) + self._grace

    async def finish_job(
        self,
        job: procrastinate.jobs.Job,
        status: procrastinate.jobs.Status,
        delete_job: bool,
    ) -> None:
        """Write the job's final status, retrying while the server is away."""

        async def guarded() -> list[dict[str, Any]]:
            return await self.connector.execute_query_all_async(
                GUARDED_FINISH_SQL,
                job_id=job.id,
                worker_id=job.worker_id,
                status=status.value,
                delete_job=delete_job,
            )

        await self._persist(job, guarded)

    async def retry_job(
        self,
        job: procrastinate.jobs.Job,
        retry_at: datetime.datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        lock: str | None = None,
    ) -> None:
        """Put the job back to be retried, retrying while the server is away."""
        at = retry_at or procrastinate.utils.utcnow()

        async def guarded() -> list[dict[str, Any]]:
            return await self.connector.execute_query_all_async(
                GUARDED_RETRY_SQL,
                job_id=job.id,
                worker_id=job.worker_id,
                retry_at=at,
                priority=priority,
                queue=queue,
                lock=lock,
            )

        await self._persist(job, guarded)

    async def write_through_outage(
        self,
        write: Callable[[], Awaitable[T]],
        on_failure: Callable[[BaseException], None],
    ) -> tuple[T, bool]:
        """Run `write`, retrying it while the database is unreachable.

        `on_failure` is called once, at the first connection error. Returns
        the result and whether any attempt failed. While the worker runs,
        it retries until the database accepts the write. Once the worker is
        stopping, each write gets the stop's grace period.

        Raises:
            WriteAbandoned: the worker is stopping and the grace ran out.
        """
        loop = asyncio.get_running_loop()
        failed_at: float | None = None
        delay = _FIRST_DELAY
        while True:
            deadline = self._deadline(failed_at, loop.time())
            try:
                # A stopping worker bounds each write, since one that waits
                # for a pooled connection would outlast the graceful timeout.
                async with asyncio.timeout_at(deadline):
                    return await write(), failed_at is not None
            except TimeoutError as exc:
                raise WriteAbandoned from exc
            except Exception as exc:
                if not _can_retry(exc):
                    raise
                if failed_at is None:
                    failed_at = loop.time()
                    on_failure(exc)
                deadline = self._deadline(failed_at, loop.time())
                if deadline is not None and loop.time() >= deadline:
                    raise WriteAbandoned from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    async def _persist(
        self,
        job: procrastinate.jobs.Job,
        guarded: Callable[[], Awaitable[list[dict[str, Any]]]],
    ) -> None:
        def warn(exc: BaseException) -> None:
            logger.warning(
                "Failed to write the final status of job %s: %s. "
                "Retrying until the database is reachable",
                job.id,
                exc.__cause__ or exc,
                extra=_extra(job, "final_write_failed"),
            )

        try:
            written, failed = await self.write_through_outage(guarded, warn)
        except WriteAbandoned:
            logger.error(
                "Gave up writing the final status of job %s because the "
                "worker is stopping. The job stays 'doing' until an "
                "orphan sweep finds this worker's heartbeat stale",
                job.id,
                extra=_extra(job, "final_write_abandoned"),
            )
            return
        if written and failed:
            logger.info(
                "Wrote the final status of job %s after the outage",
                job.id,
                extra=_extra(job, "final_write_recovered"),
            )
        elif failed:
            # The write before the outage may have committed unseen.
            logger.info(
                "Job %s was already settled when the database became "
                "reachable, so its final status was left as it is",
                job.id,
                extra=_extra(job, "final_write_settled"),
            )
        elif not written:
            logger.warning(
                "Job %s no longer runs under worker %s: an orphan sweep "
                "settled it, so the outcome of this run was not written",
                job.id,
                job.worker_id,
                extra=_extra(job, "final_write_skipped"),
            )


class WriteAbandoned(Exception):
    """A stopping worker gave up a write that the outage kept from landing."""


def _extra(job: procrastinate.jobs.Job, action: str) -> dict[str, Any]:
    return {
        "action": action,
        "job_id": job.id,
        "queue": job.queue,
        "worker_id": job.worker_id,
    }


def _can_retry(exc: BaseException) -> bool:
    # A closed pool means the system is shutting down: no retry can succeed.
    cause = exc.__cause__ or exc
    return _db.is_connection_error(exc) and not isinstance(
        cause, psycopg_pool.PoolClosed
    )
