"""Schema install, version checks and migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import procrastinate.schema
import psycopg
import pytest
from psycopg import sql

import pgjobs
from pgjobs import schema
from tests.conftest import build_config, wait_for


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


def run_sql(dsn: str, statement: Any, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


def install_procrastinate_only(dsn: str, name: str = "pgjobs") -> None:
    """Install procrastinate's tables as raw procrastinate would, no pgjobs."""
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(name)))
        conn.execute(procrastinate.schema.SchemaManager.get_schema())


def install_previous_version(dsn: str) -> tuple[int, str]:
    """Install the schema one pgjobs migration short; return the missing one."""
    *earlier, last = schema.pgjobs_migrations()
    install_procrastinate_only(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute("SET search_path TO pgjobs")
        for _, name in earlier:
            conn.execute(schema._read_sql("pgjobs.sql", f"migrations/{name}"))
        conn.execute(schema._read_sql("pgjobs.sql", "pin_search_path.sql"))
        conn.execute(
            "INSERT INTO pgjobs_meta VALUES ('schema_version', %s), "
            "('procrastinate_version', %s)",
            [str(earlier[-1][0]), schema.procrastinate_version()],
        )
    return last


async def test_migrate_installs_then_noop(make_empty_system: Any) -> None:
    jobs = make_empty_system()

    first = await jobs.migrate()
    second = await jobs.migrate()

    expected = [name for _, name in schema.pgjobs_migrations()]
    assert first == ["procrastinate schema", *expected]
    assert second == []


async def test_schema_newer_version_rejected(make_system: Any, query: Any) -> None:
    query("UPDATE pgjobs_meta SET value = '999' WHERE key = 'schema_version'")
    jobs = make_system(queues={"q": pgjobs.queue()})

    with pytest.raises(pgjobs.SchemaError, match="upgrade pgjobs"):
        await jobs.init_jobs({"q": print})


async def test_schema_raw_procrastinate_needs_migrate(
    make_empty_system: Any, empty_dsn: str
) -> None:
    install_procrastinate_only(empty_dsn)
    jobs = make_empty_system(queues={"q": pgjobs.queue()})

    with pytest.raises(pgjobs.SchemaError, match="pgjobs migrate") as raised:
        await jobs.init_jobs({"q": print})
    assert "0001_initial.sql" in str(raised.value)
    assert run_sql(empty_dsn, "SELECT to_regclass('pgjobs.pgjobs_meta')") == [(None,)]

    applied = await jobs.migrate()
    await jobs.init_jobs({"q": print}, start_worker=False)

    assert applied == [name for _, name in schema.pgjobs_migrations()]


async def test_schema_previous_version_upgrade(
    make_empty_system: Any, empty_dsn: str
) -> None:
    if schema.latest_version() < 2:
        pytest.skip("a single pgjobs migration exists")
    _, missing = install_previous_version(empty_dsn)
    jobs = make_empty_system(queues={"q": pgjobs.queue()})

    with pytest.raises(pgjobs.SchemaError, match="pgjobs migrate") as raised:
        await jobs.init_jobs({"q": print})
    assert missing in str(raised.value)

    assert await jobs.migrate() == [missing]
    await jobs.init_jobs({"q": print}, start_worker=False)
    version = run_sql(
        empty_dsn, "SELECT value FROM pgjobs.pgjobs_meta WHERE key = 'schema_version'"
    )
    assert version == [(str(schema.latest_version()),)]


def test_schema_functions_pin_search_path(dsn: str) -> None:
    rows = run_sql(
        dsn,
        "SELECT p.proname, p.proconfig FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'pgjobs' AND p.proname LIKE 'procrastinate%%'",
    )

    assert rows
    unpinned = [
        name for name, config in rows if config != ["search_path=pg_catalog, pgjobs"]
    ]
    assert unpinned == []


async def test_schema_custom_name(make_empty_system: Any, empty_dsn: str) -> None:
    seen: list[Any] = []
    jobs = make_empty_system(schema="jobs_a", queues={"q": pgjobs.queue()})
    await jobs.init_jobs({"q": seen.append})
    job_id = await jobs.send("q", {"n": 1})
    await wait_for(lambda: seen)

    assert run_sql(empty_dsn, "SELECT to_regclass('pgjobs.procrastinate_jobs')") == [
        (None,)
    ]
    await wait_for(
        lambda: (
            run_sql(
                empty_dsn,
                "SELECT status FROM jobs_a.procrastinate_jobs WHERE id = %s",
                job_id,
            )
            == [("succeeded",)]
        )
    )


async def test_schema_two_schemas_apart(make_empty_system: Any) -> None:
    seen: dict[str, list[Any]] = {"a": [], "b": []}
    first = make_empty_system(schema="jobs_a", queues={"q": pgjobs.queue()})
    second = make_empty_system(schema="jobs_b", queues={"q": pgjobs.queue()})
    await first.init_jobs({"q": seen["a"].append})
    await second.init_jobs({"q": seen["b"].append})
    await first.send("q", {"to": "a"})
    await second.send("q", {"to": "b"})
    await wait_for(lambda: seen["a"] and seen["b"])

    assert seen == {"a": [{"to": "a"}], "b": [{"to": "b"}]}
