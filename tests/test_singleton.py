"""Singleton keys: one job per key while queued or running, race-free."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import pgjobs
from tests.conftest import wait_for

Query = Callable[..., list[tuple[Any, ...]]]
RACERS = 20


def count_jobs(query: Query) -> int:
    return int(query("SELECT count(*) FROM procrastinate_jobs")[0][0])


def status_of(query: Query, job_id: int) -> str:
    rows = query("SELECT status FROM procrastinate_jobs WHERE id = %s", job_id)
    return str(rows[0][0])


async def test_singleton_queued_returns_none(make_system: Any, query: Query) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    first = await jobs.send("q", {}, singleton_key="k")
    second = await jobs.send("q", {"other": 1}, singleton_key="k")
    assert isinstance(first, int)
    assert second is None
    assert count_jobs(query) == 1


async def test_singleton_queued_raises(make_system: Any, query: Query) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.send("q", {}, singleton_key="k")
    with pytest.raises(pgjobs.DuplicateJob) as caught:
        await jobs.send("q", {}, singleton_key="k", raise_on_duplicate=True)
    assert caught.value.singleton_key == "k"
    assert caught.value.queue == "q"
    assert count_jobs(query) == 1


async def test_singleton_other_key_allowed(make_system: Any, query: Query) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.send("q", {}, singleton_key="a")
    await jobs.send("q", {}, singleton_key="b")
    await jobs.send("q", {})
    assert count_jobs(query) == 3


async def test_singleton_key_spans_queues(make_system: Any, query: Query) -> None:
    jobs = make_system(queues={"q": pgjobs.queue(), "r": pgjobs.queue()})
    await jobs.send("q", {}, singleton_key="k")
    assert await jobs.send("r", {}, singleton_key="k") is None
    assert count_jobs(query) == 1


async def test_singleton_running_blocks(make_system: Any, query: Query) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(payload: dict[str, Any]) -> None:
        started.set()
        await release.wait()

    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.init_jobs({"q": handler})
    first = await jobs.send("q", {}, singleton_key="k")
    assert first is not None
    await asyncio.wait_for(started.wait(), 20)
    assert status_of(query, first) == "doing"

    assert await jobs.send("q", {}, singleton_key="k") is None
    with pytest.raises(pgjobs.DuplicateJob):
        await jobs.send("q", {}, singleton_key="k", raise_on_duplicate=True)
    assert count_jobs(query) == 1

    release.set()
    await wait_for(lambda: status_of(query, first) == "succeeded")
    again = await jobs.send("q", {}, singleton_key="k")
    assert isinstance(again, int)
    assert again != first


async def test_singleton_gather_race(make_system: Any, query: Query) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    results = await asyncio.gather(
        *(jobs.send("q", {"n": n}, singleton_key="race") for n in range(RACERS))
    )
    ids = [result for result in results if result is not None]
    assert len(ids) == 1
    assert results.count(None) == RACERS - 1
    assert count_jobs(query) == 1


async def test_singleton_gather_race_raising(make_system: Any, query: Query) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    results = await asyncio.gather(
        *(
            jobs.send("q", {}, singleton_key="race", raise_on_duplicate=True)
            for _ in range(RACERS)
        ),
        return_exceptions=True,
    )
    ids = [result for result in results if isinstance(result, int)]
    duplicates = [r for r in results if isinstance(r, pgjobs.DuplicateJob)]
    assert len(ids) == 1
    assert len(duplicates) == RACERS - 1
    assert count_jobs(query) == 1


async def test_singleton_gather_race_started(make_system: Any, query: Query) -> None:
    # Same race once the pool is open, so that inserts overlap in the server.
    jobs = make_system(queues={"q": pgjobs.queue()}, pool={"min_size": 10})
    await jobs.get_app()
    results = await asyncio.gather(
        *(jobs.send("q", {}, singleton_key="race") for _ in range(RACERS))
    )
    assert sum(result is not None for result in results) == 1
    assert count_jobs(query) == 1


def send_from_threads(jobs: pgjobs.JobSystem, key: str) -> list[Any]:
    barrier = threading.Barrier(RACERS)
    results: list[Any] = [None] * RACERS

    def send(index: int) -> None:
        barrier.wait()
        try:
            results[index] = jobs.send_sync("q", {"n": index}, singleton_key=key)
        except Exception as exc:  # reported to the test, which fails on it
            results[index] = exc

    threads = [threading.Thread(target=send, args=(n,)) for n in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


async def test_singleton_thread_race(make_system: Any, query: Query) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    results = await asyncio.to_thread(send_from_threads, jobs, "race")
    errors = [result for result in results if isinstance(result, Exception)]
    assert errors == []
    assert sum(isinstance(result, int) for result in results) == 1
    assert count_jobs(query) == 1


async def test_singleton_send_many_taken(make_system: Any, query: Query) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.send("q", {}, singleton_key="b")
    with pytest.raises(pgjobs.DuplicateJob) as caught:
        await jobs.send_many(
            "q", [{}, {}, {}, {}], singleton_keys=["a", "b", None, "c"]
        )
    assert caught.value.queue == "q"
    assert count_jobs(query) == 1


async def test_singleton_send_many_repeated(make_system: Any, query: Query) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    with pytest.raises(pgjobs.DuplicateJob, match="twice"):
        await jobs.send_many("q", [{}, {}, {}], singleton_keys=["a", None, "a"])
    assert count_jobs(query) == 0


async def test_singleton_send_many_sync_taken(make_system: Any, query: Query) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.send("q", {}, singleton_key="b")
    with pytest.raises(pgjobs.DuplicateJob):
        await asyncio.to_thread(
            jobs.send_many_sync, "q", [{}, {}], singleton_keys=["b", "c"]
        )
    assert count_jobs(query) == 1
