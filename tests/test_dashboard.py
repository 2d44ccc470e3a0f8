"""Dashboard reads: statistics, job pages, job detail, sync twins, JSON."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import pgjobs
from pgjobs.dashboard import (
    COUNT_LIMIT,
    JOB_STATES,
    MAX_OFFSET,
    MAX_PER_PAGE,
    DashboardQueryError,
    JobPage,
    Stats,
)
from tests.conftest import wait_for

Query = Callable[..., list[tuple[Any, ...]]]

QUEUES = {
    "ok": pgjobs.queue(),
    "bad": pgjobs.queue(retry_limit=0),
    "flaky": pgjobs.queue(retry_limit=3, retry_delay=3600),
    "block": pgjobs.queue(concurrency=2),
    "idle": pgjobs.queue(priority=3),
}
WORKED_QUEUES = ["ok", "bad", "flaky", "block"]
COUNT_FIELDS = (
    "queued",
    "scheduled",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "cancelled",
    "aborted",
)


async def ok(payload: dict[str, Any]) -> dict[str, Any]:
    return {"echo": payload}


def bad(payload: dict[str, Any]) -> None:
    raise ValueError(f"boom {payload.get('n')}")


def flaky(payload: dict[str, Any]) -> None:
    raise ConnectionError("flaky service")


async def block(payload: dict[str, Any]) -> None:
    await asyncio.Event().wait()


def never(payload: dict[str, Any]) -> None:
    raise AssertionError("the idle queue has no worker in these tests")


HANDLERS = {"ok": ok, "bad": bad, "flaky": flaky, "block": block, "idle": never}


@dataclass
class Scenario:
    """A job system with one job in every state; `ids` maps state to job id."""

    jobs: pgjobs.JobSystem
    ids: dict[str, int]


def make_dashboard_system(make_system: Callable[..., pgjobs.JobSystem]) -> Any:
    """Return a job system with the test queues; stopping it takes 0.5 s at most."""
    return make_system(queues=QUEUES, worker={"graceful_timeout": 0.5})


async def state_of(jobs: pgjobs.JobSystem, job_id: int) -> str | None:
    detail = await jobs.dashboard.get_job_by_id(job_id)
    return None if detail is None else detail.state


async def wait_state(jobs: pgjobs.JobSystem, job_id: int, state: str) -> None:
    async def reached() -> bool:
        return await state_of(jobs, job_id) == state

    await wait_for(reached)


async def send(jobs: pgjobs.JobSystem, queue: str, n: int, **options: Any) -> int:
    job_id = await jobs.send(queue, {"n": n}, **options)
    assert job_id is not None
    return job_id


async def build_scenario(make_system: Callable[..., pgjobs.JobSystem]) -> Scenario:
    """Create one job in each of the eight states; payload n values from 1001."""
    jobs = make_dashboard_system(make_system)
    await jobs.init_jobs(HANDLERS, queues=WORKED_QUEUES)
    ids = {
        "queued": await send(jobs, "idle", 1001, singleton_key="idle-key"),
        "scheduled": await send(jobs, "idle", 1002, delay=3600),
        "cancelled": await send(jobs, "idle", 1003),
    }
    await jobs.dashboard.cancel_job(ids["cancelled"])
    succeeded = await jobs.send("ok", {"n": 1004, "tags": {"color": "teal"}})
    assert succeeded is not None
    ids["succeeded"] = succeeded
    ids["failed"] = await send(jobs, "bad", 1005)
    ids["retrying"] = await send(jobs, "flaky", 1006)
    ids["aborted"] = await send(jobs, "block", 1007)
    await wait_state(jobs, ids["aborted"], "running")
    await jobs.dashboard.cancel_job(ids["aborted"])
    ids["running"] = await send(jobs, "block", 1008)
    for state, job_id in ids.items():
        await wait_state(jobs, job_id, state)
    return Scenario(jobs, ids)


def table_counts(query: Query) -> dict[tuple[str, str], int]:
    """Count jobs per (queue, state) straight from the table."""
    rows = query(
        "SELECT queue_name, pgjobs_job_state(status, scheduled_at, attempts), "
        "count(*) FROM procrastinate_jobs GROUP BY 1, 2"
    )
    return {(queue, state): count for queue, state, count in rows}


def assert_stats_match_table(stats: Stats, query: Query) -> None:
    """Check every count of `stats` against a direct count of the table."""
    counts = table_counts(query)
    for queue in stats.queues:
        for field in COUNT_FIELDS:
            expected = counts.get((queue.queue, field), 0)
            assert getattr(queue, field) == expected, (queue.queue, field)
        assert queue.total == sum(getattr(queue, f) for f in COUNT_FIELDS)
    for field in COUNT_FIELDS:
        expected = sum(n for (_, state), n in counts.items() if state == field)
        assert getattr(stats.totals, field) == expected, field
    assert stats.totals.total == sum(counts.values())


def stable(model: Any) -> Any:
    """Dump `model` without the fields that change with the clock."""
    data = json.loads(model.model_dump_json())

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: strip(item)
                for key, item in value.items()
                if key not in ("generated_at", "oldest_ready_age_seconds")
            }
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    return strip(data)


def ids_of(page: JobPage) -> list[int]:
    return [job.id for job in page.jobs]


# -- statistics ---------------------------------------------------------


async def test_stats_empty_system(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)

    stats = await jobs.dashboard.get_stats()

    assert [queue.queue for queue in stats.queues] == list(QUEUES)
    assert all(queue.configured for queue in stats.queues)
    assert all(queue.total == 0 for queue in stats.queues)
    assert all(queue.oldest_ready_age_seconds is None for queue in stats.queues)
    assert stats.totals.total == 0
    assert stats.totals.oldest_ready_age_seconds is None
    assert stats.queues[0].settings is not None
    assert stats.queues[0].settings["retry_limit"] == QUEUES["ok"].retry_limit


async def test_stats_no_queues_configured(make_system: Any) -> None:
    jobs = make_system()

    stats = await jobs.dashboard.get_stats()

    assert stats.queues == []
    assert stats.totals.total == 0
    assert stats.generated_at.tzinfo is not None


async def test_stats_zero_job_queue_listed(make_system: Any, query: Query) -> None:
    jobs = make_dashboard_system(make_system)
    await send(jobs, "idle", 1)

    stats = await jobs.dashboard.get_stats()

    by_name = {queue.queue: queue for queue in stats.queues}
    assert by_name["ok"].total == 0
    assert by_name["idle"].queued == 1
    assert by_name["idle"].oldest_ready_age_seconds is not None
    assert by_name["idle"].oldest_ready_age_seconds >= 0
    assert_stats_match_table(stats, query)


async def test_stats_unconfigured_queue_flagged(make_system: Any, query: Query) -> None:
    legacy = make_system(queues={"legacy": pgjobs.queue()})
    await send(legacy, "legacy", 1)
    await send(legacy, "legacy", 2)
    jobs = make_dashboard_system(make_system)

    stats = await jobs.dashboard.get_stats()

    by_name = {queue.queue: queue for queue in stats.queues}
    assert by_name["legacy"].configured is False
    assert by_name["legacy"].queued == 2
    assert [queue.queue for queue in stats.queues][-1] == "legacy"
    assert by_name["idle"].configured is True
    assert_stats_match_table(stats, query)


async def test_stats_every_state(make_system: Any, query: Query) -> None:
    scenario = await build_scenario(make_system)

    stats = await scenario.jobs.dashboard.get_stats()

    for state in JOB_STATES:
        assert getattr(stats.totals, state) == 1, state
    assert stats.totals.total == len(JOB_STATES)
    assert_stats_match_table(stats, query)


async def test_stats_oldest_ready_ignores_future(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    await send(jobs, "idle", 1, delay=3600)

    stats = await jobs.dashboard.get_stats()

    idle = next(queue for queue in stats.queues if queue.queue == "idle")
    assert idle.scheduled == 1
    assert idle.oldest_ready_age_seconds is None


async def test_stats_oldest_ready_age_grows(make_system: Any, query: Query) -> None:
    jobs = make_dashboard_system(make_system)
    job_id = await send(jobs, "idle", 1)
    query(
        "UPDATE procrastinate_events SET at = now() - interval '1 hour' "
        "WHERE job_id = %s",
        job_id,
    )

    stats = await jobs.dashboard.get_stats()

    idle = next(queue for queue in stats.queues if queue.queue == "idle")
    assert idle.oldest_ready_age_seconds is not None
    assert idle.oldest_ready_age_seconds >= 3600


# -- job pages ----------------------------------------------------------


async def test_recent_jobs_empty_system(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)

    page = await jobs.dashboard.get_recent_jobs()
    later = await jobs.dashboard.get_recent_jobs(page=3)

    assert page.jobs == []
    assert page.total == 0
    assert page.pages == 1
    assert page.next_cursor is None
    assert page.total_is_estimate is False
    assert later.jobs == []
    assert later.page == 3


async def test_recent_jobs_newest_first(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    sent = [await send(jobs, "idle", n) for n in range(5)]

    page = await jobs.dashboard.get_recent_jobs()

    assert ids_of(page) == sent[::-1]
    assert page.jobs[0].state == "queued"
    assert page.jobs[0].queue == "idle"
    assert page.jobs[0].task == "idle"
    assert page.jobs[0].priority == 3
    assert page.jobs[0].created_at is not None
    assert page.jobs[0].started_at is None
    assert page.jobs[0].finished_at is None


async def test_recent_jobs_last_partial_page(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    sent = [await send(jobs, "idle", n) for n in range(7)]

    last = await jobs.dashboard.get_recent_jobs(page=3, per_page=3)
    past = await jobs.dashboard.get_recent_jobs(page=4, per_page=3)

    assert ids_of(last) == [sent[0]]
    assert last.pages == 3
    assert last.total == 7
    assert last.next_cursor is None
    assert past.jobs == []
    assert past.next_cursor is None
    assert past.pages == 3


async def test_recent_jobs_exact_pages(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    for n in range(6):
        await send(jobs, "idle", n)

    second = await jobs.dashboard.get_recent_jobs(page=2, per_page=3)

    assert len(second.jobs) == 3
    assert second.pages == 2
    assert second.next_cursor is None


async def test_recent_jobs_cursor_walk(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    sent = [await send(jobs, "idle", n) for n in range(10)]

    walked: list[int] = []
    pages: list[int] = []
    cursor = None
    while True:
        page = await jobs.dashboard.get_recent_jobs(per_page=4, cursor=cursor)
        walked.extend(ids_of(page))
        pages.append(page.page)
        cursor = page.next_cursor
        if cursor is None:
            break

    assert walked == sent[::-1]
    assert pages == [1, 2, 3]


async def test_recent_jobs_cursor_matches_offset(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    for n in range(9):
        await send(jobs, "idle", n)

    first = await jobs.dashboard.get_recent_jobs(per_page=4)
    by_cursor = await jobs.dashboard.get_recent_jobs(
        per_page=4, cursor=first.next_cursor
    )
    by_number = await jobs.dashboard.get_recent_jobs(per_page=4, page=2)

    assert ids_of(by_cursor) == ids_of(by_number)
    assert by_cursor.page == 2


async def test_recent_jobs_cursor_stable_with_new_jobs(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    sent = [await send(jobs, "idle", n) for n in range(10)]
    first = await jobs.dashboard.get_recent_jobs(per_page=4)

    newer = [await send(jobs, "idle", 100 + n) for n in range(5)]
    second = await jobs.dashboard.get_recent_jobs(per_page=4, cursor=first.next_cursor)
    third = await jobs.dashboard.get_recent_jobs(per_page=4, cursor=second.next_cursor)
    fresh = await jobs.dashboard.get_recent_jobs(per_page=4)

    assert ids_of(first) == sent[9:5:-1]
    assert ids_of(second) == sent[5:1:-1]
    assert ids_of(third) == sent[1::-1]
    assert third.next_cursor is None
    assert second.total == 15
    assert ids_of(fresh) == newer[:0:-1]


async def test_recent_jobs_cursor_with_filters(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    idle = []
    for n in range(6):
        idle.append(await send(jobs, "idle", n))
        await send(jobs, "idle", 100 + n, delay=3600)

    first = await jobs.dashboard.get_recent_jobs(
        per_page=4, queue="idle", state="queued"
    )
    second = await jobs.dashboard.get_recent_jobs(
        per_page=4, queue="idle", state="queued", cursor=first.next_cursor
    )

    assert ids_of(first) + ids_of(second) == idle[::-1]
    assert first.total == 6
    assert second.next_cursor is None


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"page": 0}, "page"),
        ({"page": -1}, "page"),
        ({"page": "2"}, "page"),
        ({"page": 1.5}, "page"),
        ({"page": True}, "page"),
        ({"per_page": 0}, "per_page"),
        ({"per_page": MAX_PER_PAGE + 1}, "per_page"),
        ({"per_page": None}, "per_page"),
        ({"page": MAX_OFFSET // 50 + 2, "per_page": 50}, "page"),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": "MC4y"}, "cursor"),
        ({"cursor": 12}, "cursor"),
        ({"state": "todo"}, "state"),
        ({"queue": 5}, "queue"),
        ({"search": "x" * 501}, "search"),
        ({"search": "a\x00b"}, "search"),
    ],
)
async def test_recent_jobs_invalid_arguments(
    make_system: Any, arguments: dict[str, Any], argument: str
) -> None:
    jobs = make_dashboard_system(make_system)

    with pytest.raises(DashboardQueryError) as raised:
        await jobs.dashboard.get_recent_jobs(**arguments)

    assert raised.value.argument == argument
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, pgjobs.PgJobsError)
    assert jobs.started is False


async def test_recent_jobs_per_page_maximum_reported(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)

    with pytest.raises(DashboardQueryError, match="at most 500") as raised:
        await jobs.dashboard.get_recent_jobs(per_page=501)

    assert raised.value.maximum == MAX_PER_PAGE
    assert raised.value.value == 501


async def test_recent_jobs_deepest_page_allowed(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    deepest = MAX_OFFSET // 50 + 1

    page = await jobs.dashboard.get_recent_jobs(page=deepest, per_page=50)

    assert page.jobs == []
    assert page.page == deepest


async def test_recent_jobs_filter_by_state(make_system: Any) -> None:
    scenario = await build_scenario(make_system)

    for state in JOB_STATES:
        page = await scenario.jobs.dashboard.get_recent_jobs(state=state)
        assert ids_of(page) == [scenario.ids[state]], state
        assert page.total == 1, state
        assert page.jobs[0].state == state


async def test_recent_jobs_filter_by_queue(make_system: Any) -> None:
    scenario = await build_scenario(make_system)
    ids = scenario.ids

    idle = await scenario.jobs.dashboard.get_recent_jobs(queue="idle")
    scheduled = await scenario.jobs.dashboard.get_recent_jobs(
        queue="idle", state="scheduled"
    )
    missing = await scenario.jobs.dashboard.get_recent_jobs(queue="nope")

    assert ids_of(idle) == sorted(
        [ids["queued"], ids["scheduled"], ids["cancelled"]], reverse=True
    )
    assert idle.total == 3
    assert ids_of(scheduled) == [ids["scheduled"]]
    assert missing.jobs == []
    assert missing.total == 0


async def test_recent_jobs_filter_by_task(make_system: Any) -> None:
    scenario = await build_scenario(make_system)

    page = await scenario.jobs.dashboard.get_recent_jobs(task="ok")

    assert ids_of(page) == [scenario.ids["succeeded"]]
    assert page.total == 1
    assert page.total_is_estimate is False


async def test_recent_jobs_search(make_system: Any) -> None:
    scenario = await build_scenario(make_system)
    ids = scenario.ids
    dashboard = scenario.jobs.dashboard

    by_id = await dashboard.get_recent_jobs(search=str(ids["failed"]))
    by_hash_id = await dashboard.get_recent_jobs(search=f"#{ids['failed']}")
    by_key = await dashboard.get_recent_jobs(search="idle-key")
    by_nested = await dashboard.get_recent_jobs(search="teal")
    by_number = await dashboard.get_recent_jobs(search="1005")
    partial = await dashboard.get_recent_jobs(search="tea")
    quoted = await dashboard.get_recent_jobs(search='te"al\\')
    filtered = await dashboard.get_recent_jobs(search="1005", state="succeeded")

    assert ids_of(by_id) == [ids["failed"]]
    assert ids_of(by_hash_id) == [ids["failed"]]
    assert ids_of(by_key) == [ids["queued"]]
    assert ids_of(by_nested) == [ids["succeeded"]]
    assert ids_of(by_number) == [ids["failed"]]
    assert by_number.total == 1
    assert partial.jobs == []
    assert quoted.jobs == []
    assert filtered.jobs == []


async def test_recent_jobs_search_count_limit(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    await jobs.send_many("idle", [{"tag": "same"}] * 12)

    page = await jobs.dashboard.get_recent_jobs(search="same", per_page=5)

    assert page.total == 12
    assert page.pages == 3
    assert page.total_is_estimate is False
    assert page.next_cursor is not None


async def test_recent_jobs_task_count_limit(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    await jobs.send_many("idle", [{}] * (COUNT_LIMIT + 1))

    page = await jobs.dashboard.get_recent_jobs(task="idle", per_page=10)
    exact = await jobs.dashboard.get_recent_jobs(queue="idle", per_page=10)

    assert page.total == COUNT_LIMIT
    assert page.total_is_estimate is True
    assert len(page.jobs) == 10
    assert exact.total == COUNT_LIMIT + 1
    assert exact.total_is_estimate is False


async def test_recent_jobs_search_past_end(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)
    await jobs.send_many("idle", [{"tag": "same"}] * 3)

    page = await jobs.dashboard.get_recent_jobs(search="same", per_page=2, page=3)

    assert page.jobs == []
    assert page.total == 3
    assert page.pages == 2


# -- job detail ---------------------------------------------------------


async def test_job_by_id_missing(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)

    assert await jobs.dashboard.get_job_by_id(123456) is None
    assert await jobs.dashboard.get_job_by_id(2**70) is None
    assert await jobs.dashboard.get_job_by_id(-1) is None


async def test_job_by_id_rejects_non_integer(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)

    with pytest.raises(DashboardQueryError):
        await jobs.dashboard.get_job_by_id("12")  # type: ignore[arg-type]


async def test_job_by_id_failed(make_system: Any) -> None:
    scenario = await build_scenario(make_system)

    detail = await scenario.jobs.dashboard.get_job_by_id(scenario.ids["failed"])

    assert detail is not None
    assert detail.state == "failed"
    assert detail.queue == "bad"
    assert detail.payload == {"n": 1005}
    assert detail.attempts == 1
    assert detail.retry_limit == 0
    assert detail.created_at is not None
    assert detail.started_at is not None
    assert detail.finished_at is not None
    assert detail.created_at <= detail.started_at <= detail.finished_at
    assert [event.type for event in detail.events] == [
        "deferred",
        "started",
        "failed",
    ]
    [attempt] = detail.attempt_history
    assert attempt.attempt == 1
    assert attempt.outcome == "failed"
    assert attempt.error_type == "ValueError"
    assert attempt.error_message == "boom 1005"
    assert attempt.traceback is not None
    assert "ValueError: boom 1005" in attempt.traceback
    assert attempt.worker_name is not None
    assert attempt.duration_seconds is not None
    assert attempt.duration_seconds >= 0


async def test_job_by_id_succeeded_result(make_system: Any) -> None:
    scenario = await build_scenario(make_system)

    detail = await scenario.jobs.dashboard.get_job_by_id(scenario.ids["succeeded"])

    assert detail is not None
    assert detail.result == {"echo": {"n": 1004, "tags": {"color": "teal"}}}
    assert [attempt.outcome for attempt in detail.attempt_history] == ["succeeded"]
    assert detail.attempt_history[0].result == detail.result


async def test_job_by_id_retrying(make_system: Any) -> None:
    scenario = await build_scenario(make_system)

    detail = await scenario.jobs.dashboard.get_job_by_id(scenario.ids["retrying"])

    assert detail is not None
    assert detail.state == "retrying"
    assert detail.attempts == 1
    assert detail.retry_limit == 3
    assert detail.finished_at is None
    assert detail.scheduled_at is not None
    assert detail.scheduled_at > datetime.datetime.now(datetime.UTC)
    assert [attempt.outcome for attempt in detail.attempt_history] == ["failed"]
    assert detail.attempt_history[0].error_type == "ConnectionError"


async def test_job_by_id_running_and_aborted(make_system: Any) -> None:
    scenario = await build_scenario(make_system)
    dashboard = scenario.jobs.dashboard

    running = await dashboard.get_job_by_id(scenario.ids["running"])
    aborted = await dashboard.get_job_by_id(scenario.ids["aborted"])

    assert running is not None
    assert running.started_at is not None
    assert running.finished_at is None
    assert [attempt.outcome for attempt in running.attempt_history] == ["running"]
    assert aborted is not None
    assert aborted.finished_at is not None
    assert "abort_requested" in [event.type for event in aborted.events]
    assert [attempt.outcome for attempt in aborted.attempt_history] == ["aborted"]


async def test_job_by_id_queued_and_scheduled(make_system: Any) -> None:
    scenario = await build_scenario(make_system)
    dashboard = scenario.jobs.dashboard

    queued = await dashboard.get_job_by_id(scenario.ids["queued"])
    scheduled = await dashboard.get_job_by_id(scenario.ids["scheduled"])

    assert queued is not None
    assert queued.singleton_key == "idle-key"
    assert queued.priority == 3
    assert queued.attempt_history == []
    assert queued.started_at is None
    assert scheduled is not None
    assert scheduled.state == "scheduled"
    assert [event.type for event in scheduled.events] == ["deferred", "scheduled"]


# -- get_data, sync twins, JSON, close ---------------------------------


async def test_get_data_stats_and_page(make_system: Any, query: Query) -> None:
    scenario = await build_scenario(make_system)

    data = await scenario.jobs.dashboard.get_data(per_page=3, state="failed")

    assert_stats_match_table(data.stats, query)
    assert ids_of(data.page) == [scenario.ids["failed"]]
    assert data.page.total == 1
    assert data.page.total_is_estimate is False


async def test_get_data_total_matches_recent_jobs(make_system: Any) -> None:
    scenario = await build_scenario(make_system)
    dashboard = scenario.jobs.dashboard

    for arguments in ({}, {"queue": "idle"}, {"state": "queued"}, {"queue": "x"}):
        data = await dashboard.get_data(**arguments)
        page = await dashboard.get_recent_jobs(**arguments)
        assert data.page == page, arguments


async def test_sync_twins_equal_async(make_system: Any) -> None:
    scenario = await build_scenario(make_system)
    dashboard = scenario.jobs.dashboard
    sync = scenario.jobs.dashboard_sync
    job_id = scenario.ids["failed"]

    pairs = [
        (await dashboard.get_stats(), await asyncio.to_thread(sync.get_stats)),
        (
            await dashboard.get_recent_jobs(per_page=3),
            await asyncio.to_thread(lambda: sync.get_recent_jobs(per_page=3)),
        ),
        (
            await dashboard.get_data(queue="idle"),
            await asyncio.to_thread(lambda: sync.get_data(queue="idle")),
        ),
        (
            await dashboard.get_job_by_id(job_id),
            await asyncio.to_thread(lambda: sync.get_job_by_id(job_id)),
        ),
    ]

    for async_result, sync_result in pairs:
        assert stable(async_result) == stable(sync_result)


async def test_sync_twin_errors_equal(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)

    with pytest.raises(DashboardQueryError):
        await asyncio.to_thread(lambda: jobs.dashboard_sync.get_recent_jobs(page=0))
    with pytest.raises(pgjobs.JobNotFound):
        await asyncio.to_thread(lambda: jobs.dashboard_sync.rerun_job(999))
    assert await asyncio.to_thread(lambda: jobs.dashboard_sync.get_job_by_id(9)) is None


def test_sync_dashboard_without_event_loop(dsn: str) -> None:
    jobs = pgjobs.create_job_system({"dsn": dsn, "queues": {"q": pgjobs.queue()}})
    try:
        stats = jobs.dashboard_sync.get_stats()
        page = jobs.dashboard_sync.get_recent_jobs()
    finally:
        jobs.stop_sync()

    assert [queue.queue for queue in stats.queues] == ["q"]
    assert page.jobs == []


async def test_results_serialise_to_json(make_system: Any) -> None:
    scenario = await build_scenario(make_system)
    dashboard = scenario.jobs.dashboard

    results = [
        await dashboard.get_stats(),
        await dashboard.get_recent_jobs(),
        await dashboard.get_data(),
        await dashboard.get_job_by_id(scenario.ids["failed"]),
        await dashboard.cancel_job(scenario.ids["queued"]),
        await dashboard.rerun_job(scenario.ids["failed"]),
        await dashboard.prune(older_than=3600),
    ]

    for result in results:
        assert result is not None
        assert isinstance(json.loads(result.model_dump_json()), dict)


async def test_close_twice(make_system: Any) -> None:
    jobs = make_dashboard_system(make_system)

    await jobs.dashboard.close()
    await jobs.dashboard.close()
    jobs.dashboard_sync.close()
    jobs.dashboard_sync.close()

    assert jobs.started is False
    assert (await jobs.dashboard.get_stats()).totals.total == 0
