"""Lazy start: one pool under concurrent first calls, fast failure, loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import psycopg.conninfo
import pytest

import pgjobs
from tests.conftest import build_config, wait_for

Query = Callable[..., list[tuple[Any, ...]]]
PASSWORD = "pw-s3cr3t-4402"
CALLERS = 20


def backends(query: Query) -> int:
    """Count the pgjobs pool's connections to the test database."""
    rows = query(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'pgjobs'"
    )
    return int(rows[0][0])


def starts(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        record.name == "pgjobs.system" and record.msg.startswith("Connected")
        for record in caplog.records
    )


def closed_port() -> int:
    """Return a loopback TCP port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_start_gather_opens_one_pool(
    make_system: Any, query: Query, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgjobs.system")
    jobs = make_system(
        queues={"q": pgjobs.queue()}, pool={"min_size": 2, "max_size": 2}
    )
    assert jobs.started is False

    async def send(n: int) -> tuple[int | None, Any]:
        job_id = await jobs.send("q", {"n": n})
        return job_id, jobs.pool

    results = await asyncio.gather(*(send(n) for n in range(CALLERS)))
    assert len({job_id for job_id, _ in results}) == CALLERS
    assert len({id(pool) for _, pool in results}) == 1
    assert starts(caplog) == 1
    await wait_for(lambda: backends(query) == 2)


def send_from_threads(jobs: pgjobs.JobSystem, count: int) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def send(index: int) -> None:
        barrier.wait()
        try:
            results[index] = jobs.send_sync("q", {"n": index})
        except Exception as exc:  # the test asserts there is none
            results[index] = exc

    threads = [threading.Thread(target=send, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


async def test_start_threads_open_one_pool(
    make_system: Any, query: Query, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgjobs.system")
    jobs = make_system(
        queues={"q": pgjobs.queue()}, pool={"min_size": 2, "max_size": 2}
    )
    results = await asyncio.to_thread(send_from_threads, jobs, CALLERS)
    assert all(isinstance(result, int) for result in results), results
    assert len(set(results)) == CALLERS
    assert starts(caplog) == 1
    await wait_for(lambda: backends(query) == 2)


async def test_start_threads_and_tasks_share_pool(
    make_system: Any, query: Query, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgjobs.system")
    jobs = make_system(
        queues={"q": pgjobs.queue()}, pool={"min_size": 2, "max_size": 2}
    )
    threaded = asyncio.to_thread(send_from_threads, jobs, CALLERS)
    tasks = [jobs.send("q", {}) for _ in range(CALLERS)]
    thread_results, *task_results = await asyncio.gather(threaded, *tasks)
    assert all(isinstance(result, int) for result in thread_results)
    assert all(isinstance(result, int) for result in task_results)
    assert starts(caplog) == 1
    await wait_for(lambda: backends(query) == 2)


async def test_sync_calls_reach_running_loop(
    make_system: Any, query: Query, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgjobs.system")
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.send("q", {})
    pool = jobs.pool
    results = await asyncio.to_thread(send_from_threads, jobs, 5)
    assert all(isinstance(result, int) for result in results)
    assert jobs.pool is pool
    assert starts(caplog) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda jobs: jobs.send_sync("q", {}),
        lambda jobs: jobs.send_many_sync("q", [{}]),
        lambda jobs: jobs.init_jobs_sync({"q": print}),
        lambda jobs: jobs.stop_sync(),
    ],
    ids=["send_sync", "send_many_sync", "init_jobs_sync", "stop_sync"],
)
async def test_sync_call_in_loop_rejected(
    make_system: Any, query: Query, call: Callable[[pgjobs.JobSystem], Any]
) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    with pytest.raises(pgjobs.UsageError, match="send instead of send_sync"):
        call(jobs)
    assert jobs.started is False
    assert int(query("SELECT count(*) FROM procrastinate_jobs")[0][0]) == 0


def test_sync_api_without_loop(dsn: str, query: Query) -> None:
    jobs = pgjobs.create_job_system(build_config(dsn, queues={"q": pgjobs.queue()}))
    try:
        first = jobs.send_sync("q", {})
        second = jobs.send_many_sync("q", [{}, {}])
    finally:
        jobs.stop_sync()
    assert isinstance(first, int)
    assert len(second) == 2
    assert jobs.started is False
    assert int(query("SELECT count(*) FROM procrastinate_jobs")[0][0]) == 3


async def test_stop_then_send_restarts(make_system: Any, query: Query) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.send("q", {})
    first_pool = jobs.pool
    await jobs.stop()
    assert jobs.started is False
    await jobs.stop()
    await jobs.send("q", {})
    assert jobs.pool is not first_pool
    assert int(query("SELECT count(*) FROM procrastinate_jobs")[0][0]) == 2


async def test_get_app_starts(make_system: Any) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    app = await jobs.get_app()
    assert app is jobs.app
    assert jobs.started is True


async def test_pool_before_start_rejected(make_system: Any) -> None:
    jobs = make_system()
    with pytest.raises(pgjobs.UsageError, match="not started"):
        _ = jobs.pool


# -- an unreachable database ----------------------------------------------


@pytest.fixture
async def make_on() -> AsyncIterator[Callable[..., pgjobs.JobSystem]]:
    """Factory of job systems on any dsn; each is stopped after the test."""
    created: list[pgjobs.JobSystem] = []

    def make(dsn: str, **overrides: Any) -> pgjobs.JobSystem:
        system = pgjobs.create_job_system(build_config(dsn, **overrides))
        created.append(system)
        return system

    yield make
    for system in created:
        await system.stop()


async def test_start_unreachable_fails(make_on: Any) -> None:
    port = closed_port()
    jobs = make_on(
        f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/app",
        queues={"q": pgjobs.queue()},
    )
    with pytest.raises(pgjobs.DatabaseUnavailable) as caught:
        await jobs.send("q", {})
    message = str(caught.value)
    assert f"127.0.0.1:{port}/app" in message
    assert PASSWORD not in message
    assert PASSWORD not in repr(caught.value)
    assert jobs.started is False


async def test_start_unreachable_gather(make_on: Any) -> None:
    port = closed_port()
    jobs = make_on(
        f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/app",
        queues={"q": pgjobs.queue()},
    )
    results = await asyncio.gather(
        *(jobs.send("q", {}) for _ in range(CALLERS)), return_exceptions=True
    )
    assert all(isinstance(r, pgjobs.DatabaseUnavailable) for r in results), results


async def test_start_unreachable_sync(make_on: Any) -> None:
    port = closed_port()
    jobs = make_on(
        f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/app",
        queues={"q": pgjobs.queue()},
    )
    with pytest.raises(pgjobs.DatabaseUnavailable, match=f"127.0.0.1:{port}"):
        await asyncio.to_thread(jobs.send_sync, "q", {})


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def forward(port: int, target_dsn: str) -> AsyncIterator[None]:
    """Forward 127.0.0.1:`port` to the server of `target_dsn` (TCP or socket)."""
    params = psycopg.conninfo.conninfo_to_dict(target_dsn)
    host = str(params.get("host") or "localhost")
    target_port = int(params.get("port") or 5432)

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if host.startswith("/"):
            upstream = await asyncio.open_unix_connection(
                f"{host}/.s.PGSQL.{target_port}"
            )
        else:
            upstream = await asyncio.open_connection(host, target_port)
        await asyncio.gather(_pipe(reader, upstream[1]), _pipe(upstream[0], writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()


async def test_start_retried_after_failure(
    make_on: Any, dsn: str, query: Query
) -> None:
    port = closed_port()
    proxied = psycopg.conninfo.make_conninfo(
        dsn, host="127.0.0.1", port=str(port), password=PASSWORD
    )
    jobs = make_on(proxied, queues={"q": pgjobs.queue()})
    with pytest.raises(pgjobs.DatabaseUnavailable):
        await jobs.send("q", {})

    async with forward(port, dsn):
        job_id = await jobs.send("q", {"after": "retry"})
        await jobs.stop()
    rows = query("SELECT args FROM procrastinate_jobs WHERE id = %s", job_id)
    assert rows == [({"payload": {"after": "retry"}},)]


def test_start_again_after_loop_closed(dsn: str, query: Query) -> None:
    jobs = pgjobs.create_job_system(build_config(dsn, queues={"q": pgjobs.queue()}))

    async def send() -> tuple[Any, Any, Any]:
        job_id = await jobs.send("q", {})
        return job_id, jobs.pool, jobs.app.connector.pool  # type: ignore[attr-defined]

    first_id, first_pool, _ = asyncio.run(send())
    second_id, second_pool, app_pool = asyncio.run(send())
    asyncio.run(jobs.stop())
    assert second_pool is not first_pool
    assert app_pool is second_pool
    assert second_id != first_id


def test_handler_second_function_rejected(dsn: str) -> None:
    jobs = pgjobs.create_job_system({"dsn": dsn, "queues": {"q": pgjobs.queue()}})

    @jobs.handler("q")
    def first(payload: dict[str, object]) -> None:
        return None

    def second(payload: dict[str, object]) -> None:
        return None

    with pytest.raises(pgjobs.UsageError, match="already has the handler"):
        jobs.handler("q")(second)
    assert jobs.handlers == {"q": first}


def test_handler_same_function_twice_allowed(dsn: str) -> None:
    jobs = pgjobs.create_job_system({"dsn": dsn, "queues": {"q": pgjobs.queue()}})

    def only(payload: dict[str, object]) -> None:
        return None

    jobs.handler("q")(only)
    jobs.handler("q")(only)

    assert jobs.handlers == {"q": only}
