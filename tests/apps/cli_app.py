"""A job system for the command line tests, on the database in DATABASE_URL."""

from __future__ import annotations

import asyncio
from typing import Any

import pgjobs

QUICK = pgjobs.queue(retry_limit=0, timeout=30)
SLOW = pgjobs.queue(retry_limit=3, timeout=120)
FAILING = pgjobs.queue(retry_limit=0, timeout=30)

WORKER = {
    "polling_interval": 0.2,
    "abort_polling_interval": 0.2,
    "heartbeat_interval": 0.5,
    "stalled_timeout": 3.0,
    "graceful_timeout": 2.0,
}


def make_jobs() -> pgjobs.JobSystem:
    """Return a job system with three queues and their handlers."""
    system = pgjobs.create_job_system(
        {
            "queues": {"quick": QUICK, "slow": SLOW, "failing": FAILING},
            "worker": WORKER,
        }
    )

    @system.handler(QUICK)
    def quick(payload: dict[str, Any]) -> dict[str, Any]:
        return {"echo": payload}

    @system.handler(SLOW)
    async def slow(payload: dict[str, Any]) -> str:
        await asyncio.sleep(float(payload.get("seconds", 1.0)))
        return "slept"

    @system.handler(FAILING)
    def failing(payload: dict[str, Any]) -> None:
        raise ValueError(f"refusing payload {payload!r}")

    return system


jobs = make_jobs()


def make_empty_jobs() -> pgjobs.JobSystem:
    """Return a job system with no queue."""
    return pgjobs.create_job_system({})
