"""Configuration models: the job system, its queues, schedules, pool and workers.

Everything is validated when the config is built (by `create_job_system` or
`JobSystemConfig(...)`), so a typo fails at start-up with every problem
listed, not on the first job. Building a config does no I/O.
"""

from __future__ import annotations

import datetime
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Generic, TypeVar, overload

import croniter
import psycopg.conninfo
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pgjobs import _payload
from pgjobs.errors import (
    ConfigError,
    PayloadValidationError,
    describe_validation_errors,
)

DSN_ENV_VAR = "DATABASE_URL"
"""Environment variable read for the dsn when the config gives none."""

# procrastinate stores queue and task names in varchar(128) columns.
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
# Lowercase only: the schema also goes unquoted into the connection's
# search_path option, where PostgreSQL would fold capitals to lowercase.
SCHEMA_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
MAX_PRIORITY = 2**31 - 1
DEFAULT_MAX_PAYLOAD_BYTES = 1_000_000

PayloadT = TypeVar("PayloadT")
ModelT = TypeVar("ModelT", bound=BaseModel)
OnFailed = Callable[..., Any]
OnError = Callable[[BaseException], Any]

_FROZEN = ConfigDict(
    frozen=True, extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False
)


def _check_name(value: str) -> str:
    if not re.fullmatch(QUEUE_NAME_PATTERN, value):
        raise ValueError(
            f"name {value!r} is invalid: use 1 to 128 letters, digits, '-', '_' or '.'"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]
"""A queue or schedule name: 1 to 128 letters, digits, '-', '_' or '.'."""


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


@overload
def queue(
    payload_model: type[ModelT],
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
) -> Queue[ModelT]: ...


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
        problems = describe_validation_errors(exc, root="queue")
    raise ConfigError(problems)


def split_cron(cron: str) -> tuple[str, bool]:
    """Return the croniter expression and whether it starts with seconds.

    Five fields are standard cron. Six fields put seconds first, as pg-boss
    and the cron-parser package read them: `*/10 * * * * *` is every ten
    seconds.

    Raises:
        ValueError: the expression has neither 5 nor 6 fields.
    """
    text = cron.strip()
    if text.startswith("@"):
        return text, False
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"cron {cron!r} has {len(fields)} fields; write 5 fields "
            "(minute hour day-of-month month day-of-week) or 6 with seconds first"
        )
    return " ".join(fields), len(fields) == 6


class Schedule(BaseModel):
    """A cron schedule that sends one job to a queue at each tick.

    `cron` has 5 fields, or 6 with seconds first. It is read in `timezone`
    (an IANA name), so a 03:00 job stays at 03:00 across DST changes.
    """

    model_config = _FROZEN

    queue: Name
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
        start = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
        try:
            croniter.croniter(
                expression, start, second_at_beginning=seconds_first
            ).get_next()
        except croniter.CroniterBadDateError:
            raise ValueError(
                f"cron {value!r} never fires (no such date, as February 30)"
            ) from None
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
    """Connection pool sizes and timeouts, in connections and seconds.

    Set `transaction_pooling` when the dsn points to a pooler in transaction
    mode, such as PgBouncer with `pool_mode = transaction`. pgjobs then sends
    no search path at connect time and prepares no statements, and workers
    poll for jobs instead of using LISTEN/NOTIFY. The server must then put
    the pgjobs schema first on the search path of the role or database, e.g.
    `ALTER ROLE app IN DATABASE appdb SET search_path = pgjobs, public`.
    """

    model_config = _FROZEN

    min_size: int = Field(default=1, ge=0, le=1000)
    max_size: int = Field(default=10, ge=1, le=1000)
    timeout: float = Field(default=30.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    max_idle: float = Field(default=600.0, gt=0)
    max_lifetime: float = Field(default=3600.0, gt=0)
    # PgBouncer in transaction mode rejects the `options` startup parameter
    # that sets the search path, and hands each transaction to any server
    # connection, where psycopg's prepared statements may be missing.
    transaction_pooling: bool = False

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


def _check_dsn(value: SecretStr) -> SecretStr:
    # Messages quote no part of the dsn except a port, because the rest may
    # contain a password, and so may the parser's own error message.
    text = value.get_secret_value()
    if not text.strip():
        raise ValueError(
            f"is empty; pass a connection string or set {DSN_ENV_VAR}, e.g. "
            "'postgresql://user@localhost:5432/dbname'"
        )
    try:
        params = psycopg.conninfo.conninfo_to_dict(text)
    except psycopg.ProgrammingError:
        raise ValueError(
            "is not a valid PostgreSQL connection string; use "
            "'postgresql://user@host:5432/dbname' or 'host=... dbname=...'"
        ) from None
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"port {port!r} is not a TCP port (1 to 65535)")
    return value


