"""Dashboard actions: rerun, cancel, prune, and counts that stay right."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs.dashboard import FINISHED_STATES, DashboardQueryError
from pgjobs.types import JobContext
from tests.conftest import wait_for
from tests.test_dashboard import (
    Query,
    assert_stats_match_table,
    build_scenario,
    make_dashboard_system,
    send,
    state_of,
    wait_state,
)
from tests.test_schema import install_previous_version, make_empty_system, run_sql

__all__ = ["make_empty_system"]

WAITING_STATES = ("queued", "scheduled", "retrying")

# Where the copy of a job of each finished state settles: the scenario's
# queues succeed, fail, have no worker, or block forever.
RERUN_SETTLES_AS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "queued",
    "aborted": "running",
}

# -- rerun --------------------------------------------------------------


@pytest.mark.parametrize("state", FINISHED_STATES)
async def test_rerun_finished_job(make_system: Any, query: Query, state: str) -> None:
    scenario = await build_scenario(make_system)
    dashboard = scenario.jobs.dashboard
    original_id = scenario.ids[state]
    before = await dashboard.get_job_by_id(original_id)

    result = await dashboard.rerun_job(original_id)

    assert result.original_id == original_id
    assert result.duplicate is False
    assert result.job_id is not None
    assert result.job_id > original_id
    copy = await dashboard.get_job_by_id(result.job_id)
    after = await dashboard.get_job_by_id(original_id)
    assert before is not None
    assert copy is not None
    assert copy.queue == before.queue
    assert copy.payload == before.payload
    assert copy.priority == before.priority
    assert copy.singleton_key == before.singleton_key
    assert copy.created_at is not None
    assert copy.scheduled_at is None
    assert after == before
    await wait_state(scenario.jobs, result.job_id, RERUN_SETTLES_AS[state])
    assert_stats_match_table(await dashboard.get_stats(), query)


async def test_rerun_gets_fresh_retry_budget(make_system: Any) -> None:
    scenario = await build_scenario(make_system)

    result = await scenario.jobs.dashboard.rerun_job(scenario.ids["failed"])

    assert result.job_id is not None
    await wait_state(scenario.jobs, result.job_id, "failed")
    copy = await scenario.jobs.dashboard.get_job_by_id(result.job_id)
    assert copy is not None
    assert copy.attempts == 1
    assert [attempt.outcome for attempt in copy.attempt_history] == ["failed"]


@pytest.mark.parametrize("state", [*WAITING_STATES, "running"])
async def test_rerun_refuses_live_job(
    make_system: Any, query: Query, state: str
) -> None:
    scenario = await build_scenario(make_system)
    job_id = scenario.ids[state]

    with pytest.raises(pgjobs.JobStateError) as raised:
        await scenario.jobs.dashboard.rerun_job(job_id)

    assert raised.value.job_id == job_id
    assert raised.value.state == state
    assert "run twice" in str(raised.value)
    assert await state_of(scenario.jobs, job_id) == state
    assert_stats_match_table(await scenario.jobs.dashboard.get_stats(), query)


async def test_rerun_missing_job(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)

    with pytest.raises(pgjobs.JobNotFound) as raised:
        await jobs.dashboard.rerun_job(424242)
    with pytest.raises(pgjobs.JobNotFound):
        await jobs.dashboard.rerun_job(2**70)

    assert raised.value.job_id == 424242


async def test_rerun_pruned_job(make_system: Any) -> None:
    scenario = await build_scenario(make_system)
    job_id = scenario.ids["succeeded"]
    await scenario.jobs.dashboard.prune(older_than=0, states=["succeeded"])

    with pytest.raises(pgjobs.JobNotFound):
        await scenario.jobs.dashboard.rerun_job(job_id)


async def test_rerun_singleton_collision(make_system: Any, query: Query) -> None:
    jobs = make_dashboard_system(make_system)
    first = await send(jobs, "idle", 1, singleton_key="report-42")
    await jobs.dashboard.cancel_job(first)
    holder = await send(jobs, "idle", 2, singleton_key="report-42")

    result = await jobs.dashboard.rerun_job(first)

    assert result.duplicate is True
    assert result.job_id is None
    assert result.original_id == first
    assert await state_of(jobs, holder) == "queued"
    assert_stats_match_table(await jobs.dashboard.get_stats(), query)


async def test_rerun_singleton_free_again(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    first = await send(jobs, "idle", 1, singleton_key="report-7")
    await jobs.dashboard.cancel_job(first)

    result = await jobs.dashboard.rerun_job(first)

    assert result.duplicate is False
    assert result.job_id is not None
    copy = await jobs.dashboard.get_job_by_id(result.job_id)
    assert copy is not None
    assert copy.singleton_key == "report-7"


async def test_rerun_singleton_held_by_running_job(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    await jobs.init_jobs(
        {"block": _block, "ok": _ok, "bad": _fail, "flaky": _fail, "idle": _fail},
        queues=["block"],
    )
    first = await jobs.send("block", {"n": 1}, singleton_key="only-one")
    assert first is not None
    await wait_state(jobs, first, "running")
    await jobs.dashboard.cancel_job(first)
    await wait_state(jobs, first, "aborted")
    holder = await jobs.send("block", {"n": 2}, singleton_key="only-one")
    assert holder is not None
    await wait_state(jobs, holder, "running")

    result = await jobs.dashboard.rerun_job(first)

    assert result.duplicate is True


async def _block(payload: dict[str, Any]) -> None:
    await asyncio.Event().wait()


async def _ok(payload: dict[str, Any]) -> None:
    return None


def _fail(payload: dict[str, Any]) -> None:
    raise RuntimeError("not expected to run")


# -- cancel -------------------------------------------------------------


@pytest.mark.parametrize("state", WAITING_STATES)
async def test_cancel_waiting_job(make_system: Any, query: Query, state: str) -> None:
    scenario = await build_scenario(make_system)
    job_id = scenario.ids[state]

    result = await scenario.jobs.dashboard.cancel_job(job_id)

    assert result.job_id == job_id
    assert result.previous_state == state
    assert result.state == "cancelled"
    assert result.action == "cancelled"
    detail = await scenario.jobs.dashboard.get_job_by_id(job_id)
    assert detail is not None
    assert detail.state == "cancelled"
    assert detail.abort_requested is False
    assert detail.finished_at is not None
    assert_stats_match_table(await scenario.jobs.dashboard.get_stats(), query)


async def test_cancel_running_async_job(make_system: Any, query: Query) -> None:
    scenario = await build_scenario(make_system)
    job_id = scenario.ids["running"]

    result = await scenario.jobs.dashboard.cancel_job(job_id)

    assert result.previous_state == "running"
    assert result.state == "running"
    assert result.action == "abort_requested"
    await wait_state(scenario.jobs, job_id, "aborted")
    detail = await scenario.jobs.dashboard.get_job_by_id(job_id)
    assert detail is not None
    assert [attempt.outcome for attempt in detail.attempt_history] == ["aborted"]
    assert [event.type for event in detail.events].count("started") == 1
    assert_stats_match_table(await scenario.jobs.dashboard.get_stats(), query)


@pytest.mark.parametrize(
    ("raise_on_abort", "final_state"), [(True, "aborted"), (False, "succeeded")]
)
async def test_cancel_running_sync_job(
    make_system: Any, query: Query, raise_on_abort: bool, final_state: str
) -> None:
    # A thread cannot be cancelled: the sync handler sees should_abort() and
    # decides. Raising ends the job aborted; returning ends it succeeded.
    # Either way it ends once, in a final state, and is not retried.
    saw_abort = threading.Event()
    started = threading.Event()

    def patient(payload: dict[str, Any], context: JobContext) -> None:
        started.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if context.should_abort():
                saw_abort.set()
                if raise_on_abort:
                    raise RuntimeError("stopped on request")
                return
            time.sleep(0.02)

    jobs = make_system(
        queues={"sync": pgjobs.queue(retry_limit=3)}, worker={"graceful_timeout": 0.5}
    )
    await jobs.init_jobs({"sync": patient})
    job_id = await send(jobs, "sync", 1)
    await wait_for(started.is_set)

    result = await jobs.dashboard.cancel_job(job_id)

    assert result.action == "abort_requested"
    await wait_state(jobs, job_id, final_state)
    assert saw_abort.is_set()
    detail = await jobs.dashboard.get_job_by_id(job_id)
    assert detail is not None
    assert [event.type for event in detail.events].count("started") == 1
    assert "deferred_for_retry" not in [event.type for event in detail.events]
    assert_stats_match_table(await jobs.dashboard.get_stats(), query)


@pytest.mark.parametrize("state", FINISHED_STATES)
async def test_cancel_finished_job_unchanged(
    make_system: Any, query: Query, state: str
) -> None:
    scenario = await build_scenario(make_system)
    job_id = scenario.ids[state]
    before = await scenario.jobs.dashboard.get_job_by_id(job_id)

    result = await scenario.jobs.dashboard.cancel_job(job_id)

    assert result.action == "unchanged"
    assert result.previous_state == state
    assert result.state == state
    assert await scenario.jobs.dashboard.get_job_by_id(job_id) == before
    assert_stats_match_table(await scenario.jobs.dashboard.get_stats(), query)


async def test_cancel_missing_job(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)

    with pytest.raises(pgjobs.JobNotFound):
        await jobs.dashboard.cancel_job(31337)
    with pytest.raises(pgjobs.JobNotFound):
        await jobs.dashboard.cancel_job(0)


async def test_cancel_pruned_job(make_system: Any) -> None:
    scenario = await build_scenario(make_system)
    job_id = scenario.ids["cancelled"]
    await scenario.jobs.dashboard.prune(older_than=0)

    with pytest.raises(pgjobs.JobNotFound):
        await scenario.jobs.dashboard.cancel_job(job_id)


async def test_cancel_twice(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    job_id = await send(jobs, "idle", 1)

    first = await jobs.dashboard.cancel_job(job_id)
    second = await jobs.dashboard.cancel_job(job_id)

    assert first.action == "cancelled"
    assert second.action == "unchanged"
    assert second.state == "cancelled"


def test_cancel_sync_twin(dsn: str) -> None:
    jobs = pgjobs.create_job_system({"dsn": dsn, "queues": {"q": pgjobs.queue()}})
    try:
        job_id = jobs.send_sync("q", {})
        assert job_id is not None
        result = jobs.dashboard_sync.cancel_job(job_id)
        again = jobs.dashboard_sync.cancel_job(job_id)
    finally:
        jobs.stop_sync()

    assert result.action == "cancelled"
    assert again.action == "unchanged"


# -- prune --------------------------------------------------------------


async def test_prune_finished_jobs(make_system: Any, query: Query) -> None:
    scenario = await build_scenario(make_system)
    dashboard = scenario.jobs.dashboard

    result = await dashboard.prune(older_than=0)

    assert result.deleted == len(FINISHED_STATES)
    for state, job_id in scenario.ids.items():
        exists = await dashboard.get_job_by_id(job_id) is not None
        assert exists == (state not in FINISHED_STATES), state
    assert query(
        "SELECT count(*) FROM pgjobs_attempts a WHERE NOT EXISTS "
        "(SELECT 1 FROM procrastinate_jobs j WHERE j.id = a.job_id)"
    ) == [(0,)]
    stats = await dashboard.get_stats()
    assert stats.totals.total == len(scenario.ids) - len(FINISHED_STATES)
    assert_stats_match_table(stats, query)


async def test_prune_respects_age(make_system: Any, query: Query) -> None:
    scenario = await build_scenario(make_system)
    old_id = scenario.ids["failed"]
    query(
        "UPDATE procrastinate_events SET at = at - interval '2 days' WHERE job_id = %s",
        old_id,
    )

    result = await scenario.jobs.dashboard.prune(older_than=86400)

    assert result.deleted == 1
    assert await scenario.jobs.dashboard.get_job_by_id(old_id) is None
    assert_stats_match_table(await scenario.jobs.dashboard.get_stats(), query)


async def test_prune_selected_states(make_system: Any, query: Query) -> None:
    scenario = await build_scenario(make_system)

    result = await scenario.jobs.dashboard.prune(
        older_than=0, states=["failed", "aborted"]
    )

    assert result.deleted == 2
    remaining = await scenario.jobs.dashboard.get_stats()
    assert remaining.totals.failed == 0
    assert remaining.totals.aborted == 0
    assert remaining.totals.succeeded == 1
    assert_stats_match_table(remaining, query)


async def test_prune_empty_system(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)

    result = await jobs.dashboard.prune(older_than=0)

    assert result.deleted == 0


async def test_prune_spans_id_ranges(make_system: Any, query: Query) -> None:
    jobs = make_dashboard_system(make_system)
    first = await send(jobs, "idle", 1)
    query("SELECT setval(pg_get_serial_sequence('procrastinate_jobs', 'id'), 50000)")
    last = await send(jobs, "idle", 2)
    await jobs.dashboard.cancel_job(first)
    await jobs.dashboard.cancel_job(last)

    result = await jobs.dashboard.prune(older_than=0)

    assert result.deleted == 2


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"older_than": -1}, "older_than"),
        ({"older_than": float("nan")}, "older_than"),
        ({"older_than": "1d"}, "older_than"),
        ({"older_than": True}, "older_than"),
        ({"older_than": 0, "states": ["queued"]}, "states"),
        ({"older_than": 0, "states": ["running"]}, "states"),
        ({"older_than": 0, "states": "failed"}, "states"),
        ({"older_than": 0, "states": []}, "states"),
    ],
)
async def test_prune_invalid_arguments(
    make_system: Any, arguments: dict[str, Any], argument: str
) -> None:
    jobs = make_dashboard_system(make_system)

    with pytest.raises(DashboardQueryError) as raised:
        await jobs.dashboard.prune(**arguments)

    assert raised.value.argument == argument
    assert jobs.started is False


# -- counters -----------------------------------------------------------


async def test_counts_follow_every_action(make_system: Any, query: Query) -> None:
    scenario = await build_scenario(make_system)
    dashboard = scenario.jobs.dashboard
    ids = scenario.ids

    assert_stats_match_table(await dashboard.get_stats(), query)
    rerun = await dashboard.rerun_job(ids["failed"])
    assert rerun.job_id is not None
    await wait_state(scenario.jobs, rerun.job_id, "failed")
    assert_stats_match_table(await dashboard.get_stats(), query)
    await dashboard.cancel_job(ids["queued"])
    assert_stats_match_table(await dashboard.get_stats(), query)
    await dashboard.cancel_job(ids["running"])
    await wait_state(scenario.jobs, ids["running"], "aborted")
    assert_stats_match_table(await dashboard.get_stats(), query)
    await dashboard.prune(older_than=0, states=["cancelled"])
    assert_stats_match_table(await dashboard.get_stats(), query)
    query("DELETE FROM procrastinate_jobs WHERE id = %s", ids["succeeded"])
    assert_stats_match_table(await dashboard.get_stats(), query)
    query("TRUNCATE procrastinate_jobs CASCADE")
    stats = await dashboard.get_stats()
    assert stats.totals.total == 0
    assert_stats_match_table(stats, query)


async def test_counts_on_foreign_connection(make_system: Any, query: Query) -> None:
    # A job finished from a connection whose search_path lacks the schema:
    # the counting triggers must still find their table.
    jobs = make_dashboard_system(make_system)
    job_id = await send(jobs, "idle", 1)

    with psycopg.connect(jobs.dsn, autocommit=True) as conn:
        conn.execute("SET search_path TO public")
        conn.execute(
            "SELECT pgjobs.procrastinate_cancel_job_v1(%s, false, false)", [job_id]
        )

    assert_stats_match_table(await jobs.dashboard.get_stats(), query)


async def test_migration_counts_existing_jobs(
    make_empty_system: Any, empty_dsn: str
) -> None:
    install_previous_version(empty_dsn)
    run_sql(
        empty_dsn,
        "SELECT pgjobs.procrastinate_defer_jobs_v1(ARRAY[job, job]) FROM (SELECT "
        "('old', 'old', 0, NULL, NULL, '{}', NULL)"
        "::pgjobs.procrastinate_job_to_defer_v1 AS job) AS one",
    )
    run_sql(
        empty_dsn,
        "UPDATE pgjobs.procrastinate_jobs SET status = 'succeeded' "
        "WHERE id = (SELECT min(id) FROM pgjobs.procrastinate_jobs)",
    )
    jobs = make_empty_system(queues={"q": pgjobs.queue()})

    await jobs.migrate()
    stats = await jobs.dashboard.get_stats()

    old = next(queue for queue in stats.queues if queue.queue == "old")
    assert old.configured is False
    assert old.succeeded == 1
    assert old.queued == 1
    assert old.total == 2
