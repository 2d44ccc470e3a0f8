"""A job system for worker subprocesses started by the tests.

`python -m pgjobs worker tests.apps.worker_app:jobs` runs it through the
command line; `python -m tests.apps.worker_app` runs it with a signal
handler of its own. The environment configures it: `WORKER_APP_DSN` is the
database, `WORKER_APP_RETRY_LIMIT` the retry limit of queue `slow` and
`WORKER_APP_GRACEFUL` the graceful timeout in seconds.

The handler of `slow` records `start` and `end` rows in `public.runs`
(which `tests.apps.harness.create_runs_table` makes) and
sleeps `payload["seconds"]` in between. With `payload["abortable"]` it
stops early, recording `aborted`, once `should_abort()` turns true.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import psycopg

import pgjobs

DSN = os.environ["WORKER_APP_DSN"]


def record(context: pgjobs.JobContext, event: str) -> None:
    """Insert one row into `public.runs` on a connection of its own."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO public.runs (job_id, attempt, pid, event) "
            "VALUES (%s, %s, %s, %s)",
            (context.job_id, context.attempt, os.getpid(), event),
        )


def slow(payload: dict[str, Any], context: pgjobs.JobContext) -> None:
    """Sleep `payload["seconds"]`, recording the start and the end."""
    record(context, "start")
    deadline = time.monotonic() + float(payload.get("seconds", 0))
    while time.monotonic() < deadline:
        if payload.get("abortable") and context.should_abort():
            record(context, "aborted")
            raise RuntimeError("stopped early: should_abort() returned True")
        time.sleep(0.05)
    record(context, "end")


jobs = pgjobs.create_job_system(
    {
        "dsn": DSN,
        "queues": {
            "slow": pgjobs.queue(
                retry_limit=int(os.environ.get("WORKER_APP_RETRY_LIMIT", "2")),
                timeout=None,
            )
        },
        "worker": {
            "polling_interval": 0.2,
            "abort_polling_interval": 0.2,
            "heartbeat_interval": 0.5,
            "stalled_timeout": 3.0,
            "graceful_timeout": float(os.environ.get("WORKER_APP_GRACEFUL", "5")),
        },
    }
)
jobs.handler("slow")(slow)


async def main() -> None:
    """Run the workers until SIGTERM, then stop gracefully."""
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_sigterm() -> None:
        if not stopping:
            stopping.append(loop.create_task(jobs.stop(), name="stop"))

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    await jobs.run_worker()
    for task in stopping:
        await task


if __name__ == "__main__":
    asyncio.run(main())
