"""More concurrent senders than pooled connections.

A send waits up to `pool.timeout` seconds for a connection, then raises
`DatabaseUnavailable` caused by psycopg_pool's `PoolTimeout`, and writes
nothing. Workers of the same process recover once connections free up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg_pool
import pytest

import pgjobs
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)

POOL_SIZE = 3
SENDERS = 10


class Holder:
    """Holds every pooled connection until released, as slow queries would."""

    def __init__(self, jobs: pgjobs.JobSystem, count: int) -> None:
        self.jobs = jobs
        self.count = count
        self.held = 0  # connections taken so far
        self.release = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def _hold(self) -> None:
        async with self.jobs.pool.connection(timeout=30):
            self.held += 1
            await self.release.wait()

    async def __aenter__(self) -> Holder:
        self.tasks = [asyncio.create_task(self._hold()) for _ in range(self.count)]
        await wait_for(lambda: self.held == self.count)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release.set()
        await asyncio.gather(*self.tasks)


def causes(exc: BaseException) -> list[BaseException]:
    """Return the chain of causes of `exc`, nearest first."""
    chain = []
    cause = exc.__cause__
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    return chain


def make_jobs(make_system: Callable[..., pgjobs.JobSystem], timeout: float) -> Any:
    return make_system(
        queues={"q": pgjobs.queue()},
        pool={"min_size": 1, "max_size": POOL_SIZE, "timeout": timeout},
    )


async def test_pool_exhausted_sends_fail_clearly(
    make_system: Callable[..., pgjobs.JobSystem], query: Any
) -> None:
    seen: list[Any] = []
    jobs = make_jobs(make_system, timeout=1.0)
    await jobs.init_jobs({"q": seen.append})

    async with Holder(jobs, POOL_SIZE):
        results = await asyncio.gather(
            *(jobs.send("q", {"n": n}) for n in range(SENDERS)),
            asyncio.to_thread(jobs.send_sync, "q", {"n": "sync"}),
            jobs.send_many("q", [{"n": "a"}, {"n": "b"}]),
            return_exceptions=True,
        )

    for result in results:
        assert isinstance(result, pgjobs.DatabaseUnavailable), result
        assert any(
            isinstance(cause, psycopg_pool.PoolTimeout) for cause in causes(result)
        )
        assert "pool.timeout" in str(result)
    assert query("SELECT count(*) FROM procrastinate_jobs") == [(0,)]

    # The worker shares the pool; it works again once connections are free.
    job_id = await jobs.send("q", {"n": "after"})
    await wait_for(lambda: {"n": "after"} in seen, timeout=60)
    assert jobs.workers is not None
    assert jobs.workers.running
    await wait_for(
        lambda: (
            query("SELECT status FROM procrastinate_jobs WHERE id = %s", job_id)
            == [("succeeded",)]
        )
    )


async def test_pool_busy_sends_wait_then_succeed(
    make_system: Callable[..., pgjobs.JobSystem], query: Any
) -> None:
    jobs = make_jobs(make_system, timeout=30.0)
    await jobs.get_app()

    async with Holder(jobs, POOL_SIZE) as holder:
        sends = [asyncio.create_task(jobs.send("q", {"n": n})) for n in range(SENDERS)]
        await asyncio.sleep(0.5)
        pending = sum(not task.done() for task in sends)
        holder.release.set()
        ids = await asyncio.gather(*sends)

    assert pending == SENDERS
    assert len(set(ids)) == SENDERS
    assert query("SELECT count(*) FROM procrastinate_jobs") == [(SENDERS,)]
