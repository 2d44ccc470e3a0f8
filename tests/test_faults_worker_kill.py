"""A worker process killed with SIGKILL: its peers recover every job it held."""

from __future__ import annotations

from typing import Any

import pytest

import pgjobs
from tests.conftest import FAST_WORKER, wait_for
from tests.faults.fixtures import describe_processes, fetch, run_counts, statuses

pytestmark = pytest.mark.timeout(180)

QUEUES: dict[str, dict[str, Any]] = {
    "alpha": {"retry_limit": 2, "concurrency": 4},
    "beta": {"retry_limit": 1, "concurrency": 4},
    "gamma": {"retry_limit": 0, "concurrency": 2},
}
CONFIG: dict[str, Any] = {"queues": QUEUES, "worker": FAST_WORKER}

# Slack for process start-up and a loaded machine, on top of the stalled
# timeout plus one sweep; only a hung test waits that long.
SLACK = 15.0


def sweep_bound() -> float:
    """Seconds after a kill within which every orphan must be settled."""
    worker = pgjobs.WorkerConfig(**FAST_WORKER)
    return worker.stalled_timeout + worker.sweep_interval + SLACK


def make_sender(make_system: Any, queues: dict[str, dict[str, Any]]) -> Any:
    definitions = {name: pgjobs.queue(**options) for name, options in queues.items()}
    return make_system(queues=definitions)


async def test_worker_kill_peer_recovers_all(
    dsn: str, runs_table: str, spawn_worker: Any, make_system: Any
) -> None:
    victim = spawn_worker(dsn, CONFIG)
    sender = make_sender(make_system, QUEUES)
    hang_first = {"mark_start": True, "hang_on": [1]}
    fail_then_hang = {"mark_start": True, "fail_on": [1], "hang_on": [2]}
    plan = [
        # (queue, payload, attempt that hangs, expected status, expected starts)
        ("alpha", hang_first, 1, "succeeded", 2),
        ("alpha", hang_first, 1, "succeeded", 2),
        ("alpha", hang_first, 1, "succeeded", 2),
        ("alpha", fail_then_hang, 2, "succeeded", 3),
        ("beta", hang_first, 1, "succeeded", 2),
        ("beta", hang_first, 1, "succeeded", 2),
        ("beta", fail_then_hang, 2, "failed", 2),
        ("gamma", hang_first, 1, "failed", 1),
        ("gamma", hang_first, 1, "failed", 1),
    ]
    ids = [await sender.send(queue, payload) for queue, payload, *_ in plan]

    def hanging() -> bool:
        rows = fetch(dsn, "SELECT job_id, attempt FROM fault_runs WHERE phase='start'")
        started = set(rows)
        return all(
            (job_id, attempt) in started
            for job_id, (_, _, attempt, _, _) in zip(ids, plan, strict=True)
        )

    await wait_for(hanging, timeout=60)
    peer = spawn_worker(dsn, CONFIG)
    # Each process registers one procrastinate worker per queue.
    await wait_for(
        lambda: fetch(dsn, "SELECT count(*) FROM procrastinate_workers")[0][0] == 6,
        timeout=60,
    )
    victim.kill()

    def settled() -> bool:
        current = statuses(dsn)
        return all(current[job_id] in ("succeeded", "failed") for job_id in ids)

    try:
        await wait_for(settled, timeout=sweep_bound() + 30)
    except AssertionError:
        raise AssertionError(
            f"jobs not settled: {statuses(dsn)}\n{describe_processes(victim, peer)}"
        ) from None

    final = statuses(dsn)
    starts = run_counts(dsn, "start")
    finishes = run_counts(dsn, "finish")
    for job_id, (queue, _, _, status, start_count) in zip(ids, plan, strict=True):
        assert final[job_id] == status, (job_id, queue)
        assert starts.get(job_id, 0) == start_count, (job_id, queue)
        expected_finishes = 1 if status == "succeeded" else 0
        assert finishes.get(job_id, 0) == expected_finishes, (job_id, queue)
    assert peer.alive(), describe_processes(peer)


async def test_worker_kill_orphans_within_sweep_bound(
    dsn: str, runs_table: str, spawn_worker: Any, make_system: Any
) -> None:
    victim = spawn_worker(dsn, CONFIG)
    sender = make_sender(make_system, QUEUES)
    ids = [
        await sender.send(queue, {"mark_start": True, "hang_on": [1]})
        for queue in ("alpha", "beta", "gamma")
    ]
    await wait_for(lambda: len(run_counts(dsn, "start")) == len(ids), timeout=60)
    peer = spawn_worker(dsn, CONFIG)
    await wait_for(
        lambda: fetch(dsn, "SELECT count(*) FROM procrastinate_workers")[0][0] == 6,
        timeout=60,
    )
    victim.kill()

    def none_doing() -> bool:
        return "doing" not in set(statuses(dsn).values())

    # The bound is the stalled timeout plus one sweep interval, plus slack.
    await wait_for(none_doing, timeout=sweep_bound())
    reasons = fetch(
        dsn,
        "SELECT job_id, error_message FROM pgjobs_attempts "
        "WHERE outcome = 'worker_lost' ORDER BY job_id",
    )
    assert [job_id for job_id, _ in reasons] == ids
    assert all("worker lost" in message for _, message in reasons)
    assert peer.alive(), describe_processes(peer)


async def test_worker_kill_poison_job_parked(
    dsn: str, runs_table: str, spawn_worker: Any, make_system: Any
) -> None:
    queues = {"poison": {"retry_limit": 10, "max_worker_losses": 2}}
    config = {"queues": queues, "worker": FAST_WORKER}
    sender = make_sender(make_system, queues)
    job_id = await sender.send(
        "poison", {"mark_start": True, "kill_on": list(range(1, 12))}
    )
    workers = [spawn_worker(dsn, config)]

    def parked() -> bool:
        # A job that kills its worker needs a new worker to sweep and retry it.
        if not workers[-1].alive():
            workers.append(spawn_worker(dsn, config))
        return statuses(dsn)[job_id] == "failed"

    try:
        await wait_for(parked, timeout=120, interval=0.2)
    except AssertionError:
        raise AssertionError(
            f"poison job not parked: {statuses(dsn)}\n{describe_processes(*workers)}"
        ) from None

    losses = fetch(
        dsn,
        "SELECT attempt, error_message FROM pgjobs_attempts "
        "WHERE job_id = %s AND outcome = 'worker_lost' ORDER BY attempt",
        job_id,
    )
    assert [attempt for attempt, _ in losses] == [1, 2]
    assert "max_worker_losses" in losses[-1][1]
    assert run_counts(dsn, "start")[job_id] == 2
