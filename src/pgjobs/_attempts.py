"""Records of job attempts: errors, results and recoveries."""

from __future__ import annotations

import datetime
import re
import traceback
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

MAX_MESSAGE_CHARS = 4_000
MAX_TRACEBACK_CHARS = 16_000
# Each frame and each exception line of a traceback is cut to this length,
# so one huge message cannot push the frames out of the stored traceback.
MAX_TRACEBACK_ENTRY_CHARS = 2_000

RECORD_ATTEMPT_SQL = """
INSERT INTO pgjobs_attempts (
    job_id, attempt, outcome, worker_id, worker_name, started_at, finished_at,
    result, error_type, error_message, traceback
) VALUES (
    %(job_id)s, %(attempt)s, %(outcome)s, %(worker_id)s, %(worker_name)s,
    %(started_at)s, now(), %(result)s, %(error_type)s, %(error_message)s,
    %(traceback)s
)
ON CONFLICT (job_id, attempt) DO UPDATE SET
    outcome = EXCLUDED.outcome,
    worker_id = EXCLUDED.worker_id,
    worker_name = EXCLUDED.worker_name,
    started_at = EXCLUDED.started_at,
    finished_at = EXCLUDED.finished_at,
    result = EXCLUDED.result,
    error_type = EXCLUDED.error_type,
    error_message = EXCLUDED.error_message,
    traceback = EXCLUDED.traceback
"""

# NUL and lone surrogates: PostgreSQL text cannot hold them.
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")

COUNT_INTERRUPTED_SQL = """
SELECT count(*) FROM pgjobs_attempts
 WHERE job_id = %(job_id)s AND outcome = 'interrupted'
"""

MARK_ON_FAILED_SQL = """
UPDATE pgjobs_attempts SET on_failed_at = now()
 WHERE job_id = %(job_id)s AND attempt = %(attempt)s
"""


@dataclass(frozen=True)
class Attempt:
    """One attempt's outcome, ready to store."""

    job_id: int
    attempt: int
    outcome: str
    worker_id: int | None
    worker_name: str | None
    started_at: datetime.datetime | None
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None

    def params(self) -> dict[str, Any]:
        """Return the query parameters of `RECORD_ATTEMPT_SQL`."""
        return {
            "job_id": self.job_id,
            "attempt": self.attempt,
            "outcome": self.outcome,
            "worker_id": self.worker_id,
            "worker_name": self.worker_name,
            "started_at": self.started_at,
            "result": None if self.result is None else Jsonb(self.result),
            "error_type": self.error_type,
            "error_message": self.error_message,
            "traceback": self.traceback,
        }


def clean_text(text: str, limit: int, *, keep_end: bool = False) -> str:
    """Bound `text` to `limit` characters and make it storable in PostgreSQL.

    NUL characters, which text columns reject, become U+FFFD, and so do lone
    surrogates. A traceback keeps its end, where the failing line is.
    """
    text = _UNSTORABLE_CHARS.sub("\ufffd", text)
    if len(text) <= limit:
        return text
    marker = "\n[... truncated ...]\n"
    if keep_end:
        return marker + text[-(limit - len(marker)) :]
    return text[: limit - len(marker)] + marker


def describe_error(exc: BaseException) -> tuple[str, str, str]:
    """Return the error's qualified type, message and traceback, bounded."""
    kind = type(exc)
    qualified = f"{kind.__module__}.{kind.__qualname__}"
    if kind.__module__ == "builtins":
        qualified = kind.__qualname__
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not lose the record
        message = f"<unprintable {kind.__qualname__}>"
    entries = [
        clean_text(entry, MAX_TRACEBACK_ENTRY_CHARS)
        for entry in traceback.format_exception(exc)
    ]
    formatted = "".join(entries)
    return (
        clean_text(qualified, 512),
        clean_text(message, MAX_MESSAGE_CHARS),
        clean_text(formatted, MAX_TRACEBACK_CHARS, keep_end=True),
    )


async def record(conn: psycopg.AsyncConnection[Any], attempt: Attempt) -> None:
    """Insert or replace the row of one attempt."""
    await conn.execute(RECORD_ATTEMPT_SQL, attempt.params())


async def mark_on_failed(
    conn: psycopg.AsyncConnection[Any], job_id: int, attempt: int
) -> None:
    """Record that the queue's on_failed hook ran for this job."""
    await conn.execute(MARK_ON_FAILED_SQL, {"job_id": job_id, "attempt": attempt})


async def count_interrupted(conn: psycopg.AsyncConnection[Any], job_id: int) -> int:
    """Return how many runs of a job a stopping worker interrupted."""
    cursor = await conn.execute(COUNT_INTERRUPTED_SQL, {"job_id": job_id})
    row = await cursor.fetchone()
    return int(row[0]) if row else 0
