"""Cron schedules: seconds first, time zones with DST, one job per tick."""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

import pydantic
import pytest

import pgjobs
from pgjobs.bootstrap import ZonedCron, ZonedPeriodicTask
from tests.conftest import wait_for

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
UTC = zoneinfo.ZoneInfo("UTC")


def next_ticks(
    cron: str, start: datetime.datetime, count: int, *, seconds_first: bool = False
) -> list[datetime.datetime]:
    """Return the next ticks after `start`, computed the way procrastinate does."""
    zone = start.tzinfo
    assert isinstance(zone, zoneinfo.ZoneInfo)
    iterator = ZonedCron(cron, zone, seconds_first=seconds_first)
    iterator.set_current(start_time=start.timestamp())
    return [
        datetime.datetime.fromtimestamp(iterator.get_next(ret_type=float), UTC)
        for _ in range(count)
    ]


def utc(*args: int) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=UTC)


def test_cron_daily_local_time_across_dst() -> None:
    start = datetime.datetime(2024, 3, 29, 12, tzinfo=PARIS)

    assert next_ticks("0 9 * * *", start, 3) == [
        utc(2024, 3, 30, 8),
        utc(2024, 3, 31, 7),
        utc(2024, 4, 1, 7),
    ]


def test_cron_fixed_hour_once_going_back() -> None:
    start = datetime.datetime(2024, 10, 26, 12, tzinfo=PARIS)

    # 02:30 happens twice on 27 October; the schedule runs on the first.
    assert next_ticks("30 2 * * *", start, 2) == [
        utc(2024, 10, 27, 0, 30),
        utc(2024, 10, 28, 1, 30),
    ]


def test_cron_hourly_repeats_hour_going_back() -> None:
    start = datetime.datetime(2024, 10, 27, 0, 30, tzinfo=PARIS)

    assert next_ticks("0 * * * *", start, 4) == [
        utc(2024, 10, 26, 23),
        utc(2024, 10, 27, 0),
        utc(2024, 10, 27, 1),
        utc(2024, 10, 27, 2),
    ]


def test_cron_skipped_hour_runs_after_gap() -> None:
    start = datetime.datetime(2024, 3, 30, 12, tzinfo=PARIS)

    # 02:30 does not exist on 31 March; the tick runs at 03:00 local.
    assert next_ticks("30 2 * * *", start, 2) == [
        utc(2024, 3, 31, 1),
        utc(2024, 4, 1, 0, 30),
    ]


def test_cron_previous_tick_skips_repeat() -> None:
    iterator = ZonedCron("30 2 * * *", PARIS, seconds_first=False)
    after_repeat = datetime.datetime(2024, 10, 27, 2, 45, fold=1, tzinfo=PARIS)
    iterator.set_current(start_time=after_repeat.timestamp())
    previous = iterator.get_prev(ret_type=float)

    assert datetime.datetime.fromtimestamp(previous, UTC) == utc(2024, 10, 27, 0, 30)


def test_cron_seconds_field_first() -> None:
    start = datetime.datetime(2024, 1, 1, 12, 0, 1, tzinfo=UTC)

    assert next_ticks("*/20 * * * * *", start, 3, seconds_first=True) == [
        utc(2024, 1, 1, 12, 0, 20),
        utc(2024, 1, 1, 12, 0, 40),
        utc(2024, 1, 1, 12, 1, 0),
    ]


def test_cron_six_fields_minute_second() -> None:
    start = datetime.datetime(2024, 1, 1, 12, tzinfo=UTC)

    assert next_ticks("15 30 9 * * *", start, 1, seconds_first=True) == [
        utc(2024, 1, 2, 9, 30, 15)
    ]


@pytest.mark.parametrize("cron", ["* * * *", "* * * * * * *", "61 * * * *", "x"])
def test_schedule_invalid_cron_rejected(cron: str) -> None:
    with pytest.raises(pgjobs.ConfigError, match="cron"):
        pgjobs.create_job_system(
            {
                "dsn": "postgresql://localhost/db",
                "queues": {"q": pgjobs.queue()},
                "schedules": {"s": {"queue": "q", "cron": cron}},
            }
        )


