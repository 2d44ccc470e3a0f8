"""Building procrastinate jobs from `send` arguments.

Every argument is checked here, before anything is written, so an invalid
call leaves the database untouched. Nothing in this module does I/O.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any

import procrastinate.jobs

from pgjobs import _payload
from pgjobs.config import MAX_PRIORITY, JobSystemConfig, Queue
from pgjobs.errors import (
    DuplicateJob,
    PayloadValidationError,
    QueueNotFound,
    SendOptionError,
)

# procrastinate's lock and queueing_lock columns are unbounded text; this
# limit keeps keys readable in messages and indexes small.
MAX_KEY_CHARS = 255
MAX_DELAY_SECONDS = 100 * 365 * 86400

Delay = float | datetime.timedelta | None


def resolve_queue(
    config: JobSystemConfig, queue: str | Queue[Any]
) -> tuple[str, Queue[Any]]:
    """Return the name and definition of `queue`, given by name or object.

    Raises:
        QueueNotFound: the name or definition is not in the config.
    """
    if isinstance(queue, Queue):
        names = [name for name, known in config.queues.items() if known is queue]
        if len(names) != 1:
            raise _unknown_definition(config, names)
        return names[0], queue
    if not isinstance(queue, str):
        raise QueueNotFound(repr(queue), list(config.queues))
    definition = config.queues.get(queue)
    if definition is None:
        raise QueueNotFound(queue, list(config.queues))
    return queue, definition


def _unknown_definition(config: JobSystemConfig, names: list[str]) -> QueueNotFound:
    if names:
        message = (
            "this queue definition is configured under several names "
            f"({', '.join(map(repr, names))}); send by name, or call queue() once "
            "per queue"
        )
    else:
        configured = ", ".join(map(repr, sorted(config.queues))) or "none"
        message = (
            f"this queue definition is not in the config (configured queues: "
            f"{configured}); pass the object stored in JobSystemConfig.queues, or "
            "send by name"
        )
    return QueueNotFound(None, list(config.queues), message=message)


def _check_key(option: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SendOptionError(
            f"{option} must be a string, got {type(value).__name__} {value!r:.80}"
        )
    if not value or len(value) > MAX_KEY_CHARS:
        raise SendOptionError(
            f"{option} must be 1 to {MAX_KEY_CHARS} characters, got "
            f"{len(value)}: {value[:40]!r}"
        )
    if "\x00" in value:
        raise SendOptionError(
            f"{option} {value!r} contains a NUL character, which PostgreSQL "
            "text cannot store; remove it"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # psycopg would raise UnicodeEncodeError while sending the query.
        raise SendOptionError(
            f"{option} {value!r} contains a lone surrogate, which UTF-8 cannot "
            "encode; remove it"
        ) from None
    return value


def _check_priority(priority: object) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise SendOptionError(
            f"priority must be an integer, got {type(priority).__name__} "
            f"{priority!r:.80}"
        )
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise SendOptionError(
            f"priority {priority} is out of range; use -{MAX_PRIORITY} to "
            f"{MAX_PRIORITY}"
        )
    return priority


def _delay_seconds(delay: object) -> float:
    if isinstance(delay, datetime.timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise SendOptionError(
            f"delay must be seconds or a timedelta, got {type(delay).__name__} "
            f"{delay!r:.80}"
        )
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_DELAY_SECONDS:
        raise SendOptionError(
            f"delay must be between 0 and {MAX_DELAY_SECONDS} seconds, got "
            f"{delay!r}; use run_at for a fixed time"
        )
    return seconds


def scheduled_time(delay: object, run_at: object) -> datetime.datetime | None:
    """Return when the job may start, from `delay` or `run_at`, or None.

    Raises:
        SendOptionError: both are given, `run_at` is naive or not a
            datetime, or `delay` is negative, not finite or too large.
    """
    if delay is not None and run_at is not None:
        raise SendOptionError(
            "pass either delay or run_at, not both "
            f"(got delay={delay!r}, run_at={run_at!r})"
        )
    if run_at is not None:
        if not isinstance(run_at, datetime.datetime):
            raise SendOptionError(
                f"run_at must be a datetime, got {type(run_at).__name__} {run_at!r:.80}"
            )
        if run_at.utcoffset() is None:
            raise SendOptionError(
                f"run_at {run_at!r} has no time zone; pass an aware datetime, "
                "e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
            )
        return run_at
    if delay is None:
        return None
    seconds = _delay_seconds(delay)
    if seconds == 0:
        return None
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)


def build_job(
    config: JobSystemConfig,
    queue: str | Queue[Any],
    payload: Any,
    *,
    delay: Delay,
    run_at: datetime.datetime | None,
    priority: int | None,
    singleton_key: str | None,
    lock: str | None,
) -> procrastinate.jobs.Job:
    """Validate every argument of `send` and return the job to write.

    Raises:
        QueueNotFound, PayloadValidationError, SendOptionError.
    """
    name, definition = resolve_queue(config, queue)
    return procrastinate.jobs.Job(
        queue=name,
        task_name=name,
        task_kwargs={"payload": _json_payload(config, name, definition, payload)},
        priority=_check_priority(definition.priority if priority is None else priority),
        lock=_check_key("lock", lock),
        queueing_lock=_check_key("singleton_key", singleton_key),
        scheduled_at=scheduled_time(delay, run_at),
    )


def _json_payload(
    config: JobSystemConfig, name: str, definition: Queue[Any], payload: Any
) -> dict[str, Any]:
    return _payload.to_json_payload(
        name, definition.payload_model, payload, max_bytes=config.max_payload_bytes
    )


def build_jobs(
    config: JobSystemConfig,
    queue: str | Queue[Any],
    payloads: Sequence[Any],
    *,
    delay: Delay,
    run_at: datetime.datetime | None,
    priority: int | None,
    singleton_keys: Sequence[str | None] | None,
    lock: str | None,
) -> list[procrastinate.jobs.Job]:
    """Validate the arguments of `send_many` and return the jobs to write.

    Raises:
        QueueNotFound, SendOptionError, DuplicateJob (a singleton key given
        twice), and PayloadValidationError naming the index of the payload.
    """
    if isinstance(payloads, str | bytes | Mapping) or not isinstance(
        payloads, Sequence
    ):
        raise SendOptionError(
            "payloads must be a sequence (such as a list) of payloads, got "
            f"{type(payloads).__name__}"
        )
    name, _ = resolve_queue(config, queue)
    keys = _singleton_keys(name, payloads, singleton_keys)
    jobs = []
    for index, (payload, key) in enumerate(zip(payloads, keys, strict=True)):
        try:
            job = build_job(
                config,
                name,
                payload,
                delay=delay,
                run_at=run_at,
                priority=priority,
                singleton_key=key,
                lock=lock,
            )
        except PayloadValidationError as exc:
            raise _with_index(exc, index) from None
        jobs.append(job)
    return jobs


def _singleton_keys(
    queue_name: str,
    payloads: Sequence[Any],
    singleton_keys: Sequence[str | None] | None,
) -> Sequence[str | None]:
    if singleton_keys is None:
        return [None] * len(payloads)
    if isinstance(singleton_keys, str) or len(singleton_keys) != len(payloads):
        raise SendOptionError(
            "singleton_keys must be a sequence with one key (or None) per payload: "
            f"got {singleton_keys!r:.80} for {len(payloads)} payloads"
        )
    seen: set[str] = set()
    for key in singleton_keys:
        if key is not None and key in seen:
            raise DuplicateJob(
                queue_name,
                key,
                message=f"singleton key {key!r} is given twice in one send_many "
                f"call (queue {queue_name!r}); at most one job per key can be "
                "queued, so drop the repeated payload",
            )
        if isinstance(key, str):
            seen.add(key)
    return singleton_keys


def _with_index(exc: PayloadValidationError, index: int) -> PayloadValidationError:
    field = exc.field.replace("payload", f"payloads[{index}]", 1) if exc.field else None
    return PayloadValidationError(
        exc.queue, f"payloads[{index}]: {exc.detail}", field=field
    )
