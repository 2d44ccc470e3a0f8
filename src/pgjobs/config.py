"""Configuration models: the job system, its queues, schedules, pool and workers.

Everything is validated when `create_job_system` builds the config, so a typo
fails at start-up with every problem listed, not on the first job.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar, overload

import croniter
import psycopg.conninfo
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pgjobs.errors import ConfigError

DSN_ENV_VAR = "DATABASE_URL"
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
SCHEMA_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
MAX_PRIORITY = 2**31 - 1

PayloadT = TypeVar("PayloadT")
OnFailed = Callable[..., Any]
OnError = Callable[[BaseException], Any]

_FROZEN = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class Queue(BaseModel, Generic[PayloadT]):
    """Definition of one queue: its payload model and how its jobs run.

    Build it with `queue()`. The type parameter is the payload type, so
    `jobs.send(EMAILS, payload)` is checked statically when `EMAILS` is the
    definition object.
    """

    model_config = _FROZEN

    payload_model: type[BaseModel] | None = None
    retry_limit: int = Field(default=2, ge=0, le=1000)
    retry_delay: float = Field(default=0.0, ge=0, le=86400 * 365)
    retry_backoff: bool = False
    retry_delay_max: float = Field(default=3600.0, gt=0, le=86400 * 365)
    timeout: float | None = Field(default=900.0, gt=0, le=86400 * 7)
    concurrency: int = Field(default=1, ge=1, le=1000)
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    on_failed: OnFailed | None = None
    max_worker_losses: int = Field(default=3, ge=1, le=1000)

    @field_validator("payload_model")
    @classmethod
    def _check_model(cls, value: Any) -> Any:
        if value is not None and not (
            isinstance(value, type) and issubclass(value, BaseModel)
        ):
            raise ValueError(
                f"must be a pydantic BaseModel subclass or None, got {value!r}"
            )
        return value

    @field_validator("on_failed")
    @classmethod
    def _check_on_failed(cls, value: Any) -> Any:
        if value is not None and not callable(value):
            raise ValueError(f"must be callable, got {value!r}")
        return value


@overload
def queue(
    payload_model: type[PayloadT],
    *,
    retry_limit: int = ...,
    retry_delay: float = ...,
    retry_backoff: bool = ...,
    retry_delay_max: float = ...,
    timeout: float | None = ...,
    concurrency: int = ...,
    priority: int = ...,
    on_failed: OnFailed | None = ...,
    max_worker_losses: int = ...,
) -> Queue[PayloadT]: ...


@overload
def queue(
    payload_model: None = None,
    *,
    retry_limit: int = ...,
    retry_delay: float = ...,
    retry_backoff: bool = ...,
    retry_delay_max: float = ...,
    timeout: float | None = ...,
    concurrency: int = ...,
    priority: int = ...,
    on_failed: OnFailed | None = ...,
    max_worker_losses: int = ...,
) -> Queue[dict[str, Any]]: ...


def queue(payload_model: Any = None, **options: Any) -> Queue[Any]:
    """Define a queue.

    Args:
        payload_model: pydantic model that every payload must match, or None
            to accept any JSON object.
        retry_limit: retries after the first run; `N` means at most `N + 1`
            runs in all.
        retry_delay: seconds to wait before a retry.
        retry_backoff: double the delay after each failed attempt.
        retry_delay_max: cap, in seconds, on the delay when backing off.
        timeout: seconds a handler may run before the attempt fails; None
            disables the limit.
        concurrency: jobs of this queue that one worker process runs at once.
        priority: default priority; higher runs first.
        on_failed: called once with the payload and the error after the last
            attempt fails.
        max_worker_losses: times a job's worker may die while running it
            (crash, SIGKILL, out of memory) before the job is failed instead
            of retried, so a job that kills its worker cannot do so forever.

    Raises:
        ConfigError: an option is invalid; the message lists every problem.
    """
    try:
        return Queue[Any](payload_model=payload_model, **options)
    except ValidationError as exc:
        raise ConfigError(format_validation_errors(exc)) from None


def split_cron(cron: str) -> tuple[str, bool]:
    """Return the croniter expression and whether it starts with seconds.

    Five fields are standard cron. Six fields put seconds first, as pg-boss
    and the cron-parser package read them: `*/10 * * * * *` is every ten
    seconds.
    """
    fields = cron.split()
    if cron.strip().startswith("@"):
        return cron.strip(), False
    if len(fields) not in (5, 6):
        raise ValueError(
            f"cron {cron!r} has {len(fields)} fields; write 5 fields "
            "(minute hour day-of-month month day-of-week) or 6 with seconds first"
        )
    return " ".join(fields), len(fields) == 6


class Schedule(BaseModel):
    """A cron schedule that sends one job to a queue at each tick."""

    model_config = _FROZEN

    queue: str = Field(pattern=QUEUE_NAME_PATTERN)
    cron: str
    payload: dict[str, Any] | BaseModel | None = None
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        expression, seconds_first = split_cron(value)
        if not croniter.croniter.is_valid(
            expression, second_at_beginning=seconds_first
        ):
            raise ValueError(
                f"cron {value!r} is not a valid cron expression; "
                "example: '0 3 * * *' for 03:00 every day"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"time zone {value!r} is not an IANA time zone name; "
                "example: 'Europe/Paris' or 'UTC'"
            ) from None
        return value


class PoolConfig(BaseModel):
    """Connection pool sizes and timeouts, in connections and seconds."""

    model_config = _FROZEN

    min_size: int = Field(default=1, ge=0, le=1000)
    max_size: int = Field(default=10, ge=1, le=1000)
    timeout: float = Field(default=30.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    max_idle: float = Field(default=600.0, gt=0)
    max_lifetime: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _check_sizes(self) -> PoolConfig:
        if self.min_size > self.max_size:
            raise ValueError(
                f"min_size ({self.min_size}) must not exceed max_size ({self.max_size})"
            )
        return self


class WorkerConfig(BaseModel):
    """Worker timing, in seconds."""

    model_config = _FROZEN

    graceful_timeout: float = Field(default=30.0, ge=0)
    heartbeat_interval: float = Field(default=10.0, gt=0)
    stalled_timeout: float = Field(default=60.0, gt=0)
    polling_interval: float = Field(default=5.0, gt=0)
    abort_polling_interval: float = Field(default=5.0, gt=0)
    listen_notify: bool = True
    orphan_sweep_interval: float | None = Field(default=None, gt=0)
    name: str = Field(default="pgjobs", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _check_heartbeat(self) -> WorkerConfig:
        if self.stalled_timeout <= 2 * self.heartbeat_interval:
            raise ValueError(
                f"stalled_timeout ({self.stalled_timeout:g} s) must exceed twice "
                f"heartbeat_interval ({self.heartbeat_interval:g} s), or live "
                "workers would be taken for dead"
            )
        return self

    @property
    def sweep_interval(self) -> float:
        """Seconds between orphan sweeps in a running worker."""
        return self.orphan_sweep_interval or self.stalled_timeout / 2


def _dsn_from_environment() -> SecretStr | None:
    value = os.environ.get(DSN_ENV_VAR)
    return SecretStr(value) if value else None


class JobSystemConfig(BaseModel):
    """Configuration of a job system; `create_job_system` validates it."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        arbitrary_types_allowed=True,
        populate_by_name=True,
    )

    dsn: SecretStr | None = Field(default_factory=_dsn_from_environment)
    schema_name: str = Field(
        default="pgjobs",
        pattern=SCHEMA_NAME_PATTERN,
        validation_alias=AliasChoices("schema", "schema_name"),
    )
    queues: dict[str, Queue[Any]] = Field(default_factory=dict)
    schedules: dict[str, Schedule] = Field(default_factory=dict)
    clean_orphans: bool = True
    pool: PoolConfig = Field(default_factory=PoolConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    on_error: OnError | None = None
    max_payload_bytes: int = Field(default=1_000_000, ge=2, le=256 * 1024 * 1024)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_errors(exc)) from None

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            psycopg.conninfo.conninfo_to_dict(value.get_secret_value())
        except psycopg.ProgrammingError:
            # The message is not echoed: it may quote the password.
            raise ValueError(
                "is not a valid PostgreSQL connection string; use "
                "'postgresql://user@host:5432/dbname' or 'host=... dbname=...'"
            ) from None
        return value

    @field_validator("schema_name")
    @classmethod
    def _check_schema(cls, value: str) -> str:
        if value.startswith("pg_"):
            raise ValueError(f"schema {value!r} is reserved: names starting pg_ are")
        return value

    @field_validator("queues")
    @classmethod
    def _check_queue_names(cls, value: dict[str, Queue[Any]]) -> dict[str, Queue[Any]]:
        bad = [name for name in value if not re.fullmatch(QUEUE_NAME_PATTERN, name)]
        if bad:
            raise ValueError(
                f"invalid queue names {bad!r}: use 1 to 128 letters, digits, "
                "'-', '_' or '.'"
            )
        return value

    @field_validator("on_error")
    @classmethod
    def _check_on_error(cls, value: Any) -> Any:
        if value is not None and not callable(value):
            raise ValueError(f"must be callable, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_references(self) -> JobSystemConfig:
        problems: list[str] = []
        if self.dsn is None:
            problems.append(
                f"dsn is missing: pass dsn= or set the {DSN_ENV_VAR} "
                "environment variable"
            )
        for name, schedule in self.schedules.items():
            if not re.fullmatch(QUEUE_NAME_PATTERN, name):
                problems.append(
                    f"schedule name {name!r} is invalid: use 1 to 128 letters, "
                    "digits, '-', '_' or '.'"
                )
            definition = self.queues.get(schedule.queue)
            if definition is None:
                problems.append(
                    f"schedule {name!r} targets queue {schedule.queue!r}, which is "
                    "not configured; add the queue or fix the name"
                )
                continue
            problems.extend(_check_schedule_payload(name, schedule, definition))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def queue_name_of(self, definition: Queue[Any]) -> str | None:
        """Return the name under which `definition` is configured, if any."""
        for name, candidate in self.queues.items():
            if candidate is definition:
                return name
        return None


def _check_schedule_payload(
    name: str, schedule: Schedule, definition: Queue[Any]
) -> list[str]:
    model = definition.payload_model
    payload = schedule.payload
    if model is None or isinstance(payload, model):
        return []
    try:
        model.model_validate(
            payload.model_dump() if isinstance(payload, BaseModel) else payload or {}
        )
    except ValidationError as exc:
        return [
            f"schedule {name!r}: payload does not match {model.__name__}: "
            + "; ".join(format_validation_errors(exc))
        ]
    return []


def _describe_location(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "config"


def format_validation_errors(exc: ValidationError) -> list[str]:
    """Turn a pydantic error into one line per problem, with the bad value.

    A value under `dsn` is never shown, since it may contain a password.
    """
    problems = []
    for error in exc.errors():
        location = error["loc"]
        where = _describe_location(location)
        message = error["msg"].removeprefix("Value error, ")
        if (location and location[0] == "dsn") or error["type"] == "value_error":
            problems.append(f"{where}: {message}")
            continue
        problems.append(f"{where}: {message} (got {error['input']!r:.200})")
    return problems


def build_config(config: JobSystemConfig | Mapping[str, Any]) -> JobSystemConfig:
    """Validate `config` and return it as a `JobSystemConfig`.

    Raises:
        ConfigError: the message lists every problem found.
    """
    if isinstance(config, JobSystemConfig):
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(
            [
                "config must be a JobSystemConfig or a mapping, "
                f"got {type(config).__name__}"
            ]
        )
    try:
        return JobSystemConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise ConfigError(format_validation_errors(exc)) from None
