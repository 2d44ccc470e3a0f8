"""The steps of `init_jobs`, kept in order and idempotent."""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import logging
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import croniter
import procrastinate
import procrastinate.job_context
import procrastinate.periodic
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from pgjobs import recovery, schema, worker
from pgjobs.config import Queue, Schedule, split_cron
from pgjobs.errors import HandlerError, UsageError
from pgjobs.runner import WorkerGroup
from pgjobs.types import Handler

if TYPE_CHECKING:
    from pgjobs.system import JobSystem

logger = logging.getLogger(__name__)

UPSERT_QUEUE_SQL = """
INSERT INTO pgjobs_queues (name, settings, updated_at)
VALUES (%(name)s, %(settings)s, now())
ON CONFLICT (name) DO UPDATE
   SET settings = EXCLUDED.settings, updated_at = now()
 WHERE pgjobs_queues.settings IS DISTINCT FROM EXCLUDED.settings
"""


class ZonedPeriodicTask(procrastinate.periodic.PeriodicTask):  # type: ignore[type-arg]
    """A periodic task whose cron runs in a time zone and may have seconds.

    procrastinate's own reads 5-field cron in UTC, with seconds last.
    """

    timezone: str = "UTC"
    seconds_first: bool = False

    @functools.cached_property
    def croniter(self) -> croniter.croniter:
        zone = zoneinfo.ZoneInfo(self.timezone)
        return croniter.croniter(
            self.cron,
            datetime.datetime.now(zone),
            second_at_beginning=self.seconds_first,
        )


def queue_settings(definition: Queue[Any]) -> dict[str, Any]:
    """Return the settings of a queue that the dashboard shows."""
    model = definition.payload_model
    return {
        "payload_model": f"{model.__module__}.{model.__qualname__}" if model else None,
        "retry_limit": definition.retry_limit,
        "retry_delay": definition.retry_delay,
        "retry_backoff": definition.retry_backoff,
        "retry_delay_max": definition.retry_delay_max,
        "timeout": definition.timeout,
        "concurrency": definition.concurrency,
        "priority": definition.priority,
        "has_on_failed": definition.on_failed is not None,
    }


