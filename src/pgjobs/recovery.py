"""Recovery of orphaned jobs: jobs left running by a worker that died.

A worker is taken for dead when its heartbeat is older than the stalled
timeout, while the server has been up for at least that long, or when its
row is gone. Each of its jobs is settled by what the attempt records show:

- the run had already succeeded (its result is recorded): ``succeeded``;
- the run had failed and its on_failed hook ran: ``failed``;
- the run was interrupted by a stopping worker: back to ``todo``, since
  interrupted runs do not use up the retry budget;
- its workers died under it `max_worker_losses` times (counting this
  one): ``failed``, since the job itself likely kills them;
- retries remain: back to ``todo`` at once, with a ``worker_lost`` record;
- no retry remains: ``failed``, with a ``worker_lost`` record, and the
  queue's on_failed hook runs once the change is committed.

A row that cannot be moved that way (for example, a newer job already has
its singleton key, so it cannot go back to ``todo``) is set to ``failed``
with the reason recorded, and the sweep goes on with the next row. Jobs of
live workers are never touched.
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

# No worker can beat while the server is down, and after a restart each
# process reconnects at its own pace. So heartbeats count as stale only once
# the server has been up for the stalled timeout. Until then nothing is
# pruned (the huge age below matches no worker), and no live worker's job
# is taken for an orphan.
PRUNE_STALLED_WORKERS_SQL = """
SELECT worker_id FROM procrastinate_prune_stalled_workers_v1(
    CASE WHEN pg_postmaster_start_time() < now() - make_interval(secs => %(stalled)s)
         THEN %(stalled)s ELSE 315360000 END)
"""

# Rows are locked with SKIP LOCKED, so two processes sweeping at once split
# the work instead of settling one job twice. The attempt record of the
# job's current run, if any, shows how far the run got before its worker
# died.
SELECT_ORPHANS_SQL = """
SELECT job.id, job.queue_name, job.attempts, job.args, job.worker_id,
       worker.last_heartbeat,
       COALESCE((queue.settings ->> 'retry_limit')::int, 0) AS stored_retry_limit,
       attempt.outcome AS recorded_outcome,
       attempt.on_failed_at IS NOT NULL AS on_failed_done,
       (SELECT count(*) FROM pgjobs_attempts interrupted
         WHERE interrupted.job_id = job.id
           AND interrupted.outcome = 'interrupted'
           AND interrupted.attempt <= job.attempts) AS interrupted_runs,
       (SELECT count(*) FROM pgjobs_attempts lost
         WHERE lost.job_id = job.id
           AND lost.outcome = 'worker_lost'
           AND lost.attempt <= job.attempts) AS earlier_losses,
       (queue.settings ->> 'max_worker_losses')::int AS stored_max_worker_losses
  FROM procrastinate_jobs job
  LEFT JOIN procrastinate_workers worker ON worker.id = job.worker_id
  LEFT JOIN pgjobs_queues queue ON queue.name = job.queue_name
  LEFT JOIN pgjobs_attempts attempt
         ON attempt.job_id = job.id AND attempt.attempt = job.attempts + 1
 WHERE job.status = 'doing'
   AND job.id > %(after)s
   AND (worker.id IS NULL
        OR (worker.last_heartbeat < now() - make_interval(secs => %(stalled)s)
            AND pg_postmaster_start_time()
                < now() - make_interval(secs => %(stalled)s)))
 ORDER BY job.id
 LIMIT %(limit)s
   FOR UPDATE OF job SKIP LOCKED
"""

RETRY_SQL = "SELECT procrastinate_retry_job_v2(%(job_id)s, now(), NULL, NULL, NULL)"
FINISH_SQL = "SELECT procrastinate_finish_job_v1(%(job_id)s, %(status)s, false)"
# Last resort for a row that the functions above reject.
FORCE_FAIL_SQL = """
UPDATE procrastinate_jobs SET status = 'failed', attempts = attempts + 1
 WHERE id = %(job_id)s AND status = 'doing'