class JobSystemConfig(BaseModel):
    """Configuration of a job system.

    Building one validates every field and the references between them
    (a schedule's queue, its payload); `ConfigError` lists every problem at
    once. Also accepted by `create_job_system` as a plain mapping. `dsn`
    defaults to the `DATABASE_URL` environment variable, read when the
    config is built; it is kept as a `SecretStr` and never shown in errors.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        arbitrary_types_allowed=True,
        allow_inf_nan=False,
        populate_by_name=True,
        # pydantic's own message (from model_validate) would quote the whole
        # input, dsn and password included.
        hide_input_in_errors=True,
    )

    dsn: SecretStr | None = Field(default_factory=_dsn_from_environment)
    schema_name: str = Field(
        default="pgjobs", validation_alias=AliasChoices("schema", "schema_name")
    )
    queues: dict[Name, Queue[Any]] = Field(default_factory=dict)
    schedules: dict[Name, Schedule] = Field(default_factory=dict)
    clean_orphans: bool = True
    pool: PoolConfig = Field(default_factory=PoolConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    on_error: OnError | None = None
    max_payload_bytes: int = Field(
        default=DEFAULT_MAX_PAYLOAD_BYTES, ge=2, le=256 * 1024 * 1024
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            field_problems = describe_validation_errors(exc)
        else:
            field_problems = []
        # pydantic skips checks across fields once a field fails, so they
        # run here, on the raw input when validation failed, and one call
        # reports every problem.
        if field_problems:
            problems = field_problems + _reference_problems(
                data.get("queues"),
                data.get("schedules"),
                has_dsn=data.get("dsn") is not None or _has_environment_dsn(),
                max_payload_bytes=data.get("max_payload_bytes"),
            )
        else:
            problems = _reference_problems(
                self.queues,
                self.schedules,
                has_dsn=self.dsn is not None,
                max_payload_bytes=self.max_payload_bytes,
            )
        if problems:
            raise ConfigError(problems)

    @field_validator("dsn", mode="before")
    @classmethod
    def _default_dsn(cls, value: Any) -> Any:
        return _dsn_from_environment() if value is None else value

    @field_validator("dsn")
    @classmethod
    def _validate_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else _check_dsn(value)

    @field_validator("schema_name")
    @classmethod
    def _check_schema(cls, value: str) -> str:
        if not re.fullmatch(SCHEMA_NAME_PATTERN, value):
            raise ValueError(
                f"schema {value!r} is not a valid schema name: use 1 to 63 "
                "lowercase letters, digits or '_', not starting with a digit"
            )
        if value.startswith("pg_") or value == "information_schema":
            raise ValueError(
                f"schema {value!r} is reserved by PostgreSQL; choose another name"
            )
        return value

    def queue_name_of(self, definition: Queue[Any]) -> str | None:
        """Return the name under which `definition` is configured, if any."""
        for name, candidate in self.queues.items():
            if candidate is definition:
                return name
        return None


def _has_environment_dsn() -> bool:
    return _dsn_from_environment() is not None


def _shared_definition_problems(queues: Mapping[Any, Any]) -> list[str]:
    # A definition object resolves to one name in send() and handler(), so
    # the same object under two names would make one of them unreachable.
    names_by_object: dict[int, list[str]] = {}
    for name, definition in queues.items():
        if isinstance(definition, Queue):
            names_by_object.setdefault(id(definition), []).append(str(name))
    return [
        f"queues: {' and '.join(repr(name) for name in names)} share one queue() "
        "definition object; call queue() once per name"
        for names in names_by_object.values()
        if len(names) > 1
    ]


def _reference_problems(
    queues: Any,
    schedules: Any,
    *,
    has_dsn: bool,
    max_payload_bytes: Any,
) -> list[str]:
    """Check what spans fields: the dsn's presence and each schedule's target.

    Works on validated values and on raw input alike, skipping what the
    field checks already report (a schedule naming an invalid queue name).
    """
    problems: list[str] = []
    if not has_dsn:
        problems.append(
            f"dsn: missing; pass dsn= or set the {DSN_ENV_VAR} environment variable"
        )
    if isinstance(queues, Mapping):
        problems.extend(_shared_definition_problems(queues))
    if not isinstance(queues, Mapping) or not isinstance(schedules, Mapping):
        return problems
    if not isinstance(max_payload_bytes, int):
        max_payload_bytes = DEFAULT_MAX_PAYLOAD_BYTES
    for name, schedule in schedules.items():
        target = _schedule_field(schedule, "queue")
        if not isinstance(target, str) or not re.fullmatch(QUEUE_NAME_PATTERN, target):
            continue
        definition = queues.get(target)
        if definition is None:
            configured = ", ".join(repr(key) for key in sorted(queues)) or "none"
            problems.append(
                f"schedules.{name}.queue: queue {target!r} is not configured "
                f"(configured queues: {configured}); add the queue or fix the name"
            )
            continue
        payload = _schedule_field(schedule, "payload")
        if isinstance(definition, Queue) and isinstance(
            payload, Mapping | BaseModel | None
        ):
            problem = _schedule_payload_problem(
                target, definition, payload, max_payload_bytes
            )
            if problem:
                problems.append(f"schedules.{name}.payload: {problem}")
    return problems


def _schedule_field(schedule: Any, field: str) -> Any:
    if isinstance(schedule, Schedule):
        return getattr(schedule, field)
    if isinstance(schedule, Mapping):
        return schedule.get(field)
    return None


def _schedule_payload_problem(
    queue_name: str, definition: Queue[Any], payload: Any, max_bytes: int
) -> str | None:
    try:
        _payload.to_json_payload(
            queue_name, definition.payload_model, payload or {}, max_bytes=max_bytes
        )
    except PayloadValidationError as exc:
        return exc.detail
    return None


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
    bad_keys = [key for key in config if not isinstance(key, str)]
    if bad_keys:
        raise ConfigError([f"config keys must be strings, got {bad_keys!r:.200}"])
    return JobSystemConfig(**config)
