"""Fixtures of the fault tests, loaded as a pytest plugin by tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.faults.processes import WorkerProcess
from tests.faults.runs import create_runs_table
from tests.faults.servers import TempCluster, find_pg_bin, find_pgbouncer


@pytest.fixture
def runs_table(dsn: str) -> str:
    """Create `public.fault_runs` in the test database; return the dsn."""
    create_runs_table(dsn)
    return dsn


@pytest.fixture
def spawn_worker() -> Iterator[Callable[..., WorkerProcess]]:
    """Factory of worker processes; each is killed at the end if still alive."""
    started: list[WorkerProcess] = []

    def spawn(dsn: str, config: dict[str, Any], **options: Any) -> WorkerProcess:
        process = WorkerProcess(dsn, config, **options)
        started.append(process)
        return process

    yield spawn
    for process in started:
        process.cleanup()


def fetch(dsn: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement with the pgjobs schema first on the search path."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET search_path TO pgjobs, public")
        cursor = conn.execute(statement, params or None)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def statuses(dsn: str) -> dict[int, str]:
    """Return every job's status by id."""
    return dict(fetch(dsn, "SELECT id, status::text FROM procrastinate_jobs"))


def run_counts(dsn: str, phase: str) -> dict[int, int]:
    """Return, per job id, how many runs recorded `phase` in fault_runs."""
    rows = fetch(
        dsn,
        "SELECT job_id, count(*) FROM fault_runs WHERE phase = %s GROUP BY job_id",
        phase,
    )
    return dict(rows)


def describe_processes(*processes: WorkerProcess) -> str:
    """Return the output of worker processes, for an assertion message."""
    parts = []
    for process in processes:
        parts.append(f"--- worker {process.pid} ---\n{process.output()[-4000:]}")
    return "\n".join(parts)


@pytest.fixture
def pg_bin() -> Path:
    """Folder of Debian's PostgreSQL server binaries; skips when absent."""
    folder = find_pg_bin()
    if folder is None:
        pytest.skip("PostgreSQL server binaries (Debian's postgresql-15) are absent")
    return folder


@pytest.fixture
def temp_cluster(pg_bin: Path) -> Iterator[TempCluster]:
    """A started PostgreSQL cluster of this test's own, removed afterwards."""
    cluster = TempCluster(pg_bin)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def pgbouncer_binary() -> Path:
    """Path of pgbouncer; skips when Debian's `pgbouncer` package is absent."""
    binary = find_pgbouncer()
    if binary is None:
        pytest.skip(
            "pgbouncer is not installed; install Debian's pgbouncer package "
            "(.ci/run does)"
        )
    return binary
