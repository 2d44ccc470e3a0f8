"""SIGTERM to `pgjobs worker` while jobs run and more arrive.

Short jobs finish. Jobs still running after the graceful timeout are
interrupted and put back to `todo`, without using up their retry budget.
No job stays `doing`, and the process exits 0.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import pgjobs
from tests.conftest import FAST_WORKER, wait_for
from tests.faults.fixtures import describe_processes, fetch, statuses

pytestmark = pytest.mark.timeout(180)

GRACEFUL = 2.0
QUEUES: dict[str, dict[str, Any]] = {
    "quick": {"concurrency": 4},
    "slow": {"concurrency": 2, "retry_limit": 0},
}
CONFIG = {
    "queues": QUEUES,
    "worker": {**FAST_WORKER, "graceful_timeout": GRACEFUL},
}


async def test_sigterm_under_load_exits_cleanly(
    dsn: str, runs_table: str, spawn_worker: Any, make_system: Any
) -> None:
    worker = spawn_worker(dsn, CONFIG)
    sender = make_system(
        queues={name: pgjobs.queue(**options) for name, options in QUEUES.items()}
    )
    slow_ids = [await sender.send("slow", {"sleep": 600}) for _ in range(2)]
    stop_sending = asyncio.Event()

    async def send_stream() -> None:
        while not stop_sending.is_set():
            await sender.send("quick", {"sleep": 0.2})
            await asyncio.sleep(0.02)

    stream = asyncio.create_task(send_stream())
    try:
        await wait_for(
            lambda: all(statuses(dsn)[job_id] == "doing" for job_id in slow_ids),
            timeout=60,
        )
        await wait_for(lambda: _count(dsn, "quick", "succeeded") >= 10, timeout=60)
        worker.terminate()
        # Jobs keep arriving while the worker shuts down.
        await asyncio.sleep(0.5)
    finally:
        stop_sending.set()
        await stream

    exit_code = await asyncio.to_thread(worker.wait, GRACEFUL + 60)
    assert exit_code == 0, describe_processes(worker)

    final = statuses(dsn)
    assert "doing" not in final.values(), final
    for job_id in slow_ids:
        assert final[job_id] == "todo", final[job_id]
    interrupted = fetch(
        dsn,
        "SELECT job_id FROM pgjobs_attempts WHERE outcome = 'interrupted' "
        "ORDER BY job_id",
    )
    assert [row[0] for row in interrupted] == slow_ids
    quick = {status for job_id, status in final.items() if job_id not in slow_ids}
    assert quick <= {"todo", "succeeded"}


async def test_sigterm_interrupted_jobs_run_again(
    dsn: str, runs_table: str, spawn_worker: Any, make_system: Any
) -> None:
    worker = spawn_worker(dsn, CONFIG)
    sender = make_system(
        queues={name: pgjobs.queue(**options) for name, options in QUEUES.items()}
    )
    # Runs for a long time on the first attempt only.
    job_id = await sender.send("slow", {"hang_on": [1], "mark_start": True})
    await wait_for(lambda: statuses(dsn)[job_id] == "doing", timeout=60)
    worker.terminate()
    assert await asyncio.to_thread(worker.wait, GRACEFUL + 60) == 0

    # retry_limit=0, yet the interrupted run is retried: it was not a failure.
    successor = spawn_worker(dsn, CONFIG)
    await wait_for(lambda: statuses(dsn)[job_id] == "succeeded", timeout=60)
    successor.terminate()
    assert await asyncio.to_thread(successor.wait, GRACEFUL + 60) == 0


def _count(dsn: str, queue: str, status: str) -> int:
    rows = fetch(
        dsn,
        "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = %s AND status = %s",
        queue,
        status,
    )
    return int(rows[0][0])
