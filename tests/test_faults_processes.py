"""Several worker processes on one database: schedules and a large drain."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import pgjobs
from tests.conftest import FAST_WORKER, wait_for
from tests.faults.fixtures import describe_processes, fetch
from tests.faults.processes import WorkerProcess

pytestmark = pytest.mark.timeout(600)

PROCESSES = 3
TICKS = 5
DRAIN_JOBS = 10_000


async def stop_all(workers: list[WorkerProcess]) -> None:
    """SIGTERM every worker and check that each exits 0."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        exit_code = await asyncio.to_thread(worker.wait, 60)
        assert exit_code == 0, describe_processes(worker)


def registered_workers(dsn: str) -> int:
    return int(fetch(dsn, "SELECT count(*) FROM procrastinate_workers")[0][0])


async def test_processes_cron_one_job_per_tick(
    dsn: str, runs_table: str, spawn_worker: Any
) -> None:
    config = {
        "queues": {"ticks": {"concurrency": 2}},
        "schedules": {"every-second": {"queue": "ticks", "cron": "* * * * * *"}},
        "worker": FAST_WORKER,
    }
    workers = [spawn_worker(dsn, config) for _ in range(PROCESSES)]
    await wait_for(lambda: registered_workers(dsn) == PROCESSES, timeout=60)

    # Count the ticks from the next whole second on, with all 3 running.
    first = int(fetch(dsn, "SELECT floor(extract(epoch FROM now()))")[0][0]) + 1
    last = first + TICKS - 1

    def tick_jobs() -> list[int]:
        rows = fetch(
            dsn,
            "SELECT (args ->> 'timestamp')::bigint FROM procrastinate_jobs "
            "WHERE queue_name = 'ticks'",
        )
        return [row[0] for row in rows]

    await wait_for(lambda: max(tick_jobs(), default=0) > last, timeout=60)
    await wait_for(
        lambda: _finished_ticks(dsn, first, last) == TICKS, timeout=60, interval=0.2
    )
    await stop_all(workers)

    stamps = tick_jobs()
    in_window = sorted(stamp for stamp in stamps if first <= stamp <= last)
    assert in_window == list(range(first, last + 1))
    assert len(stamps) == len(set(stamps))
    assert _finished_ticks(dsn, first, last) == TICKS


def _finished_ticks(dsn: str, first: int, last: int) -> int:
    rows = fetch(
        dsn,
        "SELECT count(*) FROM fault_runs WHERE phase = 'finish' "
        "AND scheduled_for BETWEEN %s AND %s",
        first,
        last,
    )
    return int(rows[0][0])


async def test_processes_drain_each_job_once(
    dsn: str, runs_table: str, spawn_worker: Any, make_system: Any
) -> None:
    queues = {"bulk": {"concurrency": 4}}
    sender = make_system(queues={"bulk": pgjobs.queue(**queues["bulk"])})
    ids: list[int] = []
    for start in range(0, DRAIN_JOBS, 1000):
        ids += await sender.send_many(
            "bulk", [{"n": n} for n in range(start, start + 1000)]
        )
    assert len(set(ids)) == DRAIN_JOBS

    config = {"queues": queues, "worker": FAST_WORKER}
    workers = [spawn_worker(dsn, config) for _ in range(PROCESSES)]

    def succeeded() -> int:
        rows = fetch(
            dsn, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        )
        return int(rows[0][0])

    try:
        await wait_for(lambda: succeeded() == DRAIN_JOBS, timeout=500, interval=1)
    except AssertionError:
        raise AssertionError(
            f"{succeeded()} of {DRAIN_JOBS} succeeded\n{describe_processes(*workers)}"
        ) from None
    await stop_all(workers)

    runs = fetch(
        dsn,
        "SELECT count(*), count(DISTINCT job_id) FROM fault_runs "
        "WHERE phase = 'finish'",
    )
    assert runs == [(DRAIN_JOBS, DRAIN_JOBS)]
    per_process = fetch(
        dsn, "SELECT pid, count(*) FROM fault_runs GROUP BY pid ORDER BY pid"
    )
    assert len(per_process) == PROCESSES
    statuses = fetch(dsn, "SELECT DISTINCT status::text FROM procrastinate_jobs")
    assert statuses == [("succeeded",)]
