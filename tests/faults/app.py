"""The job system that the fault tests run in worker processes.

`python -m pgjobs worker tests.faults.app:jobs` runs it. The environment
sets it up: `FAULTS_DSN` is the database and `FAULTS_CONFIG` a JSON object
of config overrides (queues as name -> `queue()` options, worker, pool,
schedules). Every queue has the same handler, driven by the payload:

- `kill_on`, `hang_on`, `fail_on`: attempt numbers on which the handler
  kills its own process with SIGKILL, sleeps for an hour, or raises;
- `sleep`: seconds to sleep before finishing;
- `mark_start`: record a `start` row before the work, not only `finish`;
- `record`: false to record nothing (the soak benchmark);
- `result`: return a small result, which pgjobs stores.

Rows go to `public.fault_runs`, which `tests.faults.runs.create_runs_table`
makes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import pgjobs

RECORD_RUN_SQL = """
INSERT INTO public.fault_runs (job_id, queue, attempt, phase, pid, scheduled_for)
VALUES (%s, %s, %s, %s, %s, %s)
"""


class HandlerFailure(Exception):
    """The failure that a payload's `fail_on` requests."""


def build_config() -> dict[str, Any]:
    """Return the job system config that the environment describes."""
    overrides = json.loads(os.environ.get("FAULTS_CONFIG") or "{}")
    queues = overrides.pop("queues", None) or {"default": {}}
    return {
        "dsn": os.environ["FAULTS_DSN"],
        "queues": {name: pgjobs.queue(**options) for name, options in queues.items()},
        **overrides,
    }


jobs = pgjobs.create_job_system(build_config())


async def _record(context: pgjobs.JobContext, phase: str) -> None:
    async with jobs.pool.connection() as conn:
        await conn.execute(
            RECORD_RUN_SQL,
            (
                context.job_id,
                context.queue,
                context.attempt,
                phase,
                os.getpid(),
                context.scheduled_for,
            ),
        )


async def handle(payload: dict[str, Any], context: pgjobs.JobContext) -> Any:
    """Run one job as its payload directs; see the module docstring."""
    attempt = context.attempt
    record = payload.get("record", True)
    if record and payload.get("mark_start"):
        await _record(context, "start")
    if attempt in payload.get("kill_on", ()):
        os.kill(os.getpid(), signal.SIGKILL)
    if attempt in payload.get("hang_on", ()):
        await asyncio.sleep(3600)
    if payload.get("sleep"):
        await asyncio.sleep(float(payload["sleep"]))
    if attempt in payload.get("fail_on", ()):
        raise HandlerFailure(f"failure asked for on attempt {attempt}")
    if record:
        await _record(context, "finish")
    if payload.get("result"):
        return {"pid": os.getpid(), "attempt": attempt}
    return None


for _name in jobs.config.queues:
    jobs.handler(_name)(handle)
