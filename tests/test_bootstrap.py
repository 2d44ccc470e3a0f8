"""init_jobs: its steps, idempotency and errors that write nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

import pgjobs
from tests.apps import harness
from tests.apps.init_only import START_LOCK
from tests.conftest import build_config, wait_for


def user_tables(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY 1, 2"
        ).fetchall()


def user_schemas(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
            "AND nspname NOT IN ('information_schema', 'public')"
        ).fetchall()


@pytest.fixture
async def make_empty_system(
    empty_dsn: str,
) -> AsyncIterator[Callable[..., pgjobs.JobSystem]]:
    """Factory of job systems on a database without the schema."""
    created: list[pgjobs.JobSystem] = []

    def make(**overrides: Any) -> pgjobs.JobSystem:
        system = pgjobs.create_job_system(build_config(empty_dsn, **overrides))
        created.append(system)
        return system

    yield make
    for system in created:
        await system.stop()


async def test_init_jobs_twice_is_noop(make_system: Any, query: Any) -> None:
    handler = print
    jobs = make_system(queues={"a": pgjobs.queue(), "b": pgjobs.queue()})
    await jobs.init_jobs({"a": handler, "b": handler})
    workers = jobs.workers
    await wait_for(
        lambda: query("SELECT count(*) FROM procrastinate_workers") == [(2,)]
    )
    await jobs.init_jobs({"a": handler, "b": handler})
    await asyncio.sleep(0.5)

    assert jobs.workers is workers
    assert query("SELECT count(*) FROM procrastinate_workers") == [(2,)]


async def test_init_jobs_mismatch_writes_nothing(
    make_empty_system: Any, empty_dsn: str
) -> None:
    jobs = make_empty_system(
        queues={"a": pgjobs.queue(), "b": pgjobs.queue(), "c": pgjobs.queue()}
    )

    with pytest.raises(pgjobs.HandlerError) as raised:
        await jobs.init_jobs({"a": print, "x": print, "c": 42})

    problems = raised.value.problems
    assert len(problems) == 3
    assert any("'x' has no queue" in problem for problem in problems)
    assert any("queue 'b' has no handler" in problem for problem in problems)
    assert any("'c' is not callable" in problem for problem in problems)
    assert not jobs.started
    assert user_schemas(empty_dsn) == []
    assert user_tables(empty_dsn) == []


async def test_init_jobs_unknown_queue_option(make_empty_system: Any) -> None:
    jobs = make_empty_system(queues={"a": pgjobs.queue()})

    with pytest.raises(pgjobs.HandlerError, match="'nope'"):
        await jobs.init_jobs({"a": print}, queues=["nope"])


async def test_init_jobs_installs_schema(
    make_empty_system: Any, empty_dsn: str
) -> None:
    jobs = make_empty_system(queues={"a": pgjobs.queue()})
    await jobs.init_jobs({"a": print}, start_worker=False)

    tables = {name for schema, name in user_tables(empty_dsn) if schema == "pgjobs"}
    assert {"procrastinate_jobs", "pgjobs_attempts", "pgjobs_meta"} <= tables


async def test_init_jobs_records_queue_settings(make_system: Any, query: Any) -> None:
    jobs = make_system(queues={"a": pgjobs.queue(retry_limit=5, concurrency=2)})
    await jobs.init_jobs({"a": print}, start_worker=False)

    [(settings,)] = query("SELECT settings FROM pgjobs_queues WHERE name = 'a'")
    assert (settings["retry_limit"], settings["concurrency"]) == (5, 2)


async def test_init_jobs_without_worker(make_system: Any, query: Any) -> None:
    jobs = make_system(queues={"a": pgjobs.queue()})
    await jobs.init_jobs({"a": print}, start_worker=False)
    job_id = await jobs.send("a", {})
    await asyncio.sleep(0.5)

    assert jobs.workers is None
    assert query("SELECT status FROM procrastinate_jobs WHERE id = %s", job_id) == [
        ("todo",)
    ]


async def test_init_jobs_selected_queues(make_system: Any, query: Any) -> None:
    seen: list[str] = []
    jobs = make_system(queues={"a": pgjobs.queue(), "b": pgjobs.queue()})
    await jobs.init_jobs(
        {"a": lambda payload: seen.append("a"), "b": lambda payload: seen.append("b")},
        queues=["a"],
    )
    await jobs.send("b", {})
    await jobs.send("a", {})
    await wait_for(lambda: seen)
    await asyncio.sleep(0.5)

    assert seen == ["a"]


async def test_init_jobs_concurrent_processes(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as gate:
        # Every process waits on this lock, so all three start at once.
        gate.execute("SELECT pg_advisory_lock(%s)", [START_LOCK])
        processes = [harness.start_init_process(empty_dsn) for _ in range(3)]
        try:

            def all_waiting() -> bool:
                rows = gate.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND objid = %s AND NOT granted",
                    [START_LOCK],
                ).fetchall()
                return rows == [(3,)]

            await wait_for(all_waiting, timeout=60)
            gate.execute("SELECT pg_advisory_unlock(%s)", [START_LOCK])
            outputs = [
                await asyncio.to_thread(process.communicate, timeout=60)
                for process in processes
            ]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.communicate()

    assert [process.returncode for process in processes] == [0, 0, 0]
    installs = sum(err.count("Installed or migrated schema") for _, err in outputs)
    assert installs == 1
