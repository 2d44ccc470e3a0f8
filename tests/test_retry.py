"""Retry semantics: run counts, delays, on_failed and attempt records."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import pgjobs
from pgjobs import _attempts
from pgjobs.worker import retry_delay
from tests.conftest import wait_for


def status_of(query: Any, job_id: int) -> str | None:
    rows = query("SELECT status FROM procrastinate_jobs WHERE id = %s", job_id)
    return rows[0][0] if rows else None


def attempts_of(query: Any, job_id: int) -> list[tuple[Any, ...]]:
    return query(
        "SELECT attempt, outcome, error_type, error_message, traceback, worker_id, "
        "started_at, finished_at, result, on_failed_at "
        "FROM pgjobs_attempts WHERE job_id = %s ORDER BY attempt",
        job_id,
    )


def test_retry_delay_fixed() -> None:
    definition = pgjobs.queue(retry_delay=7.5)
    assert [retry_delay(definition, n) for n in (1, 2, 10)] == [7.5, 7.5, 7.5]


def test_retry_delay_exponential() -> None:
    definition = pgjobs.queue(retry_delay=2, retry_backoff=True, retry_delay_max=100)
    assert [retry_delay(definition, n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]


def test_retry_delay_capped() -> None:
    definition = pgjobs.queue(retry_delay=2, retry_backoff=True, retry_delay_max=100)
    assert retry_delay(definition, 7) == 100


@pytest.mark.parametrize("attempts", [63, 64, 1000, 10**9, 2**63])
def test_retry_delay_high_attempts(attempts: int) -> None:
    definition = pgjobs.queue(
        retry_delay=86400 * 365, retry_backoff=True, retry_delay_max=86400 * 365
    )
    assert retry_delay(definition, attempts) == 86400 * 365


def test_retry_delay_backoff_without_base() -> None:
    definition = pgjobs.queue(retry_backoff=True, retry_delay_max=10)
    assert [retry_delay(definition, n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]


@pytest.mark.parametrize(("retry_limit", "runs"), [(0, 1), (1, 2), (3, 4)])
async def test_retry_limit_run_count(
    make_system: Any, query: Any, retry_limit: int, runs: int
) -> None:
    seen: list[int] = []

    def handler(payload: dict[str, Any], context: pgjobs.JobContext) -> None:
        seen.append(context.attempt)
        raise RuntimeError(f"attempt {context.attempt} failed")

    jobs = make_system(queues={"q": pgjobs.queue(retry_limit=retry_limit)})
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "failed")

    assert seen == list(range(1, runs + 1))
    outcomes = [row[1] for row in attempts_of(query, job_id)]
    assert outcomes == ["failed"] * runs


async def test_retry_delay_schedules_retry(make_system: Any, query: Any) -> None:
    jobs = make_system(queues={"q": pgjobs.queue(retry_limit=1, retry_delay=600)})

    async def handler(payload: dict[str, Any]) -> None:
        raise RuntimeError("fails")

    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(
        lambda: status_of(query, job_id) == "todo" and attempts_of(query, job_id)
    )

    rows = query(
        "SELECT scheduled_at > now() + interval '500 seconds', attempts "
        "FROM procrastinate_jobs WHERE id = %s",
        job_id,
    )
    assert rows == [(True, 1)]


async def test_on_failed_once_after_last_run(make_system: Any, query: Any) -> None:
    events: list[str] = []

    def on_failed(payload: Any, error: BaseException) -> None:
        events.append(f"on_failed:{type(error).__name__}")

    async def handler(payload: dict[str, Any], context: pgjobs.JobContext) -> None:
        events.append(f"run:{context.attempt}")
        raise ValueError("always")

    jobs = make_system(queues={"q": pgjobs.queue(retry_limit=2, on_failed=on_failed)})
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "failed")
    await wait_for(lambda: "on_failed:ValueError" in events)

    assert events == ["run:1", "run:2", "run:3", "on_failed:ValueError"]
    marks = [row[9] is not None for row in attempts_of(query, job_id)]
    assert marks == [False, False, True]


async def test_on_failed_not_called_after_success(make_system: Any, query: Any) -> None:
    hooks: list[Any] = []

    async def handler(payload: dict[str, Any], context: pgjobs.JobContext) -> str:
        if context.attempt == 1:
            raise RuntimeError("first run fails")
        return "done"

    jobs = make_system(
        queues={"q": pgjobs.queue(retry_limit=3, on_failed=hooks.append)}
    )
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "succeeded")

    assert hooks == []
    rows = attempts_of(query, job_id)
    assert [(row[0], row[1], row[8]) for row in rows] == [
        (1, "failed", None),
        (2, "succeeded", "done"),
    ]


async def test_on_failed_receives_payload_and_context(make_system: Any) -> None:
    calls: list[tuple[Any, ...]] = []

    def on_failed(payload: Any, error: BaseException, context: Any) -> None:
        calls.append((payload, str(error), context.attempt, context.job_id))

    def handler(payload: dict[str, Any]) -> None:
        raise KeyError("missing")

    jobs = make_system(queues={"q": pgjobs.queue(retry_limit=0, on_failed=on_failed)})
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {"n": 1})
    await wait_for(lambda: calls)

    assert calls == [({"n": 1}, "'missing'", 1, job_id)]


async def test_on_failed_error_logged_and_reported(
    make_system: Any, query: Any, caplog: pytest.LogCaptureFixture
) -> None:
    reported: list[BaseException] = []

    async def on_failed(payload: Any, error: BaseException) -> None:
        raise LookupError("hook broke")

    def handler(payload: dict[str, Any]) -> None:
        raise RuntimeError("job broke")

    jobs = make_system(
        queues={"q": pgjobs.queue(retry_limit=0, on_failed=on_failed)},
        on_error=reported.append,
    )
    caplog.set_level(logging.ERROR, logger="pgjobs")
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: any(isinstance(e, LookupError) for e in reported))
    await wait_for(lambda: status_of(query, job_id) == "failed")

    hook_logs = [
        record
        for record in caplog.records
        if getattr(record, "action", None) == "on_failed_error"
    ]
    assert len(hook_logs) == 1
    assert hook_logs[0].exc_info is not None
    assert [type(e).__name__ for e in reported] == ["RuntimeError", "LookupError"]


async def test_sync_on_failed_runs_off_the_loop(make_system: Any) -> None:
    threads: list[bool] = []

    def on_failed(payload: Any, error: BaseException) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            threads.append(True)
        else:
            threads.append(False)

    async def handler(payload: dict[str, Any]) -> None:
        raise RuntimeError("job broke")

    jobs = make_system(queues={"q": pgjobs.queue(retry_limit=0, on_failed=on_failed)})
    await jobs.init_jobs({"q": handler})
    await jobs.send("q", {})
    await wait_for(lambda: threads)

    assert threads == [True]


async def test_attempt_records_failure(make_system: Any, query: Any) -> None:
    def failing_handler(payload: dict[str, Any]) -> None:
        raise ValueError("bad input 42")

    jobs = make_system(queues={"q": pgjobs.queue(retry_limit=0)})
    await jobs.init_jobs({"q": failing_handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "failed")

    [row] = attempts_of(query, job_id)
    attempt, outcome, error_type, message, traceback, worker_id = row[:6]
    started_at, finished_at = row[6], row[7]
    assert (attempt, outcome, error_type, message) == (
        1,
        "failed",
        "ValueError",
        "bad input 42",
    )
    assert "failing_handler" in traceback
    assert worker_id is not None
    assert started_at <= finished_at


async def test_attempt_records_result(make_system: Any, query: Any) -> None:
    async def handler(payload: dict[str, Any]) -> dict[str, Any]:
        return {"lines": 3, "names": ["a", "b"]}

    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "succeeded")

    [row] = attempts_of(query, job_id)
    assert (row[1], row[8]) == ("succeeded", {"lines": 3, "names": ["a", "b"]})


async def test_attempt_none_result_writes_nothing(make_system: Any, query: Any) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.init_jobs({"q": lambda payload: None})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "succeeded")

    assert attempts_of(query, job_id) == []


async def test_attempt_records_nul_and_huge_message(
    make_system: Any, query: Any
) -> None:
    def noisy_handler(payload: dict[str, Any]) -> None:
        raise RuntimeError("start\x00middle" + "x" * 100_000 + "\x00end")

    jobs = make_system(queues={"q": pgjobs.queue(retry_limit=0)})
    await jobs.init_jobs({"q": noisy_handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: status_of(query, job_id) == "failed")
    await wait_for(lambda: attempts_of(query, job_id))

    [row] = attempts_of(query, job_id)
    message, traceback = row[3], row[4]
    assert message.startswith("start\ufffdmiddle")
    assert len(message) <= _attempts.MAX_MESSAGE_CHARS
    assert "\x00" not in traceback
    assert len(traceback) <= _attempts.MAX_TRACEBACK_CHARS
    assert "noisy_handler" in traceback
