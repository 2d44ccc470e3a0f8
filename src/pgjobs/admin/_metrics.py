"""Prometheus text exposition of the queue statistics.

The format is the plain-text one (version 0.0.4) that every Prometheus
server scrapes; it is written here directly, since two gauges do not need a
client library.
"""

from __future__ import annotations

from pgjobs.dashboard import JOB_STATES, Stats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(stats: Stats) -> str:
    """Return the statistics as Prometheus gauges.

    `pgjobs_jobs` counts the jobs of each queue in each state, and
    `pgjobs_oldest_ready_age_seconds` is the age of each queue's oldest job
    that is ready to run (0 when none is).
    """
    lines = [
        "# HELP pgjobs_jobs Jobs in the table, by queue and state.",
        "# TYPE pgjobs_jobs gauge",
    ]
    for queue in stats.queues:
        name = _label_value(queue.queue)
        for state in JOB_STATES:
            count = getattr(queue, state)
            lines.append(f'pgjobs_jobs{{queue="{name}",state="{state}"}} {count}')

    lines += [
        "# HELP pgjobs_oldest_ready_age_seconds Seconds since the oldest job "
        "ready to run became ready; 0 when no job is ready.",
        "# TYPE pgjobs_oldest_ready_age_seconds gauge",
    ]
    for queue in stats.queues:
        name = _label_value(queue.queue)
        age = queue.oldest_ready_age_seconds or 0.0
        lines.append(f'pgjobs_oldest_ready_age_seconds{{queue="{name}"}} {age:.3f}')

    lines += [
        "# HELP pgjobs_queue_configured 1 for a configured queue, 0 for a queue "
        "found only in the job table.",
        "# TYPE pgjobs_queue_configured gauge",
    ]
    for queue in stats.queues:
        name = _label_value(queue.queue)
        lines.append(
            f'pgjobs_queue_configured{{queue="{name}"}} {int(queue.configured)}'
        )
    return "\n".join(lines) + "\n"
