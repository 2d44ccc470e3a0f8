"""Measure the Python work that pgjobs adds per job, without a database.

Run `.venv/bin/python bench/overhead.py`. End-to-end figures on a shared
machine move by more than the few microseconds pgjobs adds, so this script
times the added code paths alone, as the best of several repeats:

- send: pgjobs' `build_job` (queue lookup, option checks, payload
  validation against the model, storability and size checks) against what
  procrastinate's `defer_async` does before its query (`configure` and
  `make_new_job`). Both then run the same procrastinate insert.
- run: the task function that pgjobs registers with procrastinate (payload
  model, job context, timeout, result check) around a no-op handler,
  against procrastinate calling the no-op handler directly.

No connection is opened: the job system is built but never started.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import procrastinate
import procrastinate.job_context
import procrastinate.jobs
import pydantic

import pgjobs
from pgjobs import _sending, worker

QUEUE = "overhead"


class Noop(pydantic.BaseModel):
    """Payload of the measured jobs."""

    n: int


async def noop_handler(payload: Any) -> None:
    return None


def best_of(repeats: int, count: int, run: Callable[[], None]) -> float:
    """Return the best time of one call of `run`, in microseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            run()
        times.append((time.perf_counter() - start) / count)
    return min(times) * 1e6


async def best_of_async(
    repeats: int, count: int, run: Callable[[], Awaitable[Any]]
) -> float:
    """Return the best time of one awaited call of `run`, in microseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            await run()
        times.append((time.perf_counter() - start) / count)
    return min(times) * 1e6


def send_costs(repeats: int, count: int) -> tuple[float, float]:
    """Return (pgjobs, procrastinate) µs to build one job before its insert."""
    jobs = pgjobs.create_job_system(
        {
            "dsn": "postgresql://bench@127.0.0.1:5432/unused",
            "queues": {QUEUE: pgjobs.queue(Noop)},
        }
    )

    def build_pgjobs() -> None:
        _sending.build_job(
            jobs.config,
            QUEUE,
            {"n": 1},
            delay=None,
            run_at=None,
            priority=None,
            singleton_key=None,
            lock=None,
        )

    app = procrastinate.App(connector=procrastinate.PsycopgConnector())
    task = app.task(name=QUEUE, queue=QUEUE)(noop_handler)

    def build_raw() -> None:
        task.configure().make_new_job(payload={"n": 1})

    return best_of(repeats, count, build_pgjobs), best_of(repeats, count, build_raw)


async def run_costs(repeats: int, count: int) -> tuple[float, float]:
    """Return (pgjobs, procrastinate) µs to call the task of one no-op job."""
    jobs = pgjobs.create_job_system(
        {
            "dsn": "postgresql://bench@127.0.0.1:5432/unused",
            "queues": {QUEUE: pgjobs.queue(Noop)},
        }
    )
    queue_task = worker.QueueTask(jobs, QUEUE, jobs.config.queues[QUEUE], noop_handler)
    job = procrastinate.jobs.Job(
        id=1,
        queue=QUEUE,
        lock=None,
        queueing_lock=None,
        task_name=QUEUE,
        task_kwargs={"payload": {"n": 1}},
        attempts=0,
    )
    context = procrastinate.job_context.JobContext(
        app=jobs.app,
        worker_name="bench",
        worker_queues=[QUEUE],
        job=job,
        start_timestamp=time.time(),
        abort_reason=lambda: None,
    )
    payload = {"n": 1}

    async def run_pgjobs() -> None:
        await queue_task(context, payload, None)

    async def run_raw() -> None:
        await noop_handler(payload)

    # Timer handles cancelled by asyncio.timeout are dropped from the loop's
    # heap only when the loop runs, so each call yields to it.
    async def yielding(run: Callable[[], Awaitable[None]]) -> None:
        await run()
        await asyncio.sleep(0)

    mine = await best_of_async(repeats, count, lambda: yielding(run_pgjobs))
    theirs = await best_of_async(repeats, count, lambda: yielding(run_raw))
    return mine, theirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="default: %(default)s")
    parser.add_argument(
        "--count",
        type=int,
        default=20_000,
        help="calls per repeat (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    send_mine, send_theirs = send_costs(args.repeats, args.count)
    run_mine, run_theirs = asyncio.run(run_costs(args.repeats, args.count))
    print(f"best of {args.repeats} repeats of {args.count} calls, µs per job")
    print("| path | pgjobs | procrastinate | added by pgjobs |")
    print("|------|-------:|--------------:|----------------:|")
    rows = [
        ("send: build the job", send_mine, send_theirs),
        ("worker: call the task", run_mine, run_theirs),
    ]
    for label, mine, theirs in rows:
        print(f"| {label} | {mine:.1f} | {theirs:.1f} | {mine - theirs:+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
