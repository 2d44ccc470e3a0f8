"""The contenders of the benchmark, each in its own PostgreSQL schema.

- `PgJobs`: a pgjobs job system, as an application would use it.
- `RawProcrastinate` with `tuned=False`: procrastinate's own
  `PsycopgConnector`, whose pool checks each connection on checkout and
  commits after each statement.
- `RawProcrastinate` with `tuned=True`: procrastinate opened with a pool of
  autocommit connections and no checkout check, the same pool settings as
  pgjobs' pool, through `app.open_async(pool)`.
- `RawProcrastinate` with `pgjobs_tables=True`, only with `--schema-check`:
  the tuned contender on a schema that pgjobs' migrations made.

Every contender writes the same rows: task kwargs `{"payload": {"n": i}}`.
Workers run in the benchmark's own process and event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import procrastinate
import psycopg
import psycopg_pool
import pydantic
from psycopg import sql

import pgjobs

SEND, DRAIN_1, DRAIN_10, LATENCY = "send", "drain1", "drain10", "latency"
QUEUE_KINDS = (SEND, DRAIN_1, DRAIN_10, LATENCY)
DRAIN_QUEUES = {1: DRAIN_1, 10: DRAIN_10}

# The pool settings of the tuned contender copy pgjobs' defaults, so that
# pgjobs and the tuned contender differ only in what pgjobs adds on top.
POOL_DEFAULTS = pgjobs.PoolConfig()


class Noop(pydantic.BaseModel):
    """Payload of every benchmark job."""

    n: int


class Counter:
    """Counts handler calls; `done` is set when the expected count is reached."""

    def __init__(self) -> None:
        self.remaining = 0
        self.done = asyncio.Event()

    def expect(self, count: int) -> None:
        self.remaining = count
        self.done.clear()

    def hit(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


class Probe:
    """Stores the `perf_counter` time at which the measured handler started."""

    def __init__(self) -> None:
        self.started: asyncio.Future[float] | None = None

    def arm(self) -> asyncio.Future[float]:
        self.started = asyncio.get_running_loop().create_future()
        return self.started

    def hit(self) -> None:
        if self.started is not None and not self.started.done():
            self.started.set_result(time.perf_counter())


class Contender:
    """Interface the benchmark drives; each subclass binds it to one setup."""

    label: str
    schema: str

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.counter = Counter()
        self.probe = Probe()

    def queue(self, kind: str) -> str:
        """Return the queue name of `kind` (SEND, DRAIN_1, ...) for this one."""
        # Queue names differ between contenders because NOTIFY channels are
        # per database, not per schema.
        return f"{self.schema}-{kind}"

    async def install(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Create this contender's schema in the benchmark database."""
        raise NotImplementedError

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def send(self, kind: str, n: int) -> None:
        """Enqueue one job on the queue of `kind`."""
        raise NotImplementedError

    async def send_many(self, kind: str, numbers: range) -> None:
        """Enqueue one job per number in one call."""
        raise NotImplementedError

    async def start_drain(self, concurrency: int) -> None:
        """Start a worker on the drain queue of `concurrency`."""
        raise NotImplementedError

    async def start_listener(self) -> None:
        """Start an idle worker on the latency queue, LISTEN/NOTIFY on."""
        raise NotImplementedError

    async def stop_worker(self) -> None:
        """Stop the worker started last and wait until it has stopped."""
        raise NotImplementedError

    async def truncate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Empty the queue tables, so every measurement starts alike."""
        table = sql.Identifier(self.schema, "procrastinate_jobs")
        workers = sql.Identifier(self.schema, "procrastinate_workers")
        await conn.execute(
            sql.SQL("TRUNCATE {}, {} CASCADE").format(table, workers),
        )


class PgJobs(Contender):
    """pgjobs with its own pool, a payload model on every queue."""

    label = "pgjobs"
    schema = "pgjobs"

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        queues = {
            self.queue(SEND): pgjobs.queue(Noop),
            self.queue(DRAIN_1): pgjobs.queue(Noop, concurrency=1),
            self.queue(DRAIN_10): pgjobs.queue(Noop, concurrency=10),
            self.queue(LATENCY): pgjobs.queue(Noop),
        }
        self.jobs = pgjobs.create_job_system(
            {"dsn": dsn, "schema": self.schema, "queues": queues}
        )
        self.handlers: dict[str, pgjobs.Handler] = {
            self.queue(SEND): self._count,
            self.queue(DRAIN_1): self._count,
            self.queue(DRAIN_10): self._count,
            self.queue(LATENCY): self._probe,
        }

    async def _count(self, payload: Noop) -> None:
        self.counter.hit()

    async def _probe(self, payload: Noop) -> None:
        self.probe.hit()

    async def install(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await self.jobs.migrate()

    async def open(self) -> None:
        await self.jobs.init_jobs(self.handlers, start_worker=False)

    async def close(self) -> None:
        await self.jobs.stop()

    async def send(self, kind: str, n: int) -> None:
        await self.jobs.send(self.queue(kind), {"n": n})

    async def send_many(self, kind: str, numbers: range) -> None:
        await self.jobs.send_many(self.queue(kind), [{"n": n} for n in numbers])

    async def start_drain(self, concurrency: int) -> None:
        queue = self.queue(DRAIN_QUEUES[concurrency])
        await self.jobs.init_jobs(self.handlers, queues=[queue])

    async def start_listener(self) -> None:
        await self.jobs.init_jobs(self.handlers, queues=[self.queue(LATENCY)])

    async def stop_worker(self) -> None:
        group = self.jobs.workers
        if group is not None:
            await group.stop()


class RawProcrastinate(Contender):
    """procrastinate's public API, with its default connector or a tuned pool."""

    def __init__(self, dsn: str, *, tuned: bool, pgjobs_tables: bool = False) -> None:
        super().__init__(dsn)
        self.tuned = tuned
        self.pgjobs_tables = pgjobs_tables
        self.label = "raw tuned pool" if tuned else "raw default"
        self.schema = "raw_tuned" if tuned else "raw_default"
        if pgjobs_tables:
            self.label += ", pgjobs schema"
            self.schema += "_pgjobs_schema"
        self.options = f"-c search_path={self.schema}"
        self.pool: psycopg_pool.AsyncConnectionPool | None = None
        if tuned:
            connector = procrastinate.PsycopgConnector()
        else:
            connector = procrastinate.PsycopgConnector(
                conninfo=dsn, kwargs={"options": self.options}
            )
        self.app = procrastinate.App(connector=connector)
        self.tasks = {
            kind: self.app.task(name=self.queue(kind), queue=self.queue(kind))(
                self._probe if kind == LATENCY else self._count
            )
            for kind in QUEUE_KINDS
        }
        self.worker: asyncio.Task[None] | None = None
        self.worker_waits = False

    async def _count(self, payload: dict[str, Any]) -> None:
        self.counter.hit()

    async def _probe(self, payload: dict[str, Any]) -> None:
        self.probe.hit()

    async def install(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self.pgjobs_tables:
            # procrastinate's tables with everything pgjobs' migrations add:
            # its indexes, triggers and pinned search paths.
            system = pgjobs.create_job_system({"dsn": self.dsn, "schema": self.schema})
            await system.migrate()
            await system.stop()
            return
        schema = sql.Identifier(self.schema)
        async with conn.transaction():
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            await conn.execute(sql.SQL("SET LOCAL search_path = {}").format(schema))
            await conn.execute(procrastinate.schema.SchemaManager.get_schema())

    async def open(self) -> None:
        if not self.tuned:
            await self.app.open_async()
            return
        self.pool = psycopg_pool.AsyncConnectionPool(
            self.dsn,
            kwargs={"options": self.options},
            min_size=POOL_DEFAULTS.min_size,
            max_size=POOL_DEFAULTS.max_size,
            max_idle=POOL_DEFAULTS.max_idle,
            configure=_autocommit,
            open=False,
        )
        await self.pool.open(wait=True)
        await self.app.open_async(self.pool)

    async def close(self) -> None:
        # A run interrupted mid-drain leaves a worker holding connections,
        # and closing the pool would wait for them.
        if self.worker is not None:
            self.worker_waits = True
            await self.stop_worker()
        await self.app.close_async()
        if self.pool is not None:
            await self.pool.close()

    async def send(self, kind: str, n: int) -> None:
        await self.tasks[kind].defer_async(payload={"n": n})

    async def send_many(self, kind: str, numbers: range) -> None:
        await self.tasks[kind].batch_defer_async(
            *({"payload": {"n": n}} for n in numbers)
        )

    async def start_drain(self, concurrency: int) -> None:
        # wait=False: the worker stops on its own once the queue is empty.
        self._start_worker(DRAIN_QUEUES[concurrency], concurrency, wait=False)

    async def start_listener(self) -> None:
        self._start_worker(LATENCY, 1, wait=True)

    def _start_worker(self, kind: str, concurrency: int, *, wait: bool) -> None:
        self.worker_waits = wait
        self.worker = asyncio.create_task(
            self.app.run_worker_async(
                queues=[self.queue(kind)],
                concurrency=concurrency,
                wait=wait,
                listen_notify=True,
                install_signal_handlers=False,
            )
        )

    async def stop_worker(self) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        if self.worker_waits:
            # procrastinate's worker treats cancellation as a graceful stop.
            worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def _autocommit(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(True)


def build(dsn: str, *, schema_check: bool = False) -> list[Contender]:
    """Return the contenders, pgjobs first.

    With `schema_check`, a fourth contender runs raw procrastinate with the
    tuned pool on a schema that pgjobs' migrations made. It separates what
    pgjobs' tables cost in the database from what its Python code costs.
    """
    everyone: list[Contender] = [
        PgJobs(dsn),
        RawProcrastinate(dsn, tuned=False),
        RawProcrastinate(dsn, tuned=True),
    ]
    if schema_check:
        everyone.append(RawProcrastinate(dsn, tuned=True, pgjobs_tables=True))
    return everyone
