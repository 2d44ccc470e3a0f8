"""The steps of `init_jobs`, kept in order and idempotent."""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attr
import croniter
import procrastinate
import procrastinate.job_context
import procrastinate.periodic
from psycopg.types.json import Jsonb

from pgjobs import _payload, _redact, recovery, schema, worker
from pgjobs.config import JobSystemConfig, Queue, Schedule, split_cron
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


class ZonedCron(croniter.croniter):
    """A cron iterator in a time zone that fires a fixed-hour tick once a day.

    When clocks go back, a local time such as 02:30 occurs twice; croniter
    yields both. A schedule with a fixed hour runs on the first of the two
    only, as cron does. A schedule whose hour field covers every hour runs
    in both, since each is a real hour. When clocks go forward, a tick in
    the skipped hour runs at the end of the gap (croniter 7 behaviour).
    """

    def __init__(
        self, expression: str, zone: zoneinfo.ZoneInfo, *, seconds_first: bool
    ) -> None:
        super().__init__(
            expression,
            datetime.datetime.now(zone),
            second_at_beginning=seconds_first,
        )
        self.zone = zone
        hours = self.expanded[1]
        self.fixed_hour = hours != ["*"] and len(hours) < 24

    def get_next(
        self,
        ret_type: Any = None,
        start_time: Any = None,
        update_current: bool = True,
    ) -> Any:
        value = super().get_next(ret_type, start_time, update_current)
        while self._is_repeat(value):
            value = super().get_next(ret_type, value, update_current)
        return value

    def get_prev(
        self,
        ret_type: Any = None,
        start_time: Any = None,
        update_current: bool = True,
    ) -> Any:
        value = super().get_prev(ret_type, start_time, update_current)
        while self._is_repeat(value):
            value = super().get_prev(ret_type, value, update_current)
        return value

    def _is_repeat(self, value: Any) -> bool:
        """Tell whether `value` is the second occurrence of a fixed-hour tick."""
        if not self.fixed_hour:
            return False
        if isinstance(value, datetime.datetime):
            value = value.timestamp()
        local = datetime.datetime.fromtimestamp(float(value), self.zone)
        # fromtimestamp sets fold=1 only on the second pass of a repeated
        # hour; fold=1 elsewhere has the same offset as fold=0.
        return local.fold == 1 and (
            local.utcoffset() != local.replace(fold=0).utcoffset()
        )


@attr.dataclass(frozen=True)
class ZonedPeriodicTask(procrastinate.periodic.PeriodicTask):  # type: ignore[type-arg]
    """A periodic task whose cron runs in a time zone and may have seconds.

    procrastinate's own reads 5-field cron in UTC, with seconds last; here a
    6-field cron has seconds first, as pg-boss reads it.
    """

    timezone: str = "UTC"
    seconds_first: bool = False

    @functools.cached_property
    def croniter(self) -> croniter.croniter:
        zone = zoneinfo.ZoneInfo(self.timezone)
        return ZonedCron(self.cron, zone, seconds_first=self.seconds_first)


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
        "max_worker_losses": definition.max_worker_losses,
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
            self._check_handler_changes(handlers)
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
        async with self.system.pool.connection() as conn, conn.cursor() as cursor:
            await cursor.executemany(UPSERT_QUEUE_SQL, rows)

    def _check_handler_changes(self, handlers: dict[str, Handler]) -> None:
        if self.workers is None or not self.workers.running:
            return
        changed = sorted(
            name
            for name, handler in handlers.items()
            if name in self.tasks and self.tasks[name].handler is not handler
        )
        if changed:
            raise UsageError(
                f"workers already run other handlers for queues {changed!r}; "
                "call stop() before init_jobs with new handlers"
            )

    def _register_tasks(self, handlers: dict[str, Handler]) -> None:
        app = self.system.app
        for name, handler in handlers.items():
            existing = self.tasks.get(name)
            if existing is not None:
                existing.set_handler(handler)
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
        # The schedules live in the app's registry, which outlives stop().
        if self._schedules_registered:
            return
        app = self.system.app
        config = self.system.config
        registry = app.periodic_registry
        for schedule_name, schedule in config.schedules.items():
            task = app.tasks[schedule.queue]
            expression, seconds_first = split_cron(schedule.cron)
            registry.periodic_tasks[(task.name, schedule_name)] = ZonedPeriodicTask(
                task=task,
                cron=expression,
                periodic_id=schedule_name,
                configure_kwargs={
                    "task_kwargs": {"payload": _schedule_payload(config, schedule)}
                },
                timezone=schedule.timezone,
                seconds_first=seconds_first,
            )
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
        models = {
            name: definition.payload_model
            for name, definition in config.queues.items()
            if definition.payload_model is not None
        }
        worker_names = [f"{config.worker.name}:{name}" for name in names]
        _redact.install(models, worker_names)
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
        self._lock = None
        for queue_task in self.tasks.values():
            queue_task.shutdown()


def _schedule_payload(config: JobSystemConfig, schedule: Schedule) -> dict[str, Any]:
    # The same conversion as send(), so a scheduled job's payload loads in
    # its handler exactly like a sent one.
    return _payload.to_json_payload(
        schedule.queue,
        config.queues[schedule.queue].payload_model,
        schedule.payload or {},
        max_bytes=config.max_payload_bytes,
    )
