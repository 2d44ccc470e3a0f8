"""Recovery of orphaned jobs: jobs left running by a worker that died.

A worker is taken for dead when its heartbeat is older than the stalled
timeout, or when its row is gone. Its jobs are retried while attempts remain,
else failed, each with a "worker lost" attempt record. Jobs of live workers
are never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.rows

from pgjobs import _attempts, _payload
from pgjobs.config import Queue
from pgjobs.types import JobContext

logger = logging.getLogger(__name__)

PRUNE_STALLED_WORKERS_SQL = """
SELECT worker_id FROM procrastinate_prune_stalled_workers_v1(%(stalled)s)
"""

# Rows are locked with SKIP LOCKED, so two processes sweeping at once split
# the work instead of settling one job twice. A job's own attempt record of
# its current run, if any, tells whether the worker died after the handler
# had already finished.
SELECT_ORPHANS_SQL = """
SELECT job.id, job.queue_name, job.attempts, job.args, job.worker_id,
       worker.last_heartbeat,
       COALESCE((queue.settings ->> 'retry_limit')::int, 0) AS stored_retry_limit,
       attempt.outcome AS recorded_outcome,
       attempt.on_failed_at IS NOT NULL AS on_failed_done
  FROM procrastinate_jobs job
  LEFT JOIN procrastinate_workers worker ON worker.id = job.worker_id
  LEFT JOIN pgjobs_queues queue ON queue.name = job.queue_name
  LEFT JOIN pgjobs_attempts attempt
         ON attempt.job_id = job.id AND attempt.attempt = job.attempts + 1
 WHERE job.status = 'doing'
   AND (worker.id IS NULL
        OR worker.last_heartbeat < now() - make_interval(secs => %(stalled)s))
 ORDER BY job.id
 LIMIT %(limit)s
   FOR UPDATE OF job SKIP LOCKED
"""

RETRY_SQL = "SELECT procrastinate_retry_job_v2(%(job_id)s, now(), NULL, NULL, NULL)"
FINISH_SQL = "SELECT procrastinate_finish_job_v1(%(job_id)s, %(status)s, false)"
# Last resort for a row that cannot be retried or finished normally.
FORCE_FAIL_SQL = """
UPDATE procrastinate_jobs SET status = 'failed'
 WHERE id = %(job_id)s AND status = 'doing'
"""

BATCH_SIZE = 500


@dataclass(frozen=True)
class RecoveredJob:
    """One orphaned job and what the sweep did with it."""

    job_id: int
    queue: str
    attempt: int
    action: str
    reason: str


@dataclass
class _PendingHook:
    job_id: int
    queue: str
    attempt: int
    retry_limit: int
    args: dict[str, Any]


async def sweep(
    conn: psycopg.AsyncConnection[Any],
    *,
    queues: Mapping[str, Queue[Any]],
    stalled_timeout: float,
) -> tuple[list[RecoveredJob], list[_PendingHook]]:
    """Settle every orphaned job; return what was done and hooks to run.

    The on_failed hooks are returned rather than run, so they run after the
    transaction commits and never for a change that rolled back.
    """
    recovered: list[RecoveredJob] = []
    hooks: list[_PendingHook] = []
    async with conn.transaction():
        cursor = conn.cursor(row_factory=psycopg.rows.dict_row)
        await cursor.execute(
            SELECT_ORPHANS_SQL, {"stalled": stalled_timeout, "limit": BATCH_SIZE}
        )
        rows = await cursor.fetchall()
        for row in rows:
            outcome = await _settle(conn, row, queues)
            recovered.append(outcome)
            if outcome.action == "failed" and not row["on_failed_done"]:
                definition = queues.get(row["queue_name"])
                hooks.append(
                    _PendingHook(
                        job_id=row["id"],
                        queue=row["queue_name"],
                        attempt=row["attempts"] + 1,
                        retry_limit=_retry_limit(row, definition),
                        args=row["args"] or {},
                    )
                )
        # Pruning after the sweep keeps the dead worker's id in the reasons.
        await conn.execute(PRUNE_STALLED_WORKERS_SQL, {"stalled": stalled_timeout})
    return recovered, hooks


def _retry_limit(row: Mapping[str, Any], definition: Queue[Any] | None) -> int:
    if definition is not None:
        return definition.retry_limit
    return int(row["stored_retry_limit"])


async def _settle(
    conn: psycopg.AsyncConnection[Any],
    row: Mapping[str, Any],
    queues: Mapping[str, Queue[Any]],
) -> RecoveredJob:
    job_id = row["id"]
    attempt = row["attempts"] + 1
    queue = row["queue_name"]
    retry_limit = _retry_limit(row, queues.get(queue))
    recorded = row["recorded_outcome"]
    worker = row["worker_id"]
    if worker is None:
        reason = "worker lost: its worker row is gone (stopped or pruned)"
    else:
        reason = (
            f"worker lost: worker {worker} sent no heartbeat since "
            f"{row['last_heartbeat']:%Y-%m-%d %H:%M:%S%z}"
        )

    if recorded == "succeeded":
        action, status = "succeeded", "succeeded"
    elif recorded in ("failed", "timed_out") and row["on_failed_done"]:
        action, status = "failed", "failed"
    elif row["attempts"] < retry_limit:
        action, status = "retried", None
    else:
        action, status = "failed", "failed"

    try:
        async with conn.transaction():
            if status is None:
                await conn.execute(RETRY_SQL, {"job_id": job_id})
            else:
                await conn.execute(FINISH_SQL, {"job_id": job_id, "status": status})
            if recorded is None:
                await _record_lost(conn, job_id, attempt, worker, reason)
    except psycopg.Error as exc:
        # One bad row must not stop the sweep: it is failed with the reason.
        reason = f"{reason}; could not be {action} ({exc.diag.message_primary})"
        action = "failed"
        async with conn.transaction():
            await conn.execute(FORCE_FAIL_SQL, {"job_id": job_id})
            await _record_lost(conn, job_id, attempt, worker, reason)

    logger.warning(
        "Recovered orphaned job %s of queue %s: %s (%s)",
        job_id,
        queue,
        action,
        reason,
        extra={
            "action": "recover_orphan",
            "queue": queue,
            "job_id": job_id,
            "attempt": attempt,
            "worker_id": worker,
        },
    )
    return RecoveredJob(job_id, queue, attempt, action, reason)


async def _record_lost(
    conn: psycopg.AsyncConnection[Any],
    job_id: int,
    attempt: int,
    worker: int | None,
    reason: str,
) -> None:
    await _attempts.record(
        conn,
        _attempts.Attempt(
            job_id=job_id,
            attempt=attempt,
            outcome="worker_lost",
            worker_id=worker,
            worker_name=None,
            started_at=None,
            error_type="pgjobs.errors.WorkerLost",
            error_message=reason,
        ),
    )


def hook_arguments(
    hook: _PendingHook, definition: Queue[Any]
) -> tuple[Any, JobContext]:
    """Return the payload and context to pass to a recovered job's on_failed."""
    payload: Any = hook.args.get("payload") or {}
    try:
        payload = _payload.load_payload(definition, payload)
    except Exception:  # the raw payload is still useful to the hook
        logger.warning(
            "Payload of recovered job %s no longer matches its model",
            hook.job_id,
            extra={"action": "recover_orphan", "job_id": hook.job_id},
        )
    context = JobContext(
        job_id=hook.job_id,
        queue=hook.queue,
        attempt=hook.attempt,
        retry_limit=hook.retry_limit,
        worker_name="",
    )
    return payload, context
