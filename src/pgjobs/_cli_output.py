"""Text that the `pgjobs` command prints for people: tables and job details."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

from pgjobs.dashboard import JobDetail, JobPage, QueueStats, Stats

_STATE_COLUMNS = (
    "queued",
    "scheduled",
    "retrying",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "aborted",
    "total",
)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == "-"
    return True


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Return rows as aligned columns: numbers right-aligned, text left-aligned."""
    cells = [list(headers)] + [[str(value) for value in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    numeric = [
        column > 0 and all(_is_number(row[column]) for row in cells[1:])
        for column in range(len(headers))
    ]
    lines = []
    for row in cells:
        parts = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def format_time(moment: datetime.datetime | None) -> str:
    """Return `moment` in local time to the second, or '-'."""
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_age(seconds: float | None) -> str:
    """Return a duration in seconds as '15 ms', '4.2 s', '12 min', '3.5 h' or '30 d'."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def _stats_row(stats: QueueStats, name: str) -> list[Any]:
    counts = [getattr(stats, column) for column in _STATE_COLUMNS]
    return [name, *counts, format_age(stats.oldest_ready_age_seconds)]


def stats_table(stats: Stats) -> str:
    """Return the job counts per queue and state, with a totals row."""
    rows = [
        _stats_row(queue, queue.queue if queue.configured else f"{queue.queue} *")
        for queue in stats.queues
    ]
    rows.append(_stats_row(stats.totals, "(all)"))
    text = format_table(["queue", *_STATE_COLUMNS, "oldest ready"], rows)
    if any(not queue.configured for queue in stats.queues):
        text += "\n\n* not in the configuration of this job system"
    return text


def job_page(page: JobPage) -> str:
    """Return one page of jobs as a table, with where the next page starts."""
    if not page.jobs:
        return "No jobs match."
    rows = [
        [
            job.id,
            job.queue,
            job.state,
            job.attempts,
            format_time(job.created_at),
            format_time(job.started_at),
            format_time(job.finished_at),
        ]
        for job in page.jobs
    ]
    headers = ["id", "queue", "state", "attempts", "created", "started", "finished"]
    total = f"about {page.total}" if page.total_is_estimate else str(page.total)
    footer = f"Page {page.page} of {page.pages} ({total} jobs)"
    if page.next_cursor:
        footer += f"; next page: --cursor {page.next_cursor}"
    return f"{format_table(headers, rows)}\n\n{footer}"


def _fields(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    width = max(len(key) for key, _ in pairs) + 1
    return [f"  {(key + ':').ljust(width)} {value}" for key, value in pairs]


def _indented_json(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return "\n".join(f"  {line}" for line in text.splitlines())


def job_detail(job: JobDetail, *, tracebacks: bool) -> str:
    """Return one job's fields, payload, timeline and attempts as text."""
    allowed = "" if job.retry_limit is None else f" of {job.retry_limit + 1} allowed"
    lines = [f"Job {job.id}"]
    lines += _fields(
        [
            ("queue", job.queue),
            ("state", job.state),
            ("attempts", f"{job.attempts}{allowed}"),
            ("priority", job.priority),
            ("singleton key", job.singleton_key or "-"),
            ("lock", job.lock or "-"),
            ("created", format_time(job.created_at)),
            ("scheduled for", format_time(job.scheduled_at)),
            ("started", format_time(job.started_at)),
            ("finished", format_time(job.finished_at)),
            ("abort requested", "yes" if job.abort_requested else "no"),
        ]
    )
    lines += ["", "Payload:", _indented_json(job.payload)]
    if job.result is not None:
        lines += ["", "Result:", _indented_json(job.result)]
    if job.events:
        lines += ["", "Timeline:"]
        lines += [f"  {format_time(event.at)}  {event.type}" for event in job.events]
    if job.attempt_history:
        lines += ["", "Attempts:"]
    for record in job.attempt_history:
        duration = format_age(record.duration_seconds)
        worker = record.worker_name or "-"
        lines.append(
            f"  #{record.attempt} {record.outcome} at "
            f"{format_time(record.finished_at)} ({duration}, worker {worker})"
        )
        if record.error_type or record.error_message:
            # A result that could not be stored leaves a message with no type.
            error = record.error_type or "Error"
            if record.error_message:
                error += f": {record.error_message}"
            lines.append(f"     {error}")
        if tracebacks and record.traceback:
            lines += [f"     {line}" for line in record.traceback.splitlines()]
    return "\n".join(lines)
