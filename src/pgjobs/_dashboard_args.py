"""Checks of dashboard arguments, page cursors and search terms.

Every value that reaches SQL passes through here first, so a bad page number
or cursor fails with `DashboardQueryError` before any I/O.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pgjobs._dashboard_models import (
    FINISHED_STATES,
    JOB_STATES,
    MAX_OFFSET,
    MAX_PER_PAGE,
    MAX_SEARCH_CHARS,
    DashboardQueryError,
    JobState,
)

MAX_JOB_ID = 2**63 - 1
ALL_STATUSES = (
    "todo",
    "doing",
    "succeeded",
    "failed",
    "cancelled",
    "aborted",
    "aborting",
)

# procrastinate's statuses behind each state. 'aborting' has not been written
# since procrastinate 3.0; a row left from before shows as running.
STATUSES_OF_STATE: dict[str, tuple[str, ...]] = {
    "queued": ("todo",),
    "scheduled": ("todo",),
    "retrying": ("todo",),
    "running": ("doing", "aborting"),
    "succeeded": ("succeeded",),
    "failed": ("failed",),
    "cancelled": ("cancelled",),
    "aborted": ("aborted",),
}

# States that a status alone does not tell apart: these need a row filter.
_WAITING_STATES = ("queued", "scheduled", "retrying")

_CURSOR_PATTERN = re.compile(r"^([1-9][0-9]{0,18})\.([1-9][0-9]{0,9})$")
_JSON_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")


@dataclass(frozen=True)
class PageQuery:
    """Checked arguments of one job page."""

    page: int
    per_page: int
    offset: int
    before: int
    queue: str | None
    state: JobState | None
    task: str | None
    search: str | None

    def params(self, *, limit: int, offset: int, before: int) -> dict[str, Any]:
        """Return the parameters shared by the page and count queries."""
        statuses = STATUSES_OF_STATE[self.state] if self.state else ALL_STATUSES
        return {
            "limit": limit,
            "offset": offset,
            "before": before,
            "queue": self.queue,
            "state": self.state if self.state in _WAITING_STATES else None,
            "statuses": list(statuses),
            "task": self.task,
            "search": self.search,
            "search_id": search_id(self.search),
            "search_path": search_path(self.search),
        }


def positive_int(name: str, value: object, maximum: int | None = None) -> int:
    """Return `value` if it is an int from 1 to `maximum`, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DashboardQueryError(
            f"{name} must be a whole number, got {value!r}", argument=name, value=value
        )
    if value < 1:
        raise DashboardQueryError(
            f"{name} must be 1 or more, got {value!r}", argument=name, value=value
        )
    if maximum is not None and value > maximum:
        raise DashboardQueryError(
            f"{name} must be at most {maximum}, got {value!r}",
            argument=name,
            value=value,
            maximum=maximum,
        )
    return value