"""

BATCH_SIZE = 500

# For a queue that this process does not configure and whose settings were
# never recorded; the same as the default of `queue()`.
DEFAULT_MAX_WORKER_LOSSES = 3


@dataclass(frozen=True)
class RecoveredJob:
    """One orphaned job and what the sweep did with it."""

    job_id: int
    queue: str
    attempt: int
    action: str
    reason: str


@dataclass(frozen=True)
class PendingHook:
    """An on_failed hook to run for a recovered job once the sweep commits."""

    job_id: int
    queue: str
    attempt: int
    retry_limit: int
    interrupted_runs: int
    args: dict[str, Any]


async def sweep(
    conn: psycopg.AsyncConnection[Any],
    *,
    queues: Mapping[str, Queue[Any]],
    stalled_timeout: float,
) -> tuple[list[RecoveredJob], list[PendingHook]]:
    """Settle every orphaned job; return what was done and hooks to run.

    Each batch of rows is settled in its own transaction. The on_failed
    hooks are returned rather than run, so they run after the commit and
    never for a change that rolled back.
    """
    recovered: list[RecoveredJob] = []
    hooks: list[PendingHook] = []
    after = 0
    while True:
        async with conn.transaction():
            rows = await _select_orphans(conn, after, stalled_timeout)
            for row in rows:
                outcome = await _settle(conn, row, queues)
                if outcome is None:
                    continue
                recovered.append(outcome)
                hook = _pending_hook(row, outcome, queues)
                if hook is not None:
                    hooks.append(hook)
        if len(rows) < BATCH_SIZE:
            break
        after = rows[-1]["id"]

    # Pruning after the sweep keeps the dead workers' ids in the reasons.
    await conn.execute(PRUNE_STALLED_WORKERS_SQL, {"stalled": stalled_timeout})
    return recovered, hooks


async def _select_orphans(
    conn: psycopg.AsyncConnection[Any], after: int, stalled_timeout: float
) -> list[dict[str, Any]]:
    cursor = conn.cursor(row_factory=psycopg.rows.dict_row)
    await cursor.execute(
        SELECT_ORPHANS_SQL,
        {"stalled": stalled_timeout, "limit": BATCH_SIZE, "after": after},
    )
    return await cursor.fetchall()


def _retry_limit(row: Mapping[str, Any], definition: Queue[Any] | None) -> int:
    if definition is not None:
        return definition.retry_limit
    return int(row["stored_retry_limit"])


def _max_worker_losses(row: Mapping[str, Any], definition: Queue[Any] | None) -> int:
    if definition is not None:
        return definition.max_worker_losses
    stored = row["stored_max_worker_losses"]
    return DEFAULT_MAX_WORKER_LOSSES if stored is None else int(stored)


def _worker_losses(row: Mapping[str, Any]) -> int:
    """Count the runs of this job whose worker died while the handler ran.

    The current run counts only if its handler recorded no outcome: one that
    did had returned before the worker died.
    """
    current = 1 if row["recorded_outcome"] is None else 0
    return int(row["earlier_losses"]) + current


def _lost_reason(row: Mapping[str, Any]) -> str:
    worker = row["worker_id"]
    if worker is None:
        return "worker lost: its worker row is gone (stopped or pruned)"
    return (
        f"worker lost: worker {worker} sent no heartbeat since "
        f"{row['last_heartbeat']:%Y-%m-%d %H:%M:%S%z}"
    )


def _decide(
    row: Mapping[str, Any], queues: Mapping[str, Queue[Any]]
) -> tuple[str, str | None]:
    """Return the action and final status (None: retry) for an orphan."""
    recorded = row["recorded_outcome"]
    if recorded == "succeeded":
        return "succeeded", "succeeded"
    if recorded in ("failed", "timed_out") and row["on_failed_done"]:
        return "failed", "failed"
    if recorded == "interrupted":
        return "retried", None
    if _worker_losses(row) >= _max_worker_losses(row, queues.get(row["queue_name"])):
        return "failed", "failed"
    counted_runs = row["attempts"] - row["interrupted_runs"]
    if counted_runs < _retry_limit(row, queues.get(row["queue_name"])):
        return "retried", None
    return "failed", "failed"


async def _settle(
    conn: psycopg.AsyncConnection[Any],
    row: Mapping[str, Any],
    queues: Mapping[str, Queue[Any]],
) -> RecoveredJob | None:
    job_id = row["id"]
    attempt = row["attempts"] + 1
    reason = _lost_reason(row)
    action, status = _decide(row, queues)
    write_record = row["recorded_outcome"] is None
    max_losses = _max_worker_losses(row, queues.get(row["queue_name"]))
    if write_record and status == "failed" and _worker_losses(row) >= max_losses:
        reason = (
            f"{reason}; its worker was lost {_worker_losses(row)} times while "
            f"running this job, which reaches max_worker_losses ({max_losses}), "
            "so the job is failed instead of retried"
        )

    try:
        async with conn.transaction():
            if status is None:
                await conn.execute(RETRY_SQL, {"job_id": job_id})
            else:
                await conn.execute(FINISH_SQL, {"job_id": job_id, "status": status})
            if write_record:
                await _record_lost(conn, row, reason)
    except psycopg.Error as exc:
        reason = f"{reason}; could not be {action} ({exc.diag.message_primary or exc})"
        action = "failed"
        if not await _force_fail(conn, row, reason):
            return None

    logger.warning(
        "Recovered orphaned job %s of queue %s: %s (%s)",
        job_id,
        row["queue_name"],
        action,
        reason,
        extra=_extra(row, "recover_orphan"),
    )
    return RecoveredJob(job_id, row["queue_name"], attempt, action, reason)


async def _force_fail(
    conn: psycopg.AsyncConnection[Any], row: Mapping[str, Any], reason: str
) -> bool:
    """Fail a row that could not be settled normally; False if that failed too.

    A row that even this cannot change stays in `doing` and is logged. The
    sweep goes on with the next row and tries this one again next time.
    """
    try:
        async with conn.transaction():
            await conn.execute(FORCE_FAIL_SQL, {"job_id": row["id"]})
            await _record_lost(conn, row, reason)
    except psycopg.Error:
        logger.exception(
            "Could not settle orphaned job %s; it stays running until the next sweep",
            row["id"],
            extra=_extra(row, "recover_orphan_failed"),
        )
        return False
    return True


def _pending_hook(
    row: Mapping[str, Any],
    outcome: RecoveredJob,
    queues: Mapping[str, Queue[Any]],
) -> PendingHook | None:
    if outcome.action != "failed" or row["on_failed_done"]:
        return None
    return PendingHook(
        job_id=row["id"],
        queue=row["queue_name"],
        attempt=outcome.attempt,
        retry_limit=_retry_limit(row, queues.get(row["queue_name"])),
        interrupted_runs=row["interrupted_runs"],
        args=row["args"] or {},
    )


async def _record_lost(
    conn: psycopg.AsyncConnection[Any], row: Mapping[str, Any], reason: str
) -> None:
    await _attempts.record(
        conn,
        _attempts.Attempt(
            job_id=row["id"],
            attempt=row["attempts"] + 1,
            outcome="worker_lost",
            worker_id=row["worker_id"],
            worker_name=None,
            started_at=None,
            error_type="pgjobs.errors.WorkerLost",
            error_message=_attempts.clean_text(reason, _attempts.MAX_MESSAGE_CHARS),
        ),
    )


def _extra(row: Mapping[str, Any], action: str) -> dict[str, Any]:
    return {
        "action": action,
        "queue": row["queue_name"],
        "job_id": row["id"],
        "attempt": row["attempts"] + 1,
        "worker_id": row["worker_id"],
    }


def hook_arguments(hook: PendingHook, definition: Queue[Any]) -> tuple[Any, JobContext]:
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
        interrupted_runs=hook.interrupted_runs,
    )
    return payload, context