async def test_schedule_registered_with_zone(make_system: Any) -> None:
    jobs = make_system(
        queues={"q": pgjobs.queue()},
        schedules={
            "nightly": {
                "queue": "q",
                "cron": "0 30 2 * * *",
                "timezone": "Europe/Paris",
            }
        },
    )
    await jobs.init_jobs({"q": lambda payload: None}, start_worker=False)

    [task] = jobs.app.periodic_registry.periodic_tasks.values()
    assert isinstance(task, ZonedPeriodicTask)
    assert (task.periodic_id, task.timezone, task.seconds_first) == (
        "nightly",
        "Europe/Paris",
        True,
    )
    assert task.croniter.zone == PARIS


async def test_schedule_one_job_per_tick(make_system: Any, query: Any) -> None:
    received: list[tuple[Any, float | None]] = []

    def handler(payload: dict[str, Any], context: pgjobs.JobContext) -> None:
        received.append((payload, context.scheduled_for))

    config = {
        "queues": {"ticks": pgjobs.queue(concurrency=2)},
        "schedules": {
            "every-second": {
                "queue": "ticks",
                "cron": "* * * * * *",
                "payload": {"a": 1},
            }
        },
    }
    first = make_system(**config)
    second = make_system(**config)
    await first.init_jobs({"ticks": handler})
    await second.init_jobs({"ticks": handler})

    def ticks() -> list[tuple[int, int]]:
        return query(
            "SELECT (args ->> 'timestamp')::bigint, count(*) FROM procrastinate_jobs "
            "GROUP BY 1 ORDER BY 1"
        )

    await wait_for(lambda: len(ticks()) >= 4)
    await first.stop()
    await second.stop()

    counted = ticks()
    timestamps = [timestamp for timestamp, _ in counted]
    assert all(count == 1 for _, count in counted)
    assert timestamps == list(range(timestamps[0], timestamps[-1] + 1))
    assert query("SELECT DISTINCT args -> 'payload' FROM procrastinate_jobs") == [
        ({"a": 1},)
    ]
    assert all(when is not None and when in timestamps for _, when in received)


class Report(pydantic.BaseModel):
    kind: str = pydantic.Field(alias="type")


async def test_schedule_model_payload_loads(make_system: Any) -> None:
    received: list[Any] = []
    reports = pgjobs.queue(Report)

    async def handler(payload: Report) -> None:
        received.append(payload)

    jobs = make_system(
        queues={"reports": reports},
        schedules={
            "tick": {
                "queue": "reports",
                "cron": "* * * * * *",
                "payload": Report(type="daily"),
            }
        },
    )
    await jobs.init_jobs({reports: handler})
    await wait_for(lambda: received)

    assert received[0] == Report(type="daily")


def defer_tick(query: Any, timestamp: int) -> int | None:
    """Defer tick `timestamp` of schedule `s` as procrastinate's deferrer does."""
    [(job_id,)] = query(
        "SELECT procrastinate_defer_periodic_job_v2("
        "'q', NULL, NULL, 'q', 0, 's', %s, '{}'::jsonb)",
        timestamp,
    )
    return job_id  # type: ignore[no-any-return]


async def test_schedule_late_tick_skipped(make_system: Any, query: Any) -> None:
    jobs = make_system(queues={"q": pgjobs.queue()})
    await jobs.init_jobs({"q": print}, start_worker=False)

    first = defer_tick(query, 1_000)
    second = defer_tick(query, 1_001)
    # A worker whose clock runs behind defers the older tick again after its
    # peer has moved on and procrastinate has dropped the older tick's row.
    late = defer_tick(query, 1_000)
    again = defer_tick(query, 1_001)

    assert first is not None
    assert second is not None
    assert late is None
    assert again is None
    assert query("SELECT count(*) FROM procrastinate_jobs") == [(2,)]