def _optional_text(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise DashboardQueryError(
            f"{name} must be a string or None, got {value!r}",
            argument=name,
            value=value,
        )
    if "\x00" in value:
        raise DashboardQueryError(
            f"{name} must not contain NUL characters, got {value!r}",
            argument=name,
            value=value,
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # psycopg would raise UnicodeEncodeError while sending the query.
        raise DashboardQueryError(
            f"{name} must not contain lone surrogates, got {value!r}",
            argument=name,
            value=value,
        ) from None
    return value or None


def check_state(value: object) -> JobState | None:
    """Return `value` if it is None or a job state, else raise."""
    if value is None:
        return None
    if value not in JOB_STATES:
        raise DashboardQueryError(
            f"state {value!r} is not a job state; use one of {', '.join(JOB_STATES)}",
            argument="state",
            value=value,
        )
    return value


def page_query(
    *,
    page: object,
    per_page: object,
    queue: object,
    state: object,
    task: object,
    search: object,
    cursor: object,
) -> PageQuery:
    """Check the arguments of `get_recent_jobs`; a cursor overrides `page`."""
    size = positive_int("per_page", per_page, MAX_PER_PAGE)
    text = _optional_text("search", search)
    if text is not None:
        text = text.strip() or None
    if text is not None and len(text) > MAX_SEARCH_CHARS:
        raise DashboardQueryError(
            f"search must be at most {MAX_SEARCH_CHARS} characters, got {len(text)}",
            argument="search",
            value=text,
            maximum=MAX_SEARCH_CHARS,
        )
    if cursor is not None:
        before, number = decode_cursor(cursor)
        offset = 0
    else:
        number = positive_int("page", page)
        before = MAX_JOB_ID
        offset = (number - 1) * size
        if offset > MAX_OFFSET:
            deepest = MAX_OFFSET // size + 1
            raise DashboardQueryError(
                f"page {number!r} at per_page {size} would skip {offset} jobs; a "
                f"page number may skip at most {MAX_OFFSET} (page {deepest} at this "
                "size), so follow next_cursor (--cursor in the CLI) to go deeper",
                argument="page",
                value=number,
                maximum=deepest,
            )
    return PageQuery(
        page=number,
        per_page=size,
        offset=offset,
        before=before,
        queue=_optional_text("queue", queue),
        state=check_state(state),
        task=_optional_text("task", task),
        search=text,
    )


def encode_cursor(before: int, page: int) -> str:
    """Return the opaque cursor of the page that starts below job `before`."""
    raw = f"{before}.{page}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: object) -> tuple[int, int]:
    """Return (before, page) from a cursor made by `encode_cursor`."""
    problem = DashboardQueryError(
        f"cursor {cursor!r} is invalid; pass the next_cursor of a previous page "
        "unchanged, or leave it out to start from the newest job",
        argument="cursor",
        value=cursor,
    )
    if not isinstance(cursor, str) or not 0 < len(cursor) <= 64:
        raise problem
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raise problem from None
    match = _CURSOR_PATTERN.match(raw)
    if match is None:
        raise problem
    before, page = int(match.group(1)), int(match.group(2))
    if before > MAX_JOB_ID or page < 2:
        raise problem
    return before, page


def search_id(search: str | None) -> int | None:
    """Return the job id that `search` names, if it is one."""
    if search is None:
        return None
    text = search.removeprefix("#")
    if not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if 0 < number <= MAX_JOB_ID else None


def search_path(search: str | None) -> str | None:
    """Return a jsonpath that finds `search` as a value at any depth of a payload.

    The text always matches string values exactly (case-sensitive). Text that
    is a JSON number, true or false also matches that number or boolean.
    """
    if search is None:
        return None
    # json.dumps escapes quotes, backslashes and control characters as
    # jsonpath string literals expect, and writes other characters as \u
    # escapes, so the text cannot break out of the literal.
    tests = [f"@ == {json.dumps(search)}"]
    if _JSON_NUMBER.match(search) or search in ("true", "false"):
        tests.append(f"@ == {search}")
    return f"$.** ? ({' || '.join(tests)})"


def prune_arguments(
    older_than: object, states: object
) -> tuple[float, tuple[str, ...]]:
    """Check `prune` arguments; return (age in seconds, procrastinate statuses)."""
    if isinstance(older_than, datetime.timedelta):
        seconds = older_than.total_seconds()
    elif isinstance(older_than, int | float) and not isinstance(older_than, bool):
        seconds = float(older_than)
    else:
        raise DashboardQueryError(
            "older_than must be a timedelta or a number of seconds, "
            f"got {older_than!r}",
            argument="older_than",
            value=older_than,
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise DashboardQueryError(
            f"older_than must be zero or more seconds, got {older_than!r}",
            argument="older_than",
            value=older_than,
        )
    if isinstance(states, str) or not isinstance(states, Sequence) or not states:
        raise DashboardQueryError(
            f"states must be a non-empty list of finished states, got {states!r}",
            argument="states",
            value=states,
        )
    statuses: list[str] = []
    for state in states:
        if state not in FINISHED_STATES:
            raise DashboardQueryError(
                f"prune deletes only finished jobs, got state {state!r}; use "
                f"{', '.join(FINISHED_STATES)}, and cancel_job for waiting jobs",
                argument="states",
                value=states,
            )
        statuses.extend(STATUSES_OF_STATE[state])
    return seconds, tuple(dict.fromkeys(statuses))
