"""The database restarts while workers run jobs and a sender sends more.

The server is a cluster of the test's own, stopped with `pg_ctl -m fast`
(which ends every session, as a restart or failover does) and started
again. Worker processes and the in-test sender must reconnect by
themselves; every job whose send returned an id must end succeeded.
Further tests stop the server just as a handler ends, so that the write of
the job's final status meets the outage.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
from tests.conftest import FAST_WORKER, wait_for
from tests.faults.fixtures import describe_processes, fetch, statuses
from tests.faults.runs import create_runs_table
from tests.faults.servers import TempCluster
from tests.test_cli import APP, Worker

pytestmark = pytest.mark.timeout(240)

PASSWORD = "restart-secret-pw"
QUEUES = {"stream": {"retry_limit": 5, "retry_delay": 0.5, "concurrency": 4}}
WORKER_CONFIG = {"queues": QUEUES, "worker": FAST_WORKER, "pool": {"timeout": 5.0}}
OUTAGE_SECONDS = 3.0


class Sender:
    """Sends jobs one by one and in batches, noting what each call did."""

    def __init__(self, jobs: pgjobs.JobSystem) -> None:
        self.jobs = jobs
        self.sent: dict[int, int] = {}  # payload number -> job id
        self.failed_single: list[int] = []
        self.failed_batches: list[list[int]] = []
        self.errors: list[BaseException] = []
        self.counter = 0
        self.stopping = asyncio.Event()

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    async def run(self) -> None:
        while not self.stopping.is_set():
            number = self._next()
            try:
                job_id = await self.jobs.send("stream", {"n": number, "result": True})
            except pgjobs.PgJobsError as exc:
                self.errors.append(exc)
                self.failed_single.append(number)
            else:
                assert job_id is not None
                self.sent[number] = job_id
            batch = [self._next() for _ in range(3)]
            try:
                ids = await self.jobs.send_many(
                    "stream", [{"n": n, "result": True} for n in batch]
                )
            except pgjobs.PgJobsError as exc:
                self.errors.append(exc)
                self.failed_batches.append(batch)
            else:
                self.sent.update(zip(batch, ids, strict=True))
            await asyncio.sleep(0.05)


class SyncSender:
    """Sends jobs with `send_sync` from a thread, as a sync web app would."""

    FIRST_NUMBER = 1_000_000

    def __init__(self, jobs: pgjobs.JobSystem) -> None:
        self.jobs = jobs
        self.sent: dict[int, int] = {}
        self.errors: list[BaseException] = []
        self.counter = self.FIRST_NUMBER
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sync-sender")

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.counter += 1
            try:
                job_id = self.jobs.send_sync(
                    "stream", {"n": self.counter, "result": True}
                )
            except pgjobs.PgJobsError as exc:
                self.errors.append(exc)
            else:
                assert job_id is not None
                self.sent[self.counter] = job_id
            time.sleep(0.05)


def with_password(dsn: str) -> str:
    """Add a password to `dsn`; the trust-auth test cluster ignores it."""
    return psycopg.conninfo.make_conninfo(dsn, password=PASSWORD)


async def test_db_restart_nothing_lost(
    temp_cluster: TempCluster,
    spawn_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with psycopg.connect(temp_cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE restart")
    dsn = with_password(temp_cluster.dsn("restart"))
    create_runs_table(dsn)
    installer = pgjobs.create_job_system({"dsn": dsn})
    await installer.migrate()
    await installer.stop()

    workers = [spawn_worker(dsn, WORKER_CONFIG) for _ in range(2)]
    jobs = pgjobs.create_job_system(
        {
            "dsn": dsn,
            "queues": {"stream": pgjobs.queue(**QUEUES["stream"])},
            "pool": {"timeout": 2.0, "connect_timeout": 2.0},
        }
    )
    sender = Sender(jobs)
    task = asyncio.create_task(sender.run())
    sync_jobs = pgjobs.create_job_system(jobs.config)
    sync_sender = SyncSender(sync_jobs)
    sync_sender.thread.start()
    try:
        # Both processes run (one procrastinate worker each) before the outage:
        # a worker that cannot connect at start-up exits, by design.
        await wait_for(
            lambda: fetch(dsn, "SELECT count(*) FROM procrastinate_workers")[0][0] == 2,
            timeout=60,
        )
        await wait_for(lambda: len(sender.sent) >= 40, timeout=60)
        await wait_for(lambda: _succeeded(dsn) >= 20, timeout=60)

        # pg_ctl runs on a thread: a server in fast shutdown waits for the
        # sessions of clients that do not read, as a blocked loop would not.
        await asyncio.to_thread(temp_cluster.stop, "fast")
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(temp_cluster.start)

        after_restart = len(sender.sent)
        sync_after_restart = len(sync_sender.sent)
        await wait_for(lambda: len(sender.sent) >= after_restart + 40, timeout=90)
        await wait_for(
            lambda: len(sync_sender.sent) >= sync_after_restart + 10, timeout=90
        )
    finally:
        sender.stopping.set()
        sync_sender.stopping.set()
        await task
        await asyncio.to_thread(sync_sender.thread.join)
        await jobs.stop()
        await asyncio.to_thread(sync_jobs.stop_sync)
    sent = {**sender.sent, **sync_sender.sent}

    def all_sent_succeeded() -> bool:
        current = statuses(dsn)
        return all(current.get(job_id) == "succeeded" for job_id in sent.values())

    try:
        await wait_for(all_sent_succeeded, timeout=120, interval=0.5)
    except AssertionError:
        unfinished = {
            job_id: status
            for job_id, status in statuses(dsn).items()
            if status != "succeeded"
        }
        raise AssertionError(
            f"jobs not succeeded: {unfinished}\n{describe_processes(*workers)}"
        ) from None

    # Sends failed during the outage, each with a clear connection error.
    assert sender.errors
    assert all(isinstance(exc, pgjobs.DatabaseUnavailable) for exc in sender.errors)
    assert all(
        isinstance(exc, pgjobs.DatabaseUnavailable) for exc in sync_sender.errors
    )
    # Nothing half-written: a failed batch left all of its jobs or none.
    stored = _stored_numbers(dsn)
    for batch in sender.failed_batches:
        present = [number for number in batch if number in stored]
        assert present in ([], batch), batch
    # Every stored job is one that was sent, and none was stored twice.
    assert len(stored) == len(set(stored))
    expected = set(range(1, sender.counter + 1))
    expected |= set(range(SyncSender.FIRST_NUMBER, sync_sender.counter + 1))
    assert set(stored) <= expected
    # Both worker processes survived the outage and reconnected.
    assert all(worker.alive() for worker in workers), describe_processes(*workers)
    # No message or log line shows the password.
    errors = sender.errors + sync_sender.errors
    texts = [str(exc) for exc in errors] + [caplog.text]
    texts += [worker.output() for worker in workers]
    assert not any(PASSWORD in text for text in texts)


def _succeeded(dsn: str) -> int:
    rows = fetch(
        dsn, "SELECT count(*) FROM procrastinate_jobs WHERE status='succeeded'"
    )
    return int(rows[0][0])


def _stored_numbers(dsn: str) -> list[int]:
    rows = fetch(dsn, "SELECT (args -> 'payload' ->> 'n')::int FROM procrastinate_jobs")
    return [row[0] for row in rows]


# Heartbeats stay fresh through the outage here, so the orphan sweep leaves
# the job alone: only the worker's own final write can settle it.
OUTAGE_WORKER = {**FAST_WORKER, "stalled_timeout": 120.0, "graceful_timeout": 30.0}


@pytest.mark.parametrize("outcome", ["returns", "raises"])
async def test_final_status_written_after_outage(
    temp_cluster: TempCluster, outcome: str
) -> None:
    with psycopg.connect(temp_cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE outage")
    dsn = temp_cluster.dsn("outage")
    runs: list[int] = []

    async def handler(payload: dict[str, Any]) -> str:
        runs.append(payload["n"])
        if len(runs) == 1:
            # The server goes down as the handler ends, so the worker's
            # write of the job's final status meets a dead connection.
            await asyncio.to_thread(temp_cluster.stop, "fast")
            if outcome == "raises":
                raise RuntimeError("failed while the server went down")
        return "done"

    jobs = pgjobs.create_job_system(
        {
            "dsn": dsn,
            "queues": {"outage": pgjobs.queue(retry_limit=1, retry_delay=0)},
            "worker": OUTAGE_WORKER,
            "pool": {"timeout": 2.0, "connect_timeout": 2.0},
        }
    )
    try:
        await jobs.init_jobs({"outage": handler})
        job_id = await jobs.send("outage", {"n": 1})
        await wait_for(lambda: not temp_cluster.running(), timeout=60)
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(temp_cluster.start)
        await wait_for(
            lambda: statuses(dsn).get(job_id) == "succeeded", timeout=60, interval=0.2
        )
    finally:
        await jobs.stop()
    # A handler that returned ran once; one that raised ran once more, as a
    # retry, because its retry was written and not lost.
    assert runs == ([1] if outcome == "returns" else [1, 1])
    # The attempt that ended in the outage was recorded once it was over.
    recorded = fetch(
        dsn,
        "SELECT attempt, outcome FROM pgjobs_attempts WHERE job_id = %s "
        "ORDER BY attempt",
        job_id,
    )
    expected = [(1, "succeeded")] if outcome == "returns" else [(1, "failed")]
    assert recorded[:1] == expected


async def test_stop_during_outage_leaves_job_to_sweep(
    temp_cluster: TempCluster, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(temp_cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE outage")
    dsn = temp_cluster.dsn("outage")
    runs: list[int] = []

    async def handler(payload: dict[str, Any]) -> str:
        runs.append(payload["n"])
        if len(runs) == 1:
            await asyncio.to_thread(temp_cluster.stop, "fast")
        return "done"

    config = {
        "dsn": dsn,
        "queues": {"outage": pgjobs.queue(retry_limit=1, retry_delay=0)},
        "worker": {**FAST_WORKER, "graceful_timeout": 1.0},
        "pool": {"timeout": 1.0, "connect_timeout": 1.0},
    }
    jobs = pgjobs.create_job_system(config)
    try:
        await jobs.init_jobs({"outage": handler})
        job_id = await jobs.send("outage", {"n": 1})
        await wait_for(lambda: not temp_cluster.running(), timeout=60)
    finally:
        # The outage lasts past the stop: the worker gives up its write
        # after the graceful timeout instead of holding the stop forever.
        await jobs.stop()
    assert "Gave up writing the final status of job" in caplog.text
    await asyncio.to_thread(temp_cluster.start)
    assert statuses(dsn)[job_id] == "doing"

    # Once the stopped worker's heartbeat is stale, a peer settles the job.
    peer = pgjobs.create_job_system(config)
    try:
        await peer.init_jobs({"outage": handler})
        await wait_for(
            lambda: statuses(dsn).get(job_id) == "succeeded", timeout=60, interval=0.2
        )
    finally:
        await peer.stop()
    assert runs == [1, 1]


async def test_worker_waits_for_database_at_start(
    temp_cluster: TempCluster, tmp_path: Path
) -> None:
    with psycopg.connect(temp_cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE late")
    dsn = temp_cluster.dsn("late")
    await asyncio.to_thread(temp_cluster.stop, "fast")

    worker = Worker(dsn, tmp_path, APP, "--wait-for-database", "5m")
    try:
        await wait_for(lambda: "retrying in" in worker.stderr, timeout=60)
        await asyncio.to_thread(temp_cluster.start)
        # The schema is installed once the workers start, not at connection.
        await wait_for(lambda: "Starting workers" in worker.stderr, timeout=60)
        jobs = pgjobs.create_job_system({"dsn": dsn, "queues": {"quick": {}}})
        try:
            job_id = await jobs.send("quick", {"n": 1})
        finally:
            await jobs.stop()
        await wait_for(lambda: statuses(dsn).get(job_id) == "succeeded", timeout=60)
    finally:
        worker.signal(signal.SIGTERM)
        code = worker.finish()
    assert code == 0, worker.stderr


async def test_outage_sweep_spares_live_workers(
    temp_cluster: TempCluster, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(temp_cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE spared")
    dsn = temp_cluster.dsn("spared")
    started = asyncio.Event()
    runs: list[int] = []

    async def handler(payload: dict[str, Any]) -> str:
        runs.append(payload["n"])
        started.set()
        await asyncio.sleep(12)
        return "done"

    # The outage lasts longer than the stalled timeout, so every heartbeat
    # is stale when the server comes back; yet both workers are alive.
    config = {
        "dsn": dsn,
        "queues": {"spared": pgjobs.queue(retry_limit=3, retry_delay=0)},
        "worker": FAST_WORKER,
        "pool": {"timeout": 1.0, "connect_timeout": 1.0},
    }
    runner = pgjobs.create_job_system(config)
    peer = pgjobs.create_job_system(config)
    try:
        await runner.init_jobs({"spared": handler})
        job_id = await runner.send("spared", {"n": 1})
        await asyncio.wait_for(started.wait(), timeout=30)
        await peer.init_jobs({"spared": handler})
        await asyncio.to_thread(temp_cluster.stop, "fast")
        await asyncio.sleep(FAST_WORKER["stalled_timeout"] + 1)
        await asyncio.to_thread(temp_cluster.start)
        await wait_for(
            lambda: statuses(dsn).get(job_id) == "succeeded", timeout=90, interval=0.2
        )
    finally:
        await runner.stop()
        await peer.stop()
    assert runs == [1]
    assert "Recovered orphaned job" not in caplog.text
