"""pgjobs behind PgBouncer in transaction pooling mode.

PgBouncer runs in front of a cluster of the test's own. What works, and
what each test shows:

- `pool.transaction_pooling=True` plus the search path set on the server
  (`ALTER DATABASE ... SET search_path`): sending, workers (polling),
  the dashboard and the admin page all work;
- the default settings: PgBouncer rejects the `options` startup parameter,
  and start-up fails at once with a clear `DatabaseUnavailable`;
- `ignore_startup_parameters = options` in PgBouncer: the search path is
  silently lost, and start-up fails with a `SchemaError` naming the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

import pgjobs
from tests.conftest import FAST_WORKER, wait_for
from tests.faults.processes import WorkerProcess
from tests.faults.runs import create_runs_table
from tests.faults.servers import PgBouncer, TempCluster

pytestmark = pytest.mark.timeout(180)

DATABASE = "bouncer"
POLLING = {**FAST_WORKER, "listen_notify": False}
# listen_notify stays at its default: transaction_pooling turns it off.
WORKER_PROCESS_CONFIG = {
    "queues": {"work": {"concurrency": 4}},
    "pool": {"transaction_pooling": True, "max_size": 4},
    "worker": FAST_WORKER,
}


async def make_database(cluster: TempCluster, *, search_path: str | None) -> str:
    """Create the test database on `cluster` and install the schema directly."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
        if search_path:
            conn.execute(f"ALTER DATABASE {DATABASE} SET search_path = {search_path}")
    dsn = cluster.dsn(DATABASE)
    system = pgjobs.create_job_system({"dsn": dsn})
    await system.migrate()
    await system.stop()
    return dsn


@pytest.fixture
def bouncer_factory(pgbouncer_binary: Path, temp_cluster: TempCluster) -> Iterator[Any]:
    started: list[PgBouncer] = []

    def start(**options: Any) -> PgBouncer:
        bouncer = PgBouncer(pgbouncer_binary, server_port=temp_cluster.port, **options)
        started.append(bouncer)
        bouncer.start()
        return bouncer

    yield start
    for bouncer in started:
        bouncer.cleanup()


def bouncer_config(dsn: str, **overrides: Any) -> dict[str, Any]:
    return {
        "dsn": dsn,
        "queues": {"work": pgjobs.queue(concurrency=4)},
        "pool": {"transaction_pooling": True, "max_size": 4, "timeout": 10.0},
        "worker": POLLING,
        **overrides,
    }


async def test_pgbouncer_default_options_rejected(
    temp_cluster: TempCluster, bouncer_factory: Any
) -> None:
    await make_database(temp_cluster, search_path=None)
    bouncer = bouncer_factory()
    jobs = pgjobs.create_job_system(
        {"dsn": bouncer.dsn(DATABASE), "queues": {"work": pgjobs.queue()}}
    )
    try:
        with pytest.raises(pgjobs.DatabaseUnavailable) as caught:
            await jobs.send("work", {})
    finally:
        await jobs.stop()
    assert "unsupported startup parameter" in str(caught.value)


async def test_pgbouncer_dropped_search_path_detected(
    temp_cluster: TempCluster, bouncer_factory: Any
) -> None:
    await make_database(temp_cluster, search_path=None)
    bouncer = bouncer_factory(ignore_startup_parameters="extra_float_digits,options")
    jobs = pgjobs.create_job_system(
        {"dsn": bouncer.dsn(DATABASE), "queues": {"work": pgjobs.queue()}}
    )
    try:
        with pytest.raises(pgjobs.SchemaError) as caught:
            await jobs.send("work", {})
    finally:
        await jobs.stop()
    assert "transaction_pooling" in str(caught.value)


async def test_pgbouncer_transaction_pooling_without_server_path(
    temp_cluster: TempCluster, bouncer_factory: Any
) -> None:
    await make_database(temp_cluster, search_path=None)
    bouncer = bouncer_factory()
    jobs = pgjobs.create_job_system(bouncer_config(bouncer.dsn(DATABASE)))
    try:
        with pytest.raises(pgjobs.SchemaError) as caught:
            await jobs.send("work", {})
    finally:
        await jobs.stop()
    assert "ALTER ROLE" in str(caught.value)


async def test_pgbouncer_send_and_work(
    temp_cluster: TempCluster, bouncer_factory: Any
) -> None:
    direct = await make_database(temp_cluster, search_path="pgjobs, public")
    create_runs_table(direct)
    # Two server connections for all clients: transactions of the sender and
    # of the worker process share them, as they would in production.
    bouncer = bouncer_factory(pool_size=2)
    dsn = bouncer.dsn(DATABASE)
    worker = WorkerProcess(dsn, WORKER_PROCESS_CONFIG)
    jobs = pgjobs.create_job_system(bouncer_config(dsn))
    try:
        # More than psycopg's prepare threshold (5) of each statement.
        ids = [await jobs.send("work", {"n": n}) for n in range(20)]
        ids += await jobs.send_many("work", [{"n": n} for n in range(20, 40)])
        await wait_for(lambda: len(_finished(direct)) == len(ids), timeout=60)
        assert _finished(direct) == set(ids)
        assert worker.alive(), worker.output()
    finally:
        await jobs.stop()
        worker.cleanup()


def _finished(dsn: str) -> set[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT job_id FROM fault_runs WHERE phase = 'finish'"
        ).fetchall()
    return {row[0] for row in rows}


async def test_pgbouncer_dashboard_and_admin(
    temp_cluster: TempCluster, bouncer_factory: Any
) -> None:
    await make_database(temp_cluster, search_path="pgjobs, public")
    bouncer = bouncer_factory(pool_size=2)
    jobs = pgjobs.create_job_system(bouncer_config(bouncer.dsn(DATABASE)))
    seen: list[Any] = []
    try:
        await jobs.init_jobs({"work": seen.append})
        ids = [await jobs.send("work", {"n": n}) for n in range(12)]
        delayed = await jobs.send("work", {"n": 12}, delay=3600)
        await wait_for(lambda: len(seen) == len(ids), timeout=60)
        await _check_dashboard(jobs, ids, delayed)
        await _check_admin(jobs, ids[1])
    finally:
        await jobs.stop()


async def _check_dashboard(
    jobs: pgjobs.JobSystem, ids: list[int], delayed: int | None
) -> None:
    dashboard = jobs.dashboard
    # Each query more often than psycopg's prepare threshold (5).
    for _ in range(7):
        stats = await dashboard.get_stats()
        page = await dashboard.get_recent_jobs(page=1, per_page=5)
        detail = await dashboard.get_job_by_id(ids[0])
    assert stats.model_dump(mode="json")
    assert len(page.jobs) == 5
    assert detail is not None
    assert detail.model_dump(mode="json")
    rerun = await dashboard.rerun_job(ids[0])
    assert rerun.model_dump(mode="json")
    assert delayed is not None
    cancelled = await dashboard.cancel_job(delayed)
    assert cancelled.model_dump(mode="json")


async def _check_admin(jobs: pgjobs.JobSystem, job_id: int) -> None:
    from pgjobs.admin import create_admin_app

    app = create_admin_app(jobs, insecure_allow_all=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://admin.test"
    ) as client:
        for path in ("/", "/jobs", f"/jobs/{job_id}"):
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text[:500])
        page = await client.get(f"/jobs/{job_id}")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match is not None, page.text[:2000]
        response = await client.post(
            f"/jobs/{job_id}/rerun", data={"csrf_token": match.group(1)}
        )
        assert response.status_code in (200, 303), response.text[:500]
