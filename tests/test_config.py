"""Configuration: every invalid field reported at once, no I/O, no secrets."""

from __future__ import annotations

import socket
from typing import Any

import pydantic
import pytest

import pgjobs
from pgjobs.config import DSN_ENV_VAR

PASSWORD = "pw-s3cr3t-7731"
DSN = f"postgresql://app:{PASSWORD}@127.0.0.1:5432/app"


class Email(pydantic.BaseModel):
    to: str


def closed_port() -> int:
    """Return a loopback TCP port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def problems_of(config: dict[str, Any]) -> list[str]:
    with pytest.raises(pgjobs.ConfigError) as caught:
        pgjobs.create_job_system({"dsn": DSN, **config})
    return caught.value.problems


# (case id, config fields, text every reported problem line must contain)
INVALID_FIELDS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("schema_capitals", {"schema": "Jobs"}, ["schema:", "'Jobs'", "lowercase"]),
    ("schema_dash", {"schema": "my-jobs"}, ["schema:", "'my-jobs'"]),
    ("schema_digit_first", {"schema": "1jobs"}, ["schema:", "'1jobs'"]),
    ("schema_too_long", {"schema": "j" * 64}, ["schema:", "1 to 63"]),
    ("schema_reserved", {"schema": "pg_jobs"}, ["schema:", "'pg_jobs'", "reserved"]),
    ("schema_empty", {"schema": ""}, ["schema:", "''"]),
    (
        "queue_name_space",
        {"queues": {"bad name": pgjobs.queue()}},
        ["queues.bad name:", "'bad name'", "letters, digits"],
    ),
    (
        "queue_name_too_long",
        {"queues": {"q" * 129: pgjobs.queue()}},
        ["queues.", "1 to 128"],
    ),
    (
        "queue_retry_limit",
        {"queues": {"q": {"retry_limit": -1}}},
        ["queues.q.retry_limit:", "greater than or equal to 0", "got -1"],
    ),
    (
        "queue_concurrency",
        {"queues": {"q": {"concurrency": 0}}},
        ["queues.q.concurrency:", "got 0"],
    ),
    (
        "queue_timeout_nan",
        {"queues": {"q": {"timeout": float("nan")}}},
        ["queues.q.timeout:", "nan"],
    ),
    (
        "queue_model_not_model",
        {"queues": {"q": {"payload_model": int}}},
        ["queues.q.payload_model:", "BaseModel", "int"],
    ),
    (
        "cron_three_fields",
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {"s": {"queue": "q", "cron": "* * *"}},
        },
        ["schedules.s.cron:", "'* * *'", "3 fields"],
    ),
    (
        "cron_bad_minute",
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {"s": {"queue": "q", "cron": "61 * * * *"}},
        },
        ["schedules.s.cron:", "'61 * * * *'", "not a valid cron"],
    ),
    (
        "cron_never_fires",
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {"s": {"queue": "q", "cron": "0 0 30 2 *"}},
        },
        ["schedules.s.cron:", "'0 0 30 2 *'", "never fires"],
    ),
    (
        "cron_seven_fields",
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {"s": {"queue": "q", "cron": "* * * * * * *"}},
        },
        ["schedules.s.cron:", "7 fields"],
    ),
    (
        "time_zone",
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {
                "s": {"queue": "q", "cron": "* * * * *", "timezone": "Mars/Olympus"}
            },
        },
        ["schedules.s.timezone:", "'Mars/Olympus'", "IANA"],
    ),
    (
        "schedule_unknown_queue",
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {"s": {"queue": "nope", "cron": "* * * * *"}},
        },
        ["schedules.s.queue:", "'nope'", "configured queues: 'q'"],
    ),
    (
        "schedule_name",
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {"a b": {"queue": "q", "cron": "* * * * *"}},
        },
        ["schedules.a b:", "'a b'"],
    ),
    (
        "schedule_payload_model",
        {
            "queues": {"q": pgjobs.queue(Email)},
            "schedules": {
                "s": {"queue": "q", "cron": "* * * * *", "payload": {"to": 5}}
            },
        },
        ["schedules.s.payload:", "payload.to", "got 5"],
    ),
    (
        "schedule_payload_nul",
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {
                "s": {"queue": "q", "cron": "* * * * *", "payload": {"a": "x\x00"}}
            },
        },
        ["schedules.s.payload:", "payload.a", "NUL"],
    ),
    (
        "pool_min_over_max",
        {"pool": {"min_size": 5, "max_size": 2}},
        ["pool:", "min_size (5)", "max_size (2)"],
    ),
    ("pool_timeout", {"pool": {"timeout": 0}}, ["pool.timeout:", "got 0"]),
    (
        "worker_heartbeat",
        {"worker": {"heartbeat_interval": 40, "stalled_timeout": 60}},
        ["worker:", "stalled_timeout (60 s)", "heartbeat_interval (40 s)"],
    ),
    ("max_payload_bytes", {"max_payload_bytes": 1}, ["max_payload_bytes:", "got 1"]),
    ("on_error", {"on_error": 3}, ["on_error:", "callable", "got 3"]),
    ("unknown_field", {"queue": {}}, ["queue:", "Extra inputs"]),
    ("dsn_port", {"dsn": f"postgresql://u:{PASSWORD}@h:99999/d"}, ["dsn:", "'99999'"]),
    (
        "dsn_syntax",
        {"dsn": f"host=h password={PASSWORD} nonsense"},
        ["dsn:", "not a valid"],
    ),
    ("dsn_empty", {"dsn": " "}, ["dsn:", "empty"]),
]


@pytest.mark.parametrize(
    ("config", "expected"),
    [case[1:] for case in INVALID_FIELDS],
    ids=[case[0] for case in INVALID_FIELDS],
)
def test_config_invalid_field(config: dict[str, Any], expected: list[str]) -> None:
    problems = problems_of(config)
    assert len(problems) == 1, problems
    for text in expected:
        assert text in problems[0]


def test_config_reports_every_problem() -> None:
    problems = problems_of(
        {
            "schema": "Bad-Schema",
            "queues": {"q": pgjobs.queue(Email), "bad name": pgjobs.queue()},
            "schedules": {
                "tick": {"queue": "nope", "cron": "* * * * *"},
                "tock": {"queue": "q", "cron": "* * *", "payload": {"to": "a"}},
                "mail": {"queue": "q", "cron": "* * * * *", "payload": {"to": []}},
            },
            "pool": {"min_size": 9, "max_size": 1},
        }
    )
    assert len(problems) == 6, problems
    assert any(line.startswith("schema:") for line in problems)
    assert any(line.startswith("queues.bad name:") for line in problems)
    assert any(line.startswith("schedules.tick.queue:") for line in problems)
    assert any(line.startswith("schedules.tock.cron:") for line in problems)
    assert any(line.startswith("schedules.mail.payload:") for line in problems)
    assert any(line.startswith("pool:") for line in problems)


def test_config_cross_field_checks_after_valid_fields() -> None:
    problems = problems_of(
        {
            "queues": {"q": pgjobs.queue()},
            "schedules": {
                "a": {"queue": "x", "cron": "* * * * *"},
                "b": {"queue": "y", "cron": "* * * * *"},
            },
        }
    )
    assert problems == [
        "schedules.a.queue: queue 'x' is not configured (configured queues: 'q'); "
        "add the queue or fix the name",
        "schedules.b.queue: queue 'y' is not configured (configured queues: 'q'); "
        "add the queue or fix the name",
    ]


def test_config_message_counts_problems() -> None:
    with pytest.raises(pgjobs.ConfigError) as caught:
        pgjobs.create_job_system({"dsn": DSN, "schema": "X", "pool": {"timeout": -1}})
    assert str(caught.value).startswith("invalid pgjobs configuration (2 problems):")


def test_config_model_raises_config_error() -> None:
    with pytest.raises(pgjobs.ConfigError):
        pgjobs.JobSystemConfig(dsn=DSN, schema="X")


def test_config_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="schema"):
        pgjobs.create_job_system({"dsn": DSN, "schema": "X"})


def test_config_model_accepted() -> None:
    config = pgjobs.JobSystemConfig(dsn=DSN, schema="jobs")
    jobs = pgjobs.create_job_system(config)
    assert jobs.config is config


def test_config_not_a_mapping() -> None:
    with pytest.raises(pgjobs.ConfigError, match="got list"):
        pgjobs.create_job_system([("dsn", DSN)])  # type: ignore[arg-type]


def test_config_non_string_key() -> None:
    with pytest.raises(pgjobs.ConfigError, match="keys must be strings"):
        pgjobs.create_job_system({"dsn": DSN, 1: 2})  # type: ignore[dict-item]


def test_config_queue_factory_lists_problems() -> None:
    with pytest.raises(pgjobs.ConfigError) as caught:
        pgjobs.queue(retry_limit="x", concurrency=0)  # type: ignore[arg-type]
    assert len(caught.value.problems) == 2


def test_config_defaults() -> None:
    config = pgjobs.JobSystemConfig(dsn=DSN)
    assert config.schema_name == "pgjobs"
    assert config.clean_orphans is True
    assert config.queues == {}


def test_config_schedule_seconds_field() -> None:
    config = pgjobs.JobSystemConfig(
        dsn=DSN,
        queues={"q": pgjobs.queue()},
        schedules={
            "s": {"queue": "q", "cron": "*/10 * * * * *", "timezone": "Europe/Paris"}
        },
    )
    assert config.schedules["s"].cron == "*/10 * * * * *"


def test_config_dsn_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DSN_ENV_VAR, DSN)
    config = pgjobs.JobSystemConfig()
    assert config.dsn is not None
    assert config.dsn.get_secret_value() == DSN


def test_config_explicit_dsn_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DSN_ENV_VAR, "postgresql://other@127.0.0.1/other")
    config = pgjobs.JobSystemConfig(dsn=DSN)
    assert config.dsn is not None
    assert config.dsn.get_secret_value() == DSN


def test_config_dsn_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DSN_ENV_VAR, raising=False)
    with pytest.raises(pgjobs.ConfigError) as caught:
        pgjobs.create_job_system({})
    assert caught.value.problems == [
        "dsn: missing; pass dsn= or set the DATABASE_URL environment variable"
    ]


def test_config_dsn_missing_with_other_problems(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DSN_ENV_VAR, raising=False)
    with pytest.raises(pgjobs.ConfigError) as caught:
        pgjobs.create_job_system({"schema": "X"})
    assert len(caught.value.problems) == 2


SECRET_CASES: list[dict[str, Any]] = [
    {"dsn": f"postgresql://app:{PASSWORD}@127.0.0.1:99999/app"},
    {"dsn": f"host=127.0.0.1 password={PASSWORD} bogus=1"},
    {"dsn": f"postgresql://app:{PASSWORD}@127.0.0.1/app?bogus=1"},
    {"dsn": [DSN]},
    {"dsn": DSN, "schema": "X", "unknown": 1},
    {"dsn": DSN, "queues": {"q": {"retry_limit": -1}}},
]


@pytest.mark.parametrize("config", SECRET_CASES)
def test_config_error_hides_password(config: dict[str, Any]) -> None:
    with pytest.raises(pgjobs.ConfigError) as caught:
        pgjobs.create_job_system(config)
    error = caught.value
    assert PASSWORD not in str(error)
    assert PASSWORD not in repr(error)


def test_config_repr_hides_password() -> None:
    jobs = pgjobs.create_job_system({"dsn": DSN})
    assert PASSWORD not in repr(jobs.config)
    assert PASSWORD not in str(jobs.config)
    assert PASSWORD not in repr(jobs)


def test_config_repr_names_target() -> None:
    jobs = pgjobs.create_job_system({"dsn": DSN})
    assert repr(jobs) == "<JobSystem 127.0.0.1:5432/app schema='pgjobs'>"


def test_create_does_no_io() -> None:
    port = closed_port()
    jobs = pgjobs.create_job_system(
        {
            "dsn": f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/app",
            "queues": {"q": pgjobs.queue(Email)},
            "schedules": {
                "s": {"queue": "q", "cron": "0 3 * * *", "payload": {"to": "a"}}
            },
        }
    )
    assert jobs.started is False


def test_config_is_frozen() -> None:
    config = pgjobs.JobSystemConfig(dsn=DSN)
    with pytest.raises(pydantic.ValidationError):
        config.schema_name = "other"  # type: ignore[misc]


def test_config_model_validate_hides_password() -> None:
    with pytest.raises(ValueError, match="schema") as caught:
        pgjobs.JobSystemConfig.model_validate({"dsn": DSN, "schema": "X"})
    assert PASSWORD not in str(caught.value)


def test_config_shared_definition_rejected() -> None:
    shared = pgjobs.queue()

    with pytest.raises(pgjobs.ConfigError, match="share one queue"):
        pgjobs.create_job_system(
            {"dsn": "postgresql://u@localhost/db", "queues": {"a": shared, "b": shared}}
        )
