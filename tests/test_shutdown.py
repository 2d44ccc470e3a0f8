"""stop(): drain, interrupt, write every status, and no signal handlers."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import pgjobs
from tests.apps import harness
from tests.conftest import wait_for


def status_of(query: Any, job_id: int) -> str | None:
    rows = query("SELECT status FROM procrastinate_jobs WHERE id = %s", job_id)
    return rows[0][0] if rows else None


def doing_count(query: Any) -> int:
    [(count,)] = query("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")
    return int(count)


def outcomes_of(query: Any, job_id: int) -> list[tuple[Any, ...]]:
    return query(
        "SELECT attempt, outcome FROM pgjobs_attempts WHERE job_id = %s "
        "ORDER BY attempt",
        job_id,
    )


async def test_stop_lets_running_job_finish(make_system: Any, query: Any) -> None:
    started = asyncio.Event()

    async def handler(payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(0.5)

    jobs = make_system(queues={"q": pgjobs.queue()}, worker={"graceful_timeout": 30})
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await asyncio.wait_for(started.wait(), timeout=20)
    await jobs.stop()

    # The status is written before stop() returns.
    assert status_of(query, job_id) == "succeeded"
    assert query("SELECT count(*) FROM procrastinate_workers") == [(0,)]


async def test_stop_interrupts_after_graceful_timeout(
    make_system: Any, query: Any
) -> None:
    started = asyncio.Event()

    async def handler(payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(3600)

    jobs = make_system(
        queues={"q": pgjobs.queue(concurrency=3)}, worker={"graceful_timeout": 0.3}
    )
    await jobs.init_jobs({"q": handler})
    ids = await jobs.send_many("q", [{}, {}, {}])
    await wait_for(lambda: doing_count(query) == 3)
    await jobs.stop()

    assert doing_count(query) == 0
    for job_id in ids:
        assert status_of(query, job_id) == "todo"
        assert outcomes_of(query, job_id) == [(1, "interrupted")]


async def test_stop_interrupted_run_keeps_budget(make_system: Any, query: Any) -> None:
    attempts: list[int] = []
    last: list[bool] = []
    interrupted: list[int] = []

    def note(context: pgjobs.JobContext) -> None:
        attempts.append(context.attempt)
        last.append(context.is_last_attempt)
        interrupted.append(context.interrupted_runs)

    async def hang(payload: dict[str, Any], context: pgjobs.JobContext) -> None:
        note(context)
        await asyncio.sleep(3600)

    async def fail(payload: dict[str, Any], context: pgjobs.JobContext) -> None:
        note(context)
        raise RuntimeError("fails")

    jobs = make_system(
        queues={"q": pgjobs.queue(retry_limit=1)}, worker={"graceful_timeout": 0.2}
    )
    await jobs.init_jobs({"q": hang})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: attempts)
    await jobs.stop()
    await jobs.init_jobs({"q": fail})
    await wait_for(lambda: status_of(query, job_id) == "failed")

    # The interrupted run does not count: one run and one retry still follow.
    assert attempts == [1, 2, 3]
    assert interrupted == [0, 1, 1]
    assert last == [False, False, True]
    assert outcomes_of(query, job_id) == [
        (1, "interrupted"),
        (2, "failed"),
        (3, "failed"),
    ]


async def test_stop_sync_handler_sees_should_abort(
    make_system: Any, query: Any
) -> None:
    seen: list[bool] = []

    def handler(payload: dict[str, Any], context: pgjobs.JobContext) -> None:
        deadline = time.monotonic() + 30
        while not context.should_abort() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(context.should_abort())
        raise RuntimeError("stopped early")

    jobs = make_system(queues={"q": pgjobs.queue()}, worker={"graceful_timeout": 0.2})
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: doing_count(query) == 1)
    await jobs.stop()

    assert seen == [True]
    assert status_of(query, job_id) == "todo"
    assert outcomes_of(query, job_id) == [(1, "interrupted")]


async def test_stop_sync_handler_result_kept(make_system: Any, query: Any) -> None:
    def handler(payload: dict[str, Any], context: pgjobs.JobContext) -> str:
        while not context.should_abort():
            time.sleep(0.01)
        return "finished anyway"

    jobs = make_system(queues={"q": pgjobs.queue()}, worker={"graceful_timeout": 0.2})
    await jobs.init_jobs({"q": handler})
    job_id = await jobs.send("q", {})
    await wait_for(lambda: doing_count(query) == 1)
    await jobs.stop()

    assert status_of(query, job_id) == "succeeded"
    assert query("SELECT result FROM pgjobs_attempts WHERE job_id = %s", job_id) == [
        ("finished anyway",)
    ]


async def test_stop_twice_is_safe(make_system: Any) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.init_jobs({"q": lambda payload: None})
    await jobs.stop()
    await jobs.stop()

    assert jobs.workers is None
    assert not jobs.started


async def test_stop_before_start_is_safe(make_system: Any) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.stop()

    assert not jobs.started


async def test_stop_then_init_again(make_system: Any, query: Any) -> None:
    seen: list[Any] = []
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.init_jobs({"q": seen.append})
    await jobs.stop()
    await jobs.init_jobs({"q": seen.append})
    job_id = await jobs.send("q", {"again": True})
    await wait_for(lambda: seen)

    assert seen == [{"again": True}]
    await wait_for(lambda: status_of(query, job_id) == "succeeded")


async def test_stop_then_new_handler(make_system: Any) -> None:
    first: list[Any] = []
    second: list[Any] = []
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.init_jobs({"q": first.append})
    await jobs.stop()
    await jobs.init_jobs({"q": second.append})
    await jobs.send("q", {})
    await wait_for(lambda: second)

    assert first == []


async def test_init_jobs_new_handler_while_running(make_system: Any) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.init_jobs({"q": lambda payload: None})

    with pytest.raises(pgjobs.UsageError, match="call stop"):
        await jobs.init_jobs({"q": lambda payload: 1})


async def test_init_jobs_installs_no_signal_handler(make_system: Any) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.init_jobs({"q": lambda payload: None})
    await jobs.send("q", {})
    await asyncio.sleep(0.5)

    after = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    assert after == before


def test_init_jobs_sync_installs_no_signal_handler(dsn: str) -> None:
    from tests.conftest import build_config

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    jobs = pgjobs.create_job_system(build_config(dsn, queues={"q": pgjobs.queue()}))
    done = threading.Event()
    try:
        jobs.init_jobs_sync({"q": lambda payload: done.set()})
        jobs.send_sync("q", {})
        assert done.wait(timeout=20)
    finally:
        jobs.stop_sync()

    after = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    assert after == before


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """Worker subprocesses that the test starts; each is killed after."""
    started: list[Any] = []
    yield started
    for process in started:
        harness.kill(process)


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"seconds": 1.0}, "succeeded"),
        ({"seconds": 3600, "abortable": True}, "todo"),
    ],
    ids=["finishes", "interrupted"],
)
async def test_sigterm_cli_worker_drains(
    make_system: Any,
    query: Any,
    dsn: str,
    processes: list[Any],
    payload: dict[str, Any],
    status: str,
) -> None:
    harness.create_runs_table(dsn)
    sender = make_system(queues={"slow": pgjobs.queue()})
    process = harness.start_worker(dsn, cli=True, graceful=2.0)
    processes.append(process)
    job_id = await sender.send("slow", payload)
    await wait_for(lambda: harness.runs(dsn, job_id), timeout=60)

    process.send_signal(signal.SIGTERM)
    returncode = await asyncio.to_thread(process.wait, 60)

    assert returncode == 0
    assert doing_count(query) == 0
    assert status_of(query, job_id) == status
    assert query("SELECT count(*) FROM procrastinate_workers") == [(0,)]
