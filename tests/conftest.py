"""Fixtures: a real PostgreSQL server and a fresh database for each test.

The server is the one `PGJOBS_TEST_DSN` names, or else the embedded server.
A template database with the schema installed is made once per session and
cloned for each test, which takes a fraction of a second.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql

import pgjobs
from pgjobs import embedded

pytest_plugins = ["tests.faults.fixtures"]

TEMPLATE = f"pgjobs_template_{os.getpid()}"

FAST_WORKER = {
    "polling_interval": 0.2,
    "abort_polling_interval": 0.2,
    "heartbeat_interval": 0.5,
    "stalled_timeout": 3.0,
    "graceful_timeout": 5.0,
}


def with_database(dsn: str, database: str) -> str:
    """Return `dsn` pointed at another database."""
    return psycopg.conninfo.make_conninfo(dsn, dbname=database)


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """Connection string of the test server's maintenance database."""
    dsn = os.environ.get("PGJOBS_TEST_DSN")
    if dsn:
        yield dsn
        return
    server = embedded.start(embedded.default_data_dir("test-postgres"))
    yield server.dsn("postgres")


def _create_database(server: str, name: str, template: str | None = None) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        conn.execute(query)


def _drop_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )


@pytest.fixture(scope="session")
def template_database(server_dsn: str) -> Iterator[str]:
    """Name of a database with the default schema installed."""
    _drop_database(server_dsn, TEMPLATE)
    _create_database(server_dsn, TEMPLATE)
    system = pgjobs.create_job_system({"dsn": with_database(server_dsn, TEMPLATE)})

    async def install() -> None:
        await system.migrate()
        await system.stop()

    asyncio.run(install())
    yield TEMPLATE
    _drop_database(server_dsn, TEMPLATE)


@pytest.fixture
def database_name() -> str:
    """A database name unique to this test."""
    return f"pgjobs_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def dsn(server_dsn: str, template_database: str, database_name: str) -> Iterator[str]:
    """Connection string of a fresh database, schema installed."""
    _create_database(server_dsn, database_name, template_database)
    yield with_database(server_dsn, database_name)
    _drop_database(server_dsn, database_name)


@pytest.fixture
def empty_dsn(server_dsn: str, database_name: str) -> Iterator[str]:
    """Connection string of a fresh database with no schema."""
    _create_database(server_dsn, database_name)
    yield with_database(server_dsn, database_name)
    _drop_database(server_dsn, database_name)


def build_config(dsn: str, **overrides: Any) -> dict[str, Any]:
    """Return a config for tests: the given database and fast worker timings."""
    worker = {**FAST_WORKER, **overrides.pop("worker", {})}
    return {"dsn": dsn, "worker": worker, **overrides}


@pytest.fixture
async def make_system(dsn: str) -> AsyncIterator[Callable[..., pgjobs.JobSystem]]:
    """Factory of job systems on the test database; each is stopped after."""
    created: list[pgjobs.JobSystem] = []

    def make(**overrides: Any) -> pgjobs.JobSystem:
        system = pgjobs.create_job_system(build_config(dsn, **overrides))
        created.append(system)
        return system

    yield make
    for system in created:
        await system.stop()


@pytest.fixture
def query(dsn: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Run SQL on the test database with the pgjobs schema on the path."""

    def run(statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET search_path TO pgjobs")
            cursor = conn.execute(statement, params or None)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    return run


async def wait_for(
    condition: Callable[[], Any],
    *,
    timeout: float = 20.0,  # noqa: ASYNC109 - bounds polling, not one awaitable
    interval: float = 0.05,
) -> Any:
    """Poll `condition` until it returns a truthy value; fail after `timeout`.

    The timeout only bounds a hung test; no test asserts on timing.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
