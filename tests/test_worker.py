"""Queue tasks: concurrency, handler arguments and results."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pydantic

import pgjobs
from tests.conftest import wait_for


def status_counts(query: Any) -> dict[str, int]:
    rows = query("SELECT status, count(*) FROM procrastinate_jobs GROUP BY status")
    return {status: count for status, count in rows}


class Gauge:
    """Counts handlers running at once and remembers the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def enter(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


async def test_concurrency_async_limit(make_system: Any, query: Any) -> None:
    gauge = Gauge()
    gate = asyncio.Event()

    async def handler(payload: dict[str, Any]) -> None:
        gauge.enter()
        try:
            await gate.wait()
        finally:
            gauge.leave()

    jobs = make_system(queues={"q": pgjobs.queue(concurrency=3)})
    await jobs.init_jobs({"q": handler})
    await jobs.send_many("q", [{"n": n} for n in range(7)])
    await wait_for(lambda: gauge.running == 3)
    # Give a fourth job every chance to start before the gate opens.
    await asyncio.sleep(1.0)
    running_before_release = gauge.running
    gate.set()
    await wait_for(lambda: status_counts(query) == {"succeeded": 7})

    assert running_before_release == 3
    assert gauge.peak == 3


async def test_concurrency_sync_limit(make_system: Any, query: Any) -> None:
    gauge = Gauge()
    gate = threading.Event()

    def handler(payload: dict[str, Any]) -> None:
        gauge.enter()
        try:
            gate.wait(timeout=30)
        finally:
            gauge.leave()

    jobs = make_system(queues={"q": pgjobs.queue(concurrency=3)})
    await jobs.init_jobs({"q": handler})
    await jobs.send_many("q", [{"n": n} for n in range(7)])
    await wait_for(lambda: gauge.running == 3)
    await asyncio.sleep(1.0)
    running_before_release = gauge.running
    gate.set()
    await wait_for(lambda: status_counts(query) == {"succeeded": 7})

    assert running_before_release == 3
    assert gauge.peak == 3


async def test_concurrency_per_queue(make_system: Any, query: Any) -> None:
    gauges = {"one": Gauge(), "two": Gauge()}
    gate = asyncio.Event()

    def make_handler(name: str) -> Any:
        async def handler(payload: dict[str, Any]) -> None:
            gauges[name].enter()
            try:
                await gate.wait()
            finally:
                gauges[name].leave()

        return handler

    jobs = make_system(
        queues={"one": pgjobs.queue(concurrency=1), "two": pgjobs.queue(concurrency=2)}
    )
    await jobs.init_jobs({"one": make_handler("one"), "two": make_handler("two")})
    await jobs.send_many("one", [{}] * 3)
    await jobs.send_many("two", [{}] * 3)
    await wait_for(lambda: gauges["one"].running == 1 and gauges["two"].running == 2)
    await asyncio.sleep(0.5)
    gate.set()
    await wait_for(lambda: status_counts(query) == {"succeeded": 6})

    assert gauges["one"].peak == 1
    assert gauges["two"].peak == 2


class Email(pydantic.BaseModel):
    to: str
    retries: int = 0


async def test_handler_receives_model(make_system: Any) -> None:
    received: list[Any] = []
    emails = pgjobs.queue(Email)

    async def handler(payload: Email, context: pgjobs.JobContext) -> None:
        received.append((payload, context.queue, context.attempt))

    jobs = make_system(queues={"emails": emails})
    await jobs.init_jobs({emails: handler})
    await jobs.send(emails, Email(to="a@example.com"))
    await wait_for(lambda: received)

    assert received == [(Email(to="a@example.com"), "emails", 1)]


async def test_handler_stored_payload_invalid(make_system: Any, query: Any) -> None:
    received: list[Any] = []
    failures: list[Any] = []
    emails = pgjobs.queue(
        Email, retry_limit=3, on_failed=lambda payload, error: failures.append(error)
    )

    jobs = make_system(queues={"emails": emails})
    await jobs.init_jobs({"emails": received.append}, start_worker=False)
    job_id = await jobs.send(emails, Email(to="a@example.com"))
    # A payload changed behind the queue's back fails without retries.
    query(
        'UPDATE procrastinate_jobs SET args = \'{"payload": {"to": 5}}\' WHERE id = %s',
        job_id,
    )
    await jobs.stop()
    await jobs.init_jobs({"emails": received.append})
    await wait_for(lambda: failures)

    assert received == []
    assert isinstance(failures[0], pgjobs.PayloadValidationError)
    rows = query(
        "SELECT attempt, outcome FROM pgjobs_attempts WHERE job_id = %s", job_id
    )
    assert rows == [(1, "failed")]
