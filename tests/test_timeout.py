"""Handler timeouts: async handlers are cancelled, sync threads are waited for."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg

import pgjobs
from tests.conftest import wait_for


def status_of(query: Any, job_id: int) -> str | None:
    rows = query("SELECT status FROM procrastinate_jobs WHERE id = %s", job_id)
    return rows[0][0] if rows else None


def outcomes_of(query: Any, job_id: int) -> list[tuple[Any, ...]]:
    return query(
        "SELECT attempt, outcome, error_type FROM pgjobs_attempts "
        "WHERE job_id = %s ORDER BY attempt",
        job_id,
    )


async def test_async_timeout_cancels_handler(make_system: Any, query: Any) -> None:
    cancelled: list[int] = []

    async def slow(payload: dict[str, Any], context: pgjobs.JobContext) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(context.attempt)
            raise

    jobs = make_system(queues={"q": pgjobs.queue(timeout=0.2, retry_limit=1)})
    await jobs.init_jobs({"q": slow})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "failed")

    assert cancelled == [1, 2]
    assert outcomes_of(query, job_id) == [
        (1, "timed_out", "pgjobs.errors.JobTimeout"),
        (2, "timed_out", "pgjobs.errors.JobTimeout"),
    ]


async def test_async_timeout_calls_on_failed_once(make_system: Any, query: Any) -> None:
    errors: list[BaseException] = []

    async def slow(payload: dict[str, Any]) -> None:
        await asyncio.sleep(3600)

    def on_failed(payload: Any, error: BaseException) -> None:
        errors.append(error)

    definition = pgjobs.queue(timeout=0.2, retry_limit=1, on_failed=on_failed)
    jobs = make_system(queues={"q": definition})
    await jobs.init_jobs({"q": slow})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "failed")
    await wait_for(lambda: errors)

    assert len(errors) == 1
    assert isinstance(errors[0], pgjobs.JobTimeout)


async def test_async_handler_own_timeout_is_failure(
    make_system: Any, query: Any
) -> None:
    async def handler(payload: dict[str, Any]) -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)

    jobs = make_system(queues={"q": pgjobs.queue(timeout=60, retry_limit=0)})
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "failed")

    assert outcomes_of(query, job_id) == [(1, "failed", "TimeoutError")]


async def test_sync_timeout_never_overlaps_retry(
    make_system: Any, query: Any, dsn: str
) -> None:
    runs: list[dict[str, Any]] = []
    lock = threading.Lock()

    def job_status(job_id: int) -> str:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT status FROM pgjobs.procrastinate_jobs WHERE id = %s",
                [job_id],
            ).fetchone()
        assert row is not None
        return str(row[0])

    def handler(payload: dict[str, Any], context: pgjobs.JobContext) -> str:
        run: dict[str, Any] = {"attempt": context.attempt, "start": time.monotonic()}
        with lock:
            runs.append(run)
        if context.attempt > 1:
            run["end"] = time.monotonic()
            return "second run"
        deadline = time.monotonic() + 30
        while not context.should_abort() and time.monotonic() < deadline:
            time.sleep(0.01)
        run["saw_abort"] = context.should_abort()
        # The retry must not start while this thread still runs.
        time.sleep(0.5)
        run["status_while_running"] = job_status(context.job_id)
        run["end"] = time.monotonic()
        raise RuntimeError("gave up after should_abort()")

    jobs = make_system(queues={"q": pgjobs.queue(timeout=0.2, retry_limit=1)})
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "succeeded")

    first, second = runs
    assert first["saw_abort"] is True
    assert first["status_while_running"] == "doing"
    assert second["start"] > first["end"]
    assert outcomes_of(query, job_id) == [
        (1, "timed_out", "pgjobs.errors.JobTimeout"),
        (2, "succeeded", None),
    ]


async def test_sync_timeout_records_thread_error(make_system: Any, query: Any) -> None:
    def handler(payload: dict[str, Any], context: pgjobs.JobContext) -> None:
        while not context.should_abort():
            time.sleep(0.01)
        raise LookupError("cleanup failed")

    jobs = make_system(queues={"q": pgjobs.queue(timeout=0.1, retry_limit=0)})
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "failed")
    await wait_for(lambda: outcomes_of(query, job_id))

    [traceback] = query(
        "SELECT traceback FROM pgjobs_attempts WHERE job_id = %s", job_id
    )[0]
    assert "LookupError: cleanup failed" in traceback


async def test_sync_timeout_late_result_still_timed_out(
    make_system: Any, query: Any
) -> None:
    def handler(payload: dict[str, Any], context: pgjobs.JobContext) -> str:
        while not context.should_abort():
            time.sleep(0.01)
        return "finished late"

    jobs = make_system(queues={"q": pgjobs.queue(timeout=0.1, retry_limit=0)})
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "failed")

    assert outcomes_of(query, job_id) == [(1, "timed_out", "pgjobs.errors.JobTimeout")]


async def test_sync_handler_within_timeout_succeeds(
    make_system: Any, query: Any
) -> None:
    def handler(payload: dict[str, Any]) -> int:
        time.sleep(0.05)
        return 7

    jobs = make_system(queues={"q": pgjobs.queue(timeout=30)})
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "succeeded")

    rows = query("SELECT result FROM pgjobs_attempts WHERE job_id = %s", job_id)
    assert rows == [(7,)]
