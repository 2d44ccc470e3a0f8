"""Orphan recovery: jobs whose worker died are retried or failed, once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

import pgjobs
from tests.apps import harness
from tests.conftest import wait_for


def status_of(query: Any, job_id: int) -> str | None:
    rows = query("SELECT status FROM procrastinate_jobs WHERE id = %s", job_id)
    return rows[0][0] if rows else None


def attempts_of(query: Any, job_id: int) -> list[tuple[Any, ...]]:
    return query(
        "SELECT attempt, outcome, error_message, on_failed_at IS NOT NULL "
        "FROM pgjobs_attempts WHERE job_id = %s ORDER BY attempt",
        job_id,
    )


def heartbeat_stale(query: Any) -> bool:
    rows = query(
        "SELECT count(*) FROM procrastinate_workers "
        "WHERE last_heartbeat > now() - interval '3 seconds'"
    )
    return rows == [(0,)]


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """Worker subprocesses that the test starts; each is killed after."""
    started: list[Any] = []
    yield started
    for process in started:
        harness.kill(process)


async def start_running(
    dsn: str, processes: list[Any], sender: pgjobs.JobSystem, **options: Any
) -> tuple[Any, int]:
    """Start a worker process and a long job; return once the job runs there."""
    harness.create_runs_table(dsn)
    process = harness.start_worker(dsn, **options)
    processes.append(process)
    job_id = await sender.send("slow", {"seconds": 3600})
    assert job_id is not None
    await wait_for(lambda: harness.runs(dsn, job_id), timeout=60)
    return process, job_id


async def test_recovery_after_kill_runs_once_more(
    make_system: Any, query: Any, dsn: str, processes: list[Any]
) -> None:
    def finish(payload: dict[str, Any], context: pgjobs.JobContext) -> None:
        harness.record_run(dsn, context, "start")
        harness.record_run(dsn, context, "end")

    jobs = make_system(queues={"slow": pgjobs.queue(retry_limit=2, timeout=None)})
    process, job_id = await start_running(dsn, processes, jobs, retry_limit=2)

    # Another process's init_jobs and sweeps leave a live worker's job alone,
    # even for longer than the stalled timeout.
    await jobs.init_jobs({"slow": finish})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 4.0
    swept: list[Any] = []
    while loop.time() < deadline:
        swept.extend(await jobs.recover_orphans())
        await asyncio.sleep(0.5)
    assert swept == []
    assert status_of(query, job_id) == "doing"

    process.send_signal(signal.SIGKILL)
    process.wait()
    # The running workers' periodic sweep picks the job up; no restart.
    await wait_for(lambda: status_of(query, job_id) == "succeeded", timeout=30)
    await asyncio.sleep(1.0)

    runs = [(attempt, pid, event) for _, attempt, pid, event in harness.runs(dsn)]
    assert runs == [
        (1, process.pid, "start"),
        (2, os.getpid(), "start"),
        (2, os.getpid(), "end"),
    ]
    [lost] = attempts_of(query, job_id)
    assert lost[:2] == (1, "worker_lost")
    assert lost[2].startswith("worker lost: worker ")


async def test_recovery_exhausted_orphan_fails(
    make_system: Any, query: Any, dsn: str, processes: list[Any]
) -> None:
    hooks: list[tuple[Any, BaseException, int]] = []

    def on_failed(payload: Any, error: BaseException, context: Any) -> None:
        hooks.append((payload, error, context.attempt))

    definition = pgjobs.queue(retry_limit=0, timeout=None, on_failed=on_failed)
    jobs = make_system(queues={"slow": definition})
    process, job_id = await start_running(dsn, processes, jobs, retry_limit=0)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    await wait_for(lambda: heartbeat_stale(query))

    # init_jobs itself recovers orphans whose worker is already stale.
    await jobs.init_jobs({"slow": lambda payload: None}, start_worker=False)

    assert status_of(query, job_id) == "failed"
    assert len(hooks) == 1
    payload, error, attempt = hooks[0]
    assert payload == {"seconds": 3600}
    assert isinstance(error, pgjobs.WorkerLost)
    assert attempt == 1
    [lost] = attempts_of(query, job_id)
    assert (lost[0], lost[1], lost[3]) == (1, "worker_lost", True)


async def test_recovery_sweep_again_runs_no_hook(make_system: Any, query: Any) -> None:
    hooks: list[Any] = []
    definition = pgjobs.queue(
        retry_limit=0, on_failed=lambda payload, error: hooks.append(error)
    )
    jobs = make_system(queues={"q": definition})
    await jobs.init_jobs({"q": lambda payload: None}, start_worker=False)
    [(job_id,)] = query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status) "
        "VALUES ('q', 'q', 'doing') RETURNING id"
    )

    first = await jobs.recover_orphans()
    second = await jobs.recover_orphans()

    assert [(job.job_id, job.action) for job in first] == [(job_id, "failed")]
    assert second == []
    assert len(hooks) == 1


async def test_recovery_unretriable_row_settled(make_system: Any, query: Any) -> None:
    jobs = make_system(queues={"q": pgjobs.queue(retry_limit=3)})
    await jobs.init_jobs({"q": lambda payload: None}, start_worker=False)
    # A newer queued job has the singleton key of the orphan, so the orphan
    # cannot go back to todo. pgjobs' own index prevents this state, so the
    # test drops it first.
    query("DROP INDEX pgjobs_singleton_active_idx")
    [(blocked,)] = query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status, "
        "queueing_lock) VALUES ('q', 'q', 'doing', 'key') RETURNING id"
    )
    [(retriable,)] = query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status) "
        "VALUES ('q', 'q', 'doing') RETURNING id"
    )
    [(newer,)] = query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status, "
        "queueing_lock) VALUES ('q', 'q', 'todo', 'key') RETURNING id"
    )

    recovered = await jobs.recover_orphans()

    actions = {job.job_id: job.action for job in recovered}
    assert actions == {blocked: "failed", retriable: "retried"}
    assert status_of(query, blocked) == "failed"
    assert status_of(query, retriable) == "todo"
    assert status_of(query, newer) == "todo"
    [record] = attempts_of(query, blocked)
    assert record[1] == "worker_lost"
    assert "could not be retried" in record[2]


async def test_recovery_keeps_recorded_success(make_system: Any, query: Any) -> None:
    jobs = make_system(queues={"q": pgjobs.queue(retry_limit=3)})
    await jobs.init_jobs({"q": lambda payload: None}, start_worker=False)
    [(job_id,)] = query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status) "
        "VALUES ('q', 'q', 'doing') RETURNING id"
    )
    query(
        "INSERT INTO pgjobs_attempts (job_id, attempt, outcome, result) "
        "VALUES (%s, 1, 'succeeded', '42')",
        job_id,
    )

    [recovered] = await jobs.recover_orphans()

    assert recovered.action == "succeeded"
    assert status_of(query, job_id) == "succeeded"
    assert attempts_of(query, job_id)[0][1] == "succeeded"


async def test_recovery_skips_live_worker(make_system: Any, query: Any) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.init_jobs({"q": lambda payload: None}, start_worker=False)
    [(worker_id,)] = query(
        "INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id"
    )
    [(job_id,)] = query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status, worker_id) "
        "VALUES ('q', 'q', 'doing', %s) RETURNING id",
        worker_id,
    )

    assert await jobs.recover_orphans() == []
    assert status_of(query, job_id) == "doing"


async def test_recovery_interrupted_runs_not_counted(
    make_system: Any, query: Any
) -> None:
    jobs = make_system(queues={"q": pgjobs.queue(retry_limit=1)})
    await jobs.init_jobs({"q": lambda payload: None}, start_worker=False)
    # Two earlier runs: one interrupted by a stop, which does not count.
    [(job_id,)] = query(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status, attempts) "
        "VALUES ('q', 'q', 'doing', 1) RETURNING id"
    )
    query(
        "INSERT INTO pgjobs_attempts (job_id, attempt, outcome) "
        "VALUES (%s, 1, 'interrupted')",
        job_id,
    )

    [recovered] = await jobs.recover_orphans()

    assert recovered.action == "retried"
    assert status_of(query, job_id) == "todo"
