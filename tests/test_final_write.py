"""The guarded writes that settle a job after its first final write failed.

test_faults_db_restart covers the outage itself. These tests check, on a
real database, that a retried write changes a job only while it is still
running under the worker that ran it.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import procrastinate.jobs
import pytest

import pgjobs
from pgjobs._manager import GUARDED_FINISH_SQL, GUARDED_RETRY_SQL, DurableJobManager
from tests.conftest import wait_for


async def _fetched(
    make_system: Callable[..., pgjobs.JobSystem],
) -> tuple[DurableJobManager, procrastinate.jobs.Job, int]:
    jobs = make_system(queues={"guard": pgjobs.queue()})
    await jobs.init_jobs({"guard": lambda payload: None}, start_worker=False)
    await jobs.send("guard", {})
    app = await jobs.get_app()
    manager = app.job_manager
    assert isinstance(manager, DurableJobManager)
    runner = await manager.register_worker()
    other = await manager.register_worker()
    job = await manager.fetch_job(queues=["guard"], worker_id=runner)
    assert job is not None
    return manager, job, other


def _status(query: Callable[..., list[tuple[Any, ...]]], job_id: int | None) -> str:
    rows = query("SELECT status FROM procrastinate_jobs WHERE id = %s", job_id)
    return str(rows[0][0])


async def test_guarded_finish_own_job(
    make_system: Callable[..., pgjobs.JobSystem],
    query: Callable[..., list[tuple[Any, ...]]],
) -> None:
    manager, job, other = await _fetched(make_system)
    arguments = {"job_id": job.id, "status": "succeeded", "delete_job": False}

    written = await manager.connector.execute_query_all_async(
        GUARDED_FINISH_SQL, worker_id=other, **arguments
    )
    assert written == []
    assert _status(query, job.id) == "doing"

    written = await manager.connector.execute_query_all_async(
        GUARDED_FINISH_SQL, worker_id=job.worker_id, **arguments
    )
    assert len(written) == 1
    assert _status(query, job.id) == "succeeded"

    # A second write finds the job settled and changes nothing.
    written = await manager.connector.execute_query_all_async(
        GUARDED_FINISH_SQL, worker_id=job.worker_id, **arguments
    )
    assert written == []
    assert _status(query, job.id) == "succeeded"


async def test_guarded_retry_own_job(
    make_system: Callable[..., pgjobs.JobSystem],
    query: Callable[..., list[tuple[Any, ...]]],
) -> None:
    manager, job, other = await _fetched(make_system)
    arguments = {
        "job_id": job.id,
        "retry_at": datetime.datetime.now(datetime.UTC),
        "priority": None,
        "queue": None,
        "lock": None,
    }

    written = await manager.connector.execute_query_all_async(
        GUARDED_RETRY_SQL, worker_id=other, **arguments
    )
    assert written == []
    assert _status(query, job.id) == "doing"

    written = await manager.connector.execute_query_all_async(
        GUARDED_RETRY_SQL, worker_id=job.worker_id, **arguments
    )
    assert len(written) == 1
    assert _status(query, job.id) == "todo"


async def test_guarded_finish_skips_swept_job(
    make_system: Callable[..., pgjobs.JobSystem],
    query: Callable[..., list[tuple[Any, ...]]],
) -> None:
    manager, job, _ = await _fetched(make_system)
    assert job.worker_id is not None
    # A peer's sweep pruned the stalled worker, which detaches its job.
    await manager.unregister_worker(job.worker_id)
    written = await manager.connector.execute_query_all_async(
        GUARDED_FINISH_SQL,
        job_id=job.id,
        worker_id=job.worker_id,
        status="failed",
        delete_job=False,
    )
    assert written == []
    assert _status(query, job.id) == "doing"


async def test_taken_over_run_leaves_job_alone(
    make_system: Callable[..., pgjobs.JobSystem],
    query: Callable[..., list[tuple[Any, ...]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    runs: list[int] = []

    async def handler(payload: dict[str, Any]) -> None:
        runs.append(len(runs) + 1)
        if len(runs) == 1:
            started.set()
            await release.wait()

    jobs = make_system(queues={"guard": pgjobs.queue()})
    await jobs.init_jobs({"guard": handler})
    job_id = await jobs.send("guard", {})
    await asyncio.wait_for(started.wait(), timeout=20)
    # A peer's sweep put the job back while its first run still went on.
    query("SELECT procrastinate_retry_job_v2(%s, now(), NULL, NULL, NULL)", job_id)
    release.set()

    await wait_for(lambda: _status(query, job_id) == "succeeded")
    # The first run's late write changed nothing: the job ran again.
    assert runs == [1, 2]
    assert f"Job {job_id} no longer runs under worker" in caplog.text
