"""Sending jobs: options, transactions on the caller's connection, bad input."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import enum
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pydantic
import pytest

import pgjobs
from tests.conftest import wait_for

Query = Callable[..., list[tuple[Any, ...]]]


class Email(pydantic.BaseModel):
    to: str
    score: float = 0.0


class Other(pydantic.BaseModel):
    to: str


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Rich(pydantic.BaseModel):
    when: datetime.datetime
    ident: uuid.UUID
    amount: decimal.Decimal
    colour: Colour
    day: datetime.date
    tags: list[str] = []


class Aliased(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    user_id: int = pydantic.Field(alias="userId")


def count_jobs(query: Query) -> int:
    return int(query("SELECT count(*) FROM procrastinate_jobs")[0][0])


def job_row(query: Query, job_id: int | None) -> tuple[Any, ...]:
    rows = query(
        "SELECT queue_name, task_name, args, status, priority, lock, queueing_lock "
        "FROM procrastinate_jobs WHERE id = %s",
        job_id,
    )
    assert len(rows) == 1
    return rows[0]


QUEUES: dict[str, Any] = {
    "plain": pgjobs.queue(),
    "email": pgjobs.queue(Email, priority=5),
}


async def test_send_writes_job(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    job_id = await jobs.send("plain", {"a": 1})
    assert job_row(query, job_id) == (
        "plain",
        "plain",
        {"payload": {"a": 1}},
        "todo",
        0,
        None,
        None,
    )


async def test_send_by_definition(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    job_id = await jobs.send(QUEUES["email"], Email(to="a@example.com"))
    row = job_row(query, job_id)
    assert row[0] == "email"
    assert row[2] == {"payload": {"to": "a@example.com", "score": 0.0}}


async def test_send_queue_priority_default(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    job_id = await jobs.send("email", {"to": "a"})
    assert job_row(query, job_id)[4] == 5


async def test_send_priority_override(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    job_id = await jobs.send("email", {"to": "a"}, priority=-3)
    assert job_row(query, job_id)[4] == -3


async def test_send_lock_and_key(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    job_id = await jobs.send("plain", {}, lock="account-1", singleton_key="k-1")
    row = job_row(query, job_id)
    assert row[5] == "account-1"
    assert row[6] == "k-1"


@pytest.mark.parametrize("delay", [60, 60.0, datetime.timedelta(minutes=1)])
async def test_send_delay(make_system: Any, query: Query, delay: Any) -> None:
    jobs = make_system(queues=QUEUES)
    job_id = await jobs.send("plain", {}, delay=delay)
    [(ahead,)] = query(
        "SELECT scheduled_at - now() FROM procrastinate_jobs WHERE id = %s", job_id
    )
    assert datetime.timedelta(seconds=50) < ahead
    assert ahead <= datetime.timedelta(seconds=60)


async def test_send_zero_delay(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    job_id = await jobs.send("plain", {}, delay=0)
    [(scheduled,)] = query(
        "SELECT scheduled_at FROM procrastinate_jobs WHERE id = %s", job_id
    )
    assert scheduled is None


async def test_send_run_at(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    zone = datetime.timezone(datetime.timedelta(hours=5))
    run_at = datetime.datetime(2031, 1, 2, 3, 4, 5, tzinfo=zone)
    job_id = await jobs.send("plain", {}, run_at=run_at)
    [(scheduled,)] = query(
        "SELECT scheduled_at FROM procrastinate_jobs WHERE id = %s", job_id
    )
    assert scheduled == run_at


async def test_send_many_writes_all(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    ids = await jobs.send_many("email", [{"to": str(n)} for n in range(5)])
    rows = query(
        "SELECT id, args->'payload'->>'to' FROM procrastinate_jobs ORDER BY id"
    )
    assert rows == [(job_id, str(n)) for n, job_id in enumerate(ids)]


async def test_send_many_options(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    ids = await jobs.send_many(
        "plain", [{}, {}], priority=7, lock="l", singleton_keys=["a", None]
    )
    assert [job_row(query, job_id)[4:] for job_id in ids] == [
        (7, "l", "a"),
        (7, "l", None),
    ]


async def test_send_many_empty(make_system: Any) -> None:
    jobs = make_system(queues=QUEUES)
    assert await jobs.send_many("plain", []) == []
    assert jobs.started is False


async def test_send_sync_from_thread(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    job_id = await asyncio.to_thread(jobs.send_sync, "plain", {"b": 2})
    assert job_row(query, job_id)[2] == {"payload": {"b": 2}}


async def test_send_many_sync_from_thread(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    ids = await asyncio.to_thread(jobs.send_many_sync, "plain", [{}, {}, {}])
    assert len(set(ids)) == 3
    assert count_jobs(query) == 3


async def test_send_round_trips_types(make_system: Any) -> None:
    received: list[Rich] = []
    jobs = make_system(queues={"rich": pgjobs.queue(Rich)})
    await jobs.init_jobs({"rich": received.append})
    sent = Rich(
        when=datetime.datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC),
        ident=uuid.uuid4(),
        amount=decimal.Decimal("12.3400"),
        colour=Colour.BLUE,
        day=datetime.date(2024, 2, 29),
        tags=["é", "\u2603"],
    )
    await jobs.send("rich", sent)
    await wait_for(lambda: received)
    assert received == [sent]


async def test_send_round_trips_aliases(make_system: Any) -> None:
    received: list[Aliased] = []
    jobs = make_system(queues={"aliased": pgjobs.queue(Aliased)})
    await jobs.init_jobs({"aliased": received.append})
    await jobs.send("aliased", Aliased(userId=7))
    await wait_for(lambda: received)
    assert received == [Aliased(userId=7)]


async def test_send_plain_payload_to_json(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    ident = uuid.UUID(int=1)
    job_id = await jobs.send(
        "plain", {"id": ident, "at": datetime.date(2024, 1, 2), "n": (1, 2)}
    )
    assert job_row(query, job_id)[2] == {
        "payload": {"id": str(ident), "at": "2024-01-02", "n": [1, 2]}
    }


# -- bad input: a specific error and nothing written ------------------------

NAIVE = datetime.datetime(2030, 1, 1)
AWARE = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"x": value}
    return value


# (case id, queue, payload, send options, error type, field or None, text)
BAD_SENDS: list[tuple[str, Any, Any, dict[str, Any], type[Exception], Any, str]] = [
    ("unknown_queue", "nope", {}, {}, pgjobs.QueueNotFound, None, "'email', 'plain'"),
    ("queue_not_str", 3, {}, {}, pgjobs.QueueNotFound, None, "'plain'"),
    (
        "nul_value",
        "plain",
        {"a": "x\x00y"},
        {},
        pgjobs.PayloadValidationError,
        "payload.a",
        "NUL",
    ),
    (
        "nul_key",
        "plain",
        {"a\x00": 1},
        {},
        pgjobs.PayloadValidationError,
        "payload",
        "NUL",
    ),
    (
        "nul_nested",
        "plain",
        {"a": [1, {"b": "\x00"}]},
        {},
        pgjobs.PayloadValidationError,
        "payload.a[1].b",
        "NUL",
    ),
    (
        "nul_model",
        "email",
        {"to": "a\x00"},
        {},
        pgjobs.PayloadValidationError,
        "payload.to",
        "NUL",
    ),
    (
        "nul_model_instance",
        "email",
        Email(to="\x00"),
        {},
        pgjobs.PayloadValidationError,
        "payload.to",
        "NUL",
    ),
    (
        "nan",
        "plain",
        {"a": float("nan")},
        {},
        pgjobs.PayloadValidationError,
        "payload.a",
        "NaN",
    ),
    (
        "inf",
        "plain",
        {"a": [float("inf")]},
        {},
        pgjobs.PayloadValidationError,
        "payload.a[0]",
        "inf",
    ),
    (
        "nan_model",
        "email",
        {"to": "a", "score": float("nan")},
        {},
        pgjobs.PayloadValidationError,
        "payload.score",
        "NaN",
    ),
    (
        "surrogate",
        "plain",
        {"a": "\ud800"},
        {},
        pgjobs.PayloadValidationError,
        "payload.a",
        "surrogate",
    ),
    (
        "too_deep",
        "plain",
        deep(100),
        {},
        pgjobs.PayloadValidationError,
        None,
        "deeper than 64",
    ),
    (
        "non_str_key",
        "plain",
        {1: "a"},
        {},
        pgjobs.PayloadValidationError,
        "payload",
        "non-string key",
    ),
    (
        "not_object",
        "plain",
        [1, 2],
        {},
        pgjobs.PayloadValidationError,
        None,
        "got list",
    ),
    (
        "not_json",
        "plain",
        {"a": object()},
        {},
        pgjobs.PayloadValidationError,
        None,
        "JSON",
    ),
    (
        "model_field",
        "email",
        {"to": 5},
        {},
        pgjobs.PayloadValidationError,
        "payload.to",
        "got 5",
    ),
    (
        "model_missing",
        "email",
        {},
        {},
        pgjobs.PayloadValidationError,
        "payload.to",
        "Field required",
    ),
    (
        "wrong_model",
        "email",
        Other(to="a"),
        {},
        pgjobs.PayloadValidationError,
        None,
        "expected a Email",
    ),
    (
        "model_scalar",
        "email",
        "a@example.com",
        {},
        pgjobs.PayloadValidationError,
        None,
        "got str",
    ),
    (
        "too_big",
        "plain",
        {"a": "x" * 2000},
        {},
        pgjobs.PayloadValidationError,
        "payload",
        "max_payload_bytes",
    ),
    (
        "naive_run_at",
        "plain",
        {},
        {"run_at": NAIVE},
        pgjobs.SendOptionError,
        None,
        "no time zone",
    ),
    (
        "run_at_type",
        "plain",
        {},
        {"run_at": "2030-01-01"},
        pgjobs.SendOptionError,
        None,
        "must be a datetime",
    ),
    (
        "negative_delay",
        "plain",
        {},
        {"delay": -1},
        pgjobs.SendOptionError,
        None,
        "got -1",
    ),
    (
        "nan_delay",
        "plain",
        {},
        {"delay": float("nan")},
        pgjobs.SendOptionError,
        None,
        "nan",
    ),
    (
        "delay_type",
        "plain",
        {},
        {"delay": "5"},
        pgjobs.SendOptionError,
        None,
        "got str",
    ),
    (
        "delay_and_run_at",
        "plain",
        {},
        {"delay": 5, "run_at": AWARE},
        pgjobs.SendOptionError,
        None,
        "not both",
    ),
    (
        "priority_type",
        "plain",
        {},
        {"priority": "high"},
        pgjobs.SendOptionError,
        None,
        "'high'",
    ),
    (
        "priority_bool",
        "plain",
        {},
        {"priority": True},
        pgjobs.SendOptionError,
        None,
        "got bool",
    ),
    (
        "priority_range",
        "plain",
        {},
        {"priority": 2**40},
        pgjobs.SendOptionError,
        None,
        "out of range",
    ),
    (
        "key_empty",
        "plain",
        {},
        {"singleton_key": ""},
        pgjobs.SendOptionError,
        None,
        "1 to 255",
    ),
    (
        "key_long",
        "plain",
        {},
        {"singleton_key": "k" * 256},
        pgjobs.SendOptionError,
        None,
        "got 256",
    ),
    (
        "key_nul",
        "plain",
        {},
        {"singleton_key": "a\x00"},
        pgjobs.SendOptionError,
        None,
        "NUL",
    ),
    (
        "key_type",
        "plain",
        {},
        {"singleton_key": 5},
        pgjobs.SendOptionError,
        None,
        "got int",
    ),
    ("lock_nul", "plain", {}, {"lock": "\x00"}, pgjobs.SendOptionError, None, "NUL"),
]


@pytest.mark.parametrize(
    ("queue", "payload", "options", "error", "field", "text"),
    [case[1:] for case in BAD_SENDS],
    ids=[case[0] for case in BAD_SENDS],
)
async def test_send_rejects_bad_input(
    make_system: Any,
    query: Query,
    queue: Any,
    payload: Any,
    options: dict[str, Any],
    error: type[Exception],
    field: str | None,
    text: str,
) -> None:
    jobs = make_system(queues=QUEUES, max_payload_bytes=1000)
    with pytest.raises(error) as caught:
        await jobs.send(queue, payload, **options)
    assert text in str(caught.value)
    if field is not None:
        assert getattr(caught.value, "field", None) == field
    assert count_jobs(query) == 0


@pytest.mark.parametrize(
    ("queue", "payload", "options", "error", "field", "text"),
    [case[1:] for case in BAD_SENDS],
    ids=[case[0] for case in BAD_SENDS],
)
async def test_send_sync_rejects_bad_input(
    make_system: Any,
    query: Query,
    queue: Any,
    payload: Any,
    options: dict[str, Any],
    error: type[Exception],
    field: str | None,
    text: str,
) -> None:
    jobs = make_system(queues=QUEUES, max_payload_bytes=1000)
    with pytest.raises(error) as caught:
        await asyncio.to_thread(jobs.send_sync, queue, payload, **options)
    assert text in str(caught.value)
    assert count_jobs(query) == 0


async def test_send_error_names_queue(make_system: Any) -> None:
    jobs = make_system(queues=QUEUES)
    with pytest.raises(pgjobs.PayloadValidationError) as caught:
        await jobs.send("email", {"to": 5})
    assert str(caught.value).startswith("invalid payload for queue 'email': ")


async def test_send_unknown_definition(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    with pytest.raises(pgjobs.QueueNotFound, match="not in the config"):
        await jobs.send(pgjobs.queue(Email), Email(to="a"))
    assert count_jobs(query) == 0


async def test_send_many_bad_payload_writes_nothing(
    make_system: Any, query: Query
) -> None:
    jobs = make_system(queues=QUEUES)
    payloads = [{"to": "a"}, {"to": "b"}, {"to": "\x00"}, {"to": "d"}]
    with pytest.raises(pgjobs.PayloadValidationError) as caught:
        await jobs.send_many("email", payloads)
    assert caught.value.field == "payloads[2].to"
    assert "payloads[2]" in str(caught.value)
    assert count_jobs(query) == 0


@pytest.mark.parametrize(
    ("payloads", "options", "text"),
    [
        ({"to": "a"}, {}, "got dict"),
        ("abc", {}, "got str"),
        ([{}, {}], {"singleton_keys": ["a"]}, "one key"),
        ([{}], {"singleton_keys": "a"}, "one key"),
    ],
    ids=["mapping", "string", "keys_length", "keys_string"],
)
async def test_send_many_rejects_options(
    make_system: Any, query: Query, payloads: Any, options: dict[str, Any], text: str
) -> None:
    jobs = make_system(queues=QUEUES)
    with pytest.raises(pgjobs.SendOptionError, match=text):
        await jobs.send_many("plain", payloads, **options)
    assert count_jobs(query) == 0


async def test_send_schema_missing(empty_dsn: str) -> None:
    jobs = pgjobs.create_job_system({"dsn": empty_dsn, "queues": QUEUES})
    try:
        with pytest.raises(pgjobs.SchemaError, match="migrate"):
            await jobs.send("plain", {})
    finally:
        await jobs.stop()


async def test_send_sync_in_loop_rejected(make_system: Any, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    with pytest.raises(pgjobs.UsageError, match="running event loop"):
        jobs.send_sync("plain", {})
    assert count_jobs(query) == 0


# -- the caller's own connection --------------------------------------------


async def test_send_connection_rollback(
    make_system: Any, dsn: str, query: Query
) -> None:
    jobs = make_system(queues=QUEUES)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute("SHOW search_path")
        assert "pgjobs" not in str(await cursor.fetchone())
        job_id = await jobs.send("plain", {"a": 1}, connection=conn)
        assert isinstance(job_id, int)
        assert count_jobs(query) == 0
        await conn.rollback()
    assert count_jobs(query) == 0
    assert jobs.started is False


async def test_send_connection_commit(make_system: Any, dsn: str, query: Query) -> None:
    jobs = make_system(queues=QUEUES)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.transaction():
            job_id = await jobs.send("plain", {"a": 1}, connection=conn)
            await conn.execute("SELECT 1")
        assert job_row(query, job_id)[2] == {"payload": {"a": 1}}


async def test_send_connection_transaction_block_rollback(
    make_system: Any, dsn: str, query: Query
) -> None:
    jobs = make_system(queues=QUEUES)
    conn = await psycopg.AsyncConnection.connect(dsn)
    async with conn, conn.transaction(force_rollback=True):
        ids = await jobs.send_many("plain", [{}, {}], connection=conn)
    assert len(ids) == 2
    assert count_jobs(query) == 0


async def test_send_connection_autocommit(
    make_system: Any, dsn: str, query: Query
) -> None:
    jobs = make_system(queues=QUEUES)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await jobs.send("plain", {}, connection=conn)
    assert count_jobs(query) == 1


async def test_send_connection_dict_rows(
    make_system: Any, dsn: str, query: Query
) -> None:
    jobs = make_system(queues=QUEUES)
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, row_factory=psycopg.rows.dict_row
    ) as conn:
        job_id = await jobs.send("plain", {}, connection=conn)
    assert job_row(query, job_id)[0] == "plain"


async def test_send_connection_taken_key_keeps_transaction(
    make_system: Any, dsn: str, query: Query
) -> None:
    jobs = make_system(queues=QUEUES)
    await jobs.send("plain", {}, singleton_key="k")
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await conn.execute("CREATE TEMP TABLE mine (n int)")
        assert await jobs.send("plain", {}, singleton_key="k", connection=conn) is None
        await conn.execute("INSERT INTO mine VALUES (1)")
        cursor = await conn.execute("SELECT count(*) FROM mine")
        assert await cursor.fetchone() == (1,)
        await conn.commit()
    assert count_jobs(query) == 1


async def test_send_connection_taken_key_idle(
    make_system: Any, dsn: str, query: Query
) -> None:
    jobs = make_system(queues=QUEUES)
    await jobs.send("plain", {}, singleton_key="k")
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        with pytest.raises(pgjobs.DuplicateJob, match="'k'"):
            await jobs.send(
                "plain",
                {},
                singleton_key="k",
                connection=conn,
                raise_on_duplicate=True,
            )
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert count_jobs(query) == 1


async def test_send_connection_failed_transaction(
    make_system: Any, dsn: str, query: Query
) -> None:
    jobs = make_system(queues=QUEUES)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1 / 0")
        with pytest.raises(pgjobs.UsageError, match="failed transaction"):
            await jobs.send("plain", {}, connection=conn)
    assert count_jobs(query) == 0


async def test_send_connection_wrong_kind(make_system: Any, dsn: str) -> None:
    jobs = make_system(queues=QUEUES)
    with (
        psycopg.connect(dsn) as conn,
        pytest.raises(pgjobs.SendOptionError, match="AsyncConnection"),
    ):
        await jobs.send("plain", {}, connection=conn)  # type: ignore[arg-type]


async def test_send_connection_schema_missing(empty_dsn: str) -> None:
    jobs = pgjobs.create_job_system({"dsn": empty_dsn, "queues": QUEUES})
    async with await psycopg.AsyncConnection.connect(empty_dsn) as conn:
        with pytest.raises(pgjobs.SchemaError, match="'pgjobs' is not installed"):
            await jobs.send("plain", {}, connection=conn)


def sync_connection_send(
    jobs: pgjobs.JobSystem, dsn: str, *, commit: bool
) -> list[int | None]:
    with psycopg.connect(dsn) as conn:
        ids = [
            jobs.send_sync("plain", {"n": 1}, connection=conn),
            *jobs.send_many_sync("plain", [{"n": 2}], connection=conn),
        ]
        if commit:
            conn.commit()
        else:
            conn.rollback()
    return ids


async def test_send_sync_connection_rollback(
    make_system: Any, dsn: str, query: Query
) -> None:
    jobs = make_system(queues=QUEUES)
    ids = await asyncio.to_thread(sync_connection_send, jobs, dsn, commit=False)
    assert len(ids) == 2
    assert count_jobs(query) == 0
    assert jobs.started is False


async def test_send_sync_connection_commit(
    make_system: Any, dsn: str, query: Query
) -> None:
    jobs = make_system(queues=QUEUES)
    ids = await asyncio.to_thread(sync_connection_send, jobs, dsn, commit=True)
    rows = query("SELECT id FROM procrastinate_jobs ORDER BY id")
    assert rows == [(ids[0],), (ids[1],)]


def sync_taken_key(jobs: pgjobs.JobSystem, dsn: str) -> tuple[Any, ...]:
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1")
        first = jobs.send_sync("plain", {}, singleton_key="s", connection=conn)
        second = jobs.send_sync("plain", {}, singleton_key="s", connection=conn)
        status = conn.info.transaction_status
        conn.commit()
    return first, second, status


async def test_send_sync_connection_taken_key(
    make_system: Any, dsn: str, query: Query
) -> None:
    jobs = make_system(queues=QUEUES)
    first, second, status = await asyncio.to_thread(sync_taken_key, jobs, dsn)
    assert isinstance(first, int)
    assert second is None
    assert status == psycopg.pq.TransactionStatus.INTRANS
    assert count_jobs(query) == 1


async def test_send_ambiguous_definition(make_system: Any) -> None:
    shared = pgjobs.queue()
    with pytest.raises(pgjobs.ConfigError, match="share one queue"):
        make_system(queues={"a": shared, "b": shared})
