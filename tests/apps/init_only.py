"""Run `init_jobs(start_worker=False)` once, for concurrent start-up tests.

The environment gives the database in `WORKER_APP_DSN`. The process first
waits for a shared advisory lock on `START_LOCK`, which the test holds
exclusively until every process waits, so that all of them start at once.
pgjobs' INFO logs go to stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os

import psycopg

import pgjobs

START_LOCK = 724_001


async def main() -> None:
    """Wait for the start signal, then run init_jobs once."""
    dsn = os.environ["WORKER_APP_DSN"]
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pgjobs").setLevel(logging.INFO)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock_shared(%s)", [START_LOCK])
        conn.execute("SELECT pg_advisory_unlock_shared(%s)", [START_LOCK])

    jobs = pgjobs.create_job_system({"dsn": dsn, "queues": {"q": pgjobs.queue()}})
    try:
        await jobs.init_jobs({"q": lambda payload: None}, start_worker=False)
    finally:
        await jobs.stop()


if __name__ == "__main__":
    asyncio.run(main())
