"""Mapping of dashboard rows to models; pure functions, no I/O."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from pgjobs._dashboard_models import (
    FINISHED_STATES,
    AttemptRecord,
    JobDetail,
    JobEvent,
    QueueStats,
    Stats,
)
from pgjobs.bootstrap import queue_settings
from pgjobs.config import JobSystemConfig

COUNT_FIELDS = (
    "queued",
    "scheduled",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "cancelled",
    "aborted",
)
TOTALS_NAME = "*"

# Events that end an attempt, and the outcome they mean when pgjobs wrote
# no record of it. A retry without a record is a failure whose record could
# not be written.
_ATTEMPT_ENDS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "deferred_for_retry": "failed",
    "aborted": "aborted",
}
_FINISH_EVENTS = ("succeeded", "failed", "cancelled", "aborted")


def build_stats(rows: Sequence[Mapping[str, Any]], config: JobSystemConfig) -> Stats:
    """Build `Stats` from the rows of stats.sql: configured queues first."""
    found: dict[str, QueueStats] = {}
    for row in rows:
        name = row["queue"]
        if name is None:
            continue
        counts = {field: int(row[field]) for field in COUNT_FIELDS}
        configured = name in config.queues
        total = sum(counts.values())
        if not configured and total == 0:
            # Settings recorded by another deployment, with no job left.
            continue
        settings = row["settings"]
        if settings is None and configured:
            settings = queue_settings(config.queues[name])
        age = row["oldest_ready_age_seconds"]
        found[name] = QueueStats(
            queue=name,
            configured=configured,
            total=total,
            # The server clock may step back; an age is never negative.
            oldest_ready_age_seconds=None if age is None else max(0.0, age),
            settings=settings,
            **counts,
        )
    for name, definition in config.queues.items():
        if name not in found:
            found[name] = QueueStats(
                queue=name, configured=True, settings=queue_settings(definition)
            )
    configured_names = [name for name in config.queues]
    other_names = sorted(set(found) - set(configured_names))
    queues = [found[name] for name in configured_names + other_names]
    return Stats(
        queues=queues,
        totals=_totals(queues),
        generated_at=rows[0]["generated_at"],
    )


def _totals(queues: Sequence[QueueStats]) -> QueueStats:
    sums = {
        field: sum(getattr(queue, field) for queue in queues) for field in COUNT_FIELDS
    }
    ages = [
        queue.oldest_ready_age_seconds
        for queue in queues
        if queue.oldest_ready_age_seconds is not None
    ]
    return QueueStats(
        queue=TOTALS_NAME,
        configured=True,
        total=sum(sums.values()),
        oldest_ready_age_seconds=max(ages) if ages else None,
        **sums,
    )


def summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return the `JobSummary` fields of one row of page_rows.sql."""
    return {
        "id": row["id"],
        "queue": row["queue_name"],
        "task": row["task_name"],
        "state": row["state"],
        "priority": row["priority"],
        "singleton_key": row["queueing_lock"],
        "attempts": row["attempts"],
        "created_at": row["created_at"],
        "scheduled_at": row["scheduled_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
    }


def _time(value: Any) -> datetime.datetime | None:
    # Times nested in jsonb arrive as ISO 8601 text.
    if value is None or isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(str(value))


def build_detail(row: Mapping[str, Any], config: JobSystemConfig) -> JobDetail:
    """Build `JobDetail` from the row of job_detail.sql."""
    args = row["args"] or {}
    payload = args["payload"] if isinstance(args, dict) and "payload" in args else args
    events = [
        JobEvent(type=event["type"], at=_time(event["at"])) for event in row["events"]
    ]
    history = attempt_history(events, row["attempt_rows"], row["status"])
    results = [attempt.result for attempt in history if attempt.result is not None]
    state = row["state"]
    return JobDetail(
        id=row["id"],
        queue=row["queue_name"],
        task=row["task_name"],
        state=state,
        payload=payload,
        priority=row["priority"],
        singleton_key=row["queueing_lock"],
        lock=row["lock"],
        attempts=row["attempts"],
        retry_limit=_retry_limit(row["queue_name"], row["settings"], config),
        created_at=_first_at(events, ("deferred",)),
        scheduled_at=row["scheduled_at"],
        started_at=_last_at(events, ("started",)),
        finished_at=_last_at(events, _FINISH_EVENTS)
        if state in FINISHED_STATES
        else None,
        abort_requested=row["abort_requested"],
        result=results[-1] if results else None,
        events=events,
        attempt_history=history,
    )


def _retry_limit(
    queue: str, settings: Mapping[str, Any] | None, config: JobSystemConfig
) -> int | None:
    definition = config.queues.get(queue)
    if definition is not None:
        return definition.retry_limit
    if settings is not None and isinstance(settings.get("retry_limit"), int):
        return int(settings["retry_limit"])
    return None


def _first_at(
    events: Sequence[JobEvent], types: Sequence[str]
) -> datetime.datetime | None:
    return next((event.at for event in events if event.type in types), None)


def _last_at(
    events: Sequence[JobEvent], types: Sequence[str]
) -> datetime.datetime | None:
    return _first_at(list(reversed(events)), types)


def attempt_history(
    events: Sequence[JobEvent],
    records: Sequence[Mapping[str, Any]],
    status: str,
) -> list[AttemptRecord]:
    """Merge pgjobs' attempt records with the attempts seen in the events.

    The n-th 'started' event is attempt n, because procrastinate adds one to
    the job's attempts each time a run ends. Where pgjobs wrote a record, it
    wins; other attempts get their times and outcome from the events.
    """
    starts = [index for index, event in enumerate(events) if event.type == "started"]
    by_attempt = {int(record["attempt"]): record for record in records}
    count = max([len(starts), *by_attempt])
    history = []
    for number in range(1, count + 1):
        start = starts[number - 1] if number <= len(starts) else None
        end = _attempt_end(events, start)
        record = by_attempt.get(number)
        if record is not None:
            history.append(_from_record(number, record, events, start))
            continue
        if end is not None:
            outcome = _ATTEMPT_ENDS[events[end].type]
        elif status == "doing" and number == len(starts):
            outcome = "running"
        else:
            outcome = "unknown"
        history.append(
            _attempt(
                number,
                outcome,
                events[start].at if start is not None else None,
                events[end].at if end is not None else None,
            )
        )
    return history


def _attempt_end(events: Sequence[JobEvent], start: int | None) -> int | None:
    if start is None:
        return None
    for index in range(start + 1, len(events)):
        kind = events[index].type
        if kind == "started":
            return None
        if kind in _ATTEMPT_ENDS:
            return index
    return None


def _from_record(
    number: int,
    record: Mapping[str, Any],
    events: Sequence[JobEvent],
    start: int | None,
) -> AttemptRecord:
    started_at = _time(record["started_at"])
    if started_at is None and start is not None:
        started_at = events[start].at
    return _attempt(
        number,
        record["outcome"],
        started_at,
        _time(record["finished_at"]),
        worker_id=record["worker_id"],
        worker_name=record["worker_name"],
        error_type=record["error_type"],
        error_message=record["error_message"],
        traceback=record["traceback"],
        result=record["result"],
    )


def _attempt(
    number: int,
    outcome: str,
    started_at: datetime.datetime | None,
    finished_at: datetime.datetime | None,
    **details: Any,
) -> AttemptRecord:
    duration = None
    if started_at is not None and finished_at is not None:
        duration = max(0.0, (finished_at - started_at).total_seconds())
    fields: dict[str, Any] = {
        "worker_id": None,
        "worker_name": None,
        "error_type": None,
        "error_message": None,
        "traceback": None,
        "result": None,
        **details,
    }
    return AttemptRecord(
        attempt=number,
        outcome=outcome,
        started_at=started_at,
        finished_at=finished_at,
        duration_seconds=duration,
        **fields,
    )
