"""Template filters: times, ages and state labels for the admin pages."""

from __future__ import annotations

import datetime

_STATE_LABELS = {
    "queued": "Queued",
    "scheduled": "Scheduled",
    "retrying": "Retrying",
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "aborted": "Aborted",
}


def format_datetime(value: datetime.datetime | None) -> str:
    """Format an aware time in UTC to the second, or a dash for None."""
    if value is None:
        return "—"
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_age(seconds: float | None) -> str:
    """Format a duration in seconds as `15 ms`, `42 s`, `3 min 5 s` or `2 h 10 min`."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def state_label(state: str) -> str:
    """Return the display label of a job state."""
    return _STATE_LABELS.get(state, state)