class Setup:
    """State of `init_jobs` for one job system."""

    def __init__(self, system: JobSystem) -> None:
        self.system = system
        self.tasks: dict[str, worker.QueueTask] = {}
        self.workers: WorkerGroup | None = None
        self._schema_ready = False
        self._schedules_registered = False
        self._lock: asyncio.Lock | None = None

    def forget(self) -> None:
        """Drop what belonged to a closed event loop."""
        self.workers = None
        self._schema_ready = False
        self._lock = None

    def resolve_handlers(
        self,
        handlers: Mapping[str | Queue[Any], Handler] | None,
        queues: Sequence[str] | None,
    ) -> dict[str, Handler]:
        """Check handlers against the configured queues; pure, no I/O.

        Raises:
            HandlerError: listing every queue without a handler, every
                handler without a queue, and every handler not callable.
        """
        config = self.system.config
        given: dict[str, Handler] = dict(self.system.handlers)
        problems: list[str] = []
        if handlers is not None and not isinstance(handlers, Mapping):
            raise HandlerError(
                [
                    f"handlers must be a mapping of queue to function, got "
                    f"{type(handlers).__name__}"
                ]
            )
        for key, function in (handlers or {}).items():
            if isinstance(key, Queue):
                name = config.queue_name_of(key)
                if name is None:
                    problems.append(
                        "a handler is keyed by a queue definition that is not in "
                        "the config; key it by the configured queue's name"
                    )
                    continue
            else:
                name = key
            given[name] = function
        known = set(config.queues)
        for name in sorted(set(given) - known):
            problems.append(
                f"handler for {name!r} has no queue; add queue {name!r} to the "
                "config or remove the handler"
            )
        for name in sorted(known - set(given)):
            problems.append(
                f"queue {name!r} has no handler; pass one in init_jobs(handlers) or "
                "remove the queue from the config"
            )
        for name, function in sorted(given.items()):
            if not callable(function):
                problems.append(f"handler for {name!r} is not callable: {function!r}")
        for name in queues or ():
            if name not in known:
                problems.append(
                    f"queues= names {name!r}, which is not configured; configured "
                    f"queues: {sorted(known)!r}"
                )
        if problems:
            raise HandlerError(problems)
        return given

    async def run(
        self,
        handlers: dict[str, Handler],
        start_worker: bool,
        queues: Sequence[str] | None,
    ) -> None:
        """Run the steps of `init_jobs` on the loop that owns the pool."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await self._ensure_schema()
            if self.system.config.clean_orphans:
                await self.recover_orphans()
            await self._record_queues()
            self._register_tasks(handlers)
            self._register_schedules()
            if start_worker:
                self._start_workers(queues)

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        async with self.system.pool.connection() as conn:
            await schema.ensure(conn, self.system.config.schema_name, migrate=False)
        self._schema_ready = True

    async def migrate(self) -> list[str]:
        """Install or migrate the schema."""
        async with self.system.pool.connection() as conn:
            applied = await schema.ensure(
                conn, self.system.config.schema_name, migrate=True
            )
        self._schema_ready = True
        return applied

    async def recover_orphans(self) -> list[recovery.RecoveredJob]:
        """Settle orphaned jobs, then run the on_failed hooks of failed ones."""
        config = self.system.config
        async with self.system.pool.connection() as conn:
            recovered, hooks = await recovery.sweep(
                conn,
                queues=config.queues,
                stalled_timeout=config.worker.stalled_timeout,
            )
        for hook in hooks:
            definition = config.queues.get(hook.queue)
            if definition is None or definition.on_failed is None:
                continue
            payload, context = recovery.hook_arguments(hook, definition)
            error = worker.WorkerLost(
                f"job {hook.job_id} failed: its worker was lost on the last attempt"
            )
            await worker.run_on_failed(
                self.system, hook.queue, definition, context, payload, error
            )
        if recovered:
            logger.info(
                "Recovered %d orphaned jobs",
                len(recovered),
                extra={"action": "recover_orphans"},
            )
        return recovered

    async def _record_queues(self) -> None:
        rows = [
            {"name": name, "settings": Jsonb(queue_settings(definition))}
            for name, definition in self.system.config.queues.items()
        ]
        if not rows:
            return
        async with self.system.pool.connection() as conn:
            async with conn.cursor() as cursor:
                await cursor.executemany(UPSERT_QUEUE_SQL, rows)

    def _register_tasks(self, handlers: dict[str, Handler]) -> None:
        app = self.system.app
        for name, handler in handlers.items():
            existing = self.tasks.get(name)
            if existing is not None:
                if existing.handler is not handler:
                    raise UsageError(
                        f"init_jobs already registered another handler for queue "
                        f"{name!r}; call stop() before changing handlers"
                    )
                continue
            definition = self.system.config.queues[name]
            queue_task = worker.QueueTask(self.system, name, definition, handler)

            async def run(
                context: procrastinate.JobContext,
                payload: Any = None,
                timestamp: int | None = None,
                _task: worker.QueueTask = queue_task,
            ) -> Any:
                return await _task(context, payload, timestamp)

            run.__name__ = queue_task.__name__
            run.__qualname__ = queue_task.__name__
            app.task(
                name=name,
                queue=name,
                pass_context=True,
                retry=queue_task.retry_strategy,
                priority=definition.priority,
            )(run)
            self.tasks[name] = queue_task

    def _register_schedules(self) -> None:
        if self._schedules_registered:
            return
        app = self.system.app
        registry = app.periodic_registry
        for schedule_name, schedule in self.system.config.schedules.items():
            task = app.tasks[schedule.queue]
            expression, seconds_first = split_cron(schedule.cron)
            registered = registry.register_task(
                task=task,
                cron=expression,
                periodic_id=schedule_name,
                configure_kwargs={
                    "task_kwargs": {"payload": _schedule_payload(schedule)}
                },
            )
            zoned = ZonedPeriodicTask(
                task=registered.task,
                cron=registered.cron,
                periodic_id=registered.periodic_id,
                configure_kwargs=registered.configure_kwargs,
            )
            object.__setattr__(zoned, "timezone", schedule.timezone)
            object.__setattr__(zoned, "seconds_first", seconds_first)
            registry.periodic_tasks[(task.name, schedule_name)] = zoned
        self._schedules_registered = True

    def _start_workers(self, queues: Sequence[str] | None) -> None:
        if self.workers is not None and self.workers.running:
            return
        config = self.system.config
        names = list(queues) if queues else list(config.queues)
        if not names:
            logger.warning(
                "No queue is configured; no worker started",
                extra={"action": "start_workers"},
            )
            return
        self.workers = WorkerGroup(
            app=self.system.app,
            config=config,
            queues=names,
            sweep=self.recover_orphans if config.clean_orphans else None,
            report_error=self.system.report_error,
        )
        self.workers.start()

    async def stop_workers(self) -> None:
        """Stop the workers of this process, if any, and free handler threads."""
        group = self.workers
        if group is not None:
            await group.stop()
        self.workers = None
        for queue_task in self.tasks.values():
            queue_task.shutdown()


def _schedule_payload(schedule: Schedule) -> dict[str, Any]:
    payload = schedule.payload
    if isinstance(payload, BaseModel):
        data: dict[str, Any] = payload.model_dump(mode="json")
        return data
    return json.loads(json.dumps(payload or {}))
