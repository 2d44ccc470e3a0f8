"""Compare pgjobs with raw procrastinate on one PostgreSQL database.

Run with `make bench` or `.venv/bin/python bench/run.py [--dsn DSN]`. The
script creates a scratch database (`pgjobs_bench` by default) on the server
that `--dsn` names, installs one schema per contender, measures, prints
medians and ratios, and drops the database.

Contenders (see contenders.py): pgjobs; procrastinate with its default
`PsycopgConnector`; procrastinate opened with a tuned pool. Each round runs
every figure for every contender, one figure at a time. The order of the
contenders rotates from round to round, so a slow drift of the machine
(another process, a checkpoint, CPU frequency) falls on all of them alike.
Every measurement starts from empty queue tables.

contenders.py is imported as a top-level module: Python puts the folder of
the script it runs first on sys.path.

Figures:
- send: mean time of one `send` (pgjobs) or `defer_async` (raw), over N
  sequential calls, no worker running.
- send_many: mean time of one `send_many` / `batch_defer_async` call of a
  batch of B jobs.
- drain cN: time for a worker at concurrency N to run J queued no-op jobs,
  from the call that starts the worker to the end of the last handler call.
- latency p50/p99: with an idle worker (LISTEN/NOTIFY on), time from the
  start of the send call to the start of the handler, one job at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

import contenders
import psycopg
import psycopg.conninfo
import psycopg.pq
from contenders import DRAIN_1, DRAIN_10, LATENCY, SEND, Contender
from psycopg import sql

import pgjobs

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Figure:
    """One reported number: its key, label and unit."""

    key: str
    label: str
    unit: str


@dataclass(frozen=True)
class Settings:
    """Sizes of one run, from the command line."""

    rounds: int
    sends: int
    batches: int
    batch_size: int
    drain_jobs: int
    latency_samples: int
    latency_gap: float


def figures(settings: Settings) -> list[Figure]:
    """Return the reported figures, in report order."""
    jobs = f"{settings.drain_jobs:,}"
    return [
        Figure("send", "send, one job", "µs/call"),
        Figure("send_many", f"send_many, {settings.batch_size} jobs", "ms/call"),
        Figure("drain_c1", f"drain {jobs} jobs, concurrency 1", "s"),
        Figure("drain_c10", f"drain {jobs} jobs, concurrency 10", "s"),
        Figure("latency_p50", "enqueue-to-start p50", "ms"),
        Figure("latency_p99", "enqueue-to-start p99", "ms"),
    ]


def cpu_figures(settings: Settings) -> list[Figure]:
    """Return the client CPU figures: time of the benchmark process, per job."""
    return [
        Figure("cpu_send", "send, one job", "µs/job"),
        Figure("cpu_send_many", "send_many", "µs/job"),
        Figure("cpu_drain_c1", "drain, concurrency 1", "µs/job"),
        Figure("cpu_drain_c10", "drain, concurrency 10", "µs/job"),
        Figure("cpu_latency", "send + run, idle worker", "µs/job"),
    ]


class Bench:
    """Runs the measurements of one contender on the benchmark database."""

    def __init__(
        self,
        admin: psycopg.AsyncConnection[Any],
        settings: Settings,
        only: list[str] | None = None,
    ) -> None:
        self.admin = admin
        self.settings = settings
        self.only = only

    async def send(self, contender: Contender) -> dict[str, float]:
        await contender.truncate(self.admin)
        count = self.settings.sends
        cpu = time.process_time()
        start = time.perf_counter()
        for n in range(count):
            await contender.send(SEND, n)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        return {"send": elapsed / count * 1e6, "cpu_send": cpu / count * 1e6}

    async def send_many(self, contender: Contender) -> dict[str, float]:
        await contender.truncate(self.admin)
        size = self.settings.batch_size
        count = self.settings.batches
        cpu = time.process_time()
        start = time.perf_counter()
        for batch in range(count):
            await contender.send_many(SEND, range(batch * size, (batch + 1) * size))
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        return {
            "send_many": elapsed / count * 1e3,
            "cpu_send_many": cpu / (count * size) * 1e6,
        }

    async def drain(self, contender: Contender, concurrency: int) -> dict[str, float]:
        await contender.truncate(self.admin)
        await self._fill(contender, concurrency)
        count = self.settings.drain_jobs
        contender.counter.expect(count)
        cpu = time.process_time()
        start = time.perf_counter()
        await contender.start_drain(concurrency)
        await contender.counter.done.wait()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        await contender.stop_worker()
        key = f"drain_c{concurrency}"
        return {key: elapsed, f"cpu_{key}": cpu / count * 1e6}

    async def _fill(self, contender: Contender, concurrency: int) -> None:
        kind = DRAIN_1 if concurrency == 1 else DRAIN_10
        total = self.settings.drain_jobs
        for first in range(0, total, 1000):
            await contender.send_many(kind, range(first, min(first + 1000, total)))
        # Settle the new rows' visibility hints, so the drain that follows
        # does not pay for them and every contender starts alike.
        await self.admin.execute(
            sql.SQL("VACUUM ANALYZE {}").format(
                sql.Identifier(contender.schema, "procrastinate_jobs")
            )
        )

    async def drain_c1(self, contender: Contender) -> dict[str, float]:
        return await self.drain(contender, 1)

    async def drain_c10(self, contender: Contender) -> dict[str, float]:
        return await self.drain(contender, 10)

    async def latency(self, contender: Contender) -> dict[str, float]:
        await contender.truncate(self.admin)
        await contender.start_listener()
        # Let the worker reach its idle wait before the first sample.
        await asyncio.sleep(0.5)
        samples = []
        cpu = time.process_time()
        try:
            for n in range(self.settings.latency_samples):
                started = contender.probe.arm()
                sent = time.perf_counter()
                await contender.send(LATENCY, n)
                samples.append((await asyncio.wait_for(started, 30)) - sent)
                await asyncio.sleep(self.settings.latency_gap)
            cpu = time.process_time() - cpu
        finally:
            await contender.stop_worker()
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        return {
            "latency_p50": cuts[49] * 1e3,
            "latency_p99": cuts[98] * 1e3,
            "cpu_latency": cpu / len(samples) * 1e6,
        }

    def steps(self) -> list[Callable[[Contender], Awaitable[dict[str, float]]]]:
        """Return the measuring steps in run order, those of `only` if set."""
        steps = [self.send, self.send_many, self.drain_c1, self.drain_c10, self.latency]
        if self.only:
            steps = [step for step in steps if step.__name__ in self.only]
        return steps


# Marks the databases this script creates, so that it never drops another.
DATABASE_COMMENT = "pgjobs benchmark scratch database"


async def create_database(admin_dsn: str, name: str) -> None:
    """Create the scratch database, replacing one left by an earlier run."""
    await drop_database(admin_dsn, name)
    async with await psycopg.AsyncConnection.connect(
        admin_dsn, autocommit=True
    ) as conn:
        database = sql.Identifier(name)
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(database))
        await conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                database, sql.Literal(DATABASE_COMMENT)
            )
        )


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop the scratch database; raise if `name` is some other database."""
    async with await psycopg.AsyncConnection.connect(
        admin_dsn, autocommit=True
    ) as conn:
        cursor = await conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname = %s",
            [name],
        )
        row = await cursor.fetchone()
        if row is None:
            return
        if row[0] != DATABASE_COMMENT:
            raise SystemExit(
                f"database {name!r} exists and was not created by this benchmark; "
                "pass another --database"
            )
        await conn.execute(
            sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
        )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def warm_up(bench: Bench, everyone: list[Contender]) -> None:
    """Run every step once, small, so pools and server caches are warm."""
    full = bench.settings
    bench.settings = Settings(
        rounds=1,
        sends=50,
        batches=5,
        batch_size=full.batch_size,
        drain_jobs=min(full.drain_jobs, 1000),
        latency_samples=20,
        latency_gap=full.latency_gap,
    )
    try:
        for contender in everyone:
            for step in bench.steps():
                await step(contender)
    finally:
        bench.settings = full


async def measure(
    dsn: str,
    settings: Settings,
    *,
    only: list[str] | None,
    steps: list[str] | None,
    schema_check: bool,
) -> tuple[dict[str, dict[str, list[float]]], str]:
    """Run every round; return the values per contender and figure."""
    everyone = contenders.build(dsn, schema_check=schema_check)
    if only:
        everyone = [c for c in everyone if c.label in only]
    results: dict[str, dict[str, list[float]]] = {c.label: {} for c in everyone}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        row = await (await admin.execute("SHOW server_version")).fetchone()
        server_version = row[0] if row else "?"
        for contender in everyone:
            await contender.install(admin)
        for contender in everyone:
            await contender.open()
        bench = Bench(admin, settings, steps)
        try:
            log("warming up")
            await warm_up(bench, everyone)
            for round_number in range(settings.rounds):
                shift = round_number % len(everyone)
                order = everyone[shift:] + everyone[:shift]
                log(f"round {round_number + 1}/{settings.rounds}")
                for step in bench.steps():
                    for contender in order:
                        values = await step(contender)
                        for key, value in values.items():
                            results[contender.label].setdefault(key, []).append(value)
                        line = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
                        log(f"  {contender.label:<15} {line}")
        finally:
            for contender in everyone:
                await contender.close()
    return results, server_version


def paired_ratios(mine: list[float], theirs: list[float]) -> list[float]:
    """Return mine/theirs per round; pairing cancels drift between rounds."""
    return [a / b for a, b in zip(mine, theirs, strict=True)]


def describe_ratios(ratios: list[float]) -> str:
    """Return the median ratio, and its range over rounds when there are several."""
    median = f"{statistics.median(ratios):.3f}"
    if len(ratios) < 2:
        return median
    return f"{median} ({min(ratios):.2f}-{max(ratios):.2f})"


def table(
    results: dict[str, dict[str, list[float]]], selected: list[Figure]
) -> list[str]:
    """Render medians per contender and pgjobs' paired ratios as Markdown."""
    labels = list(results)
    others = [label for label in labels if label != "pgjobs"]
    with_ratios = "pgjobs" in results
    columns = ["figure", "unit", *labels]
    if with_ratios:
        columns += [f"pgjobs / {label}" for label in others]
    rows = [columns]

    for figure in selected:
        row = [figure.label, figure.unit]
        for label in labels:
            values = results[label].get(figure.key)
            row.append(f"{statistics.median(values):.3f}" if values else "-")
        if with_ratios:
            mine = results["pgjobs"].get(figure.key)
            for label in others:
                theirs = results[label].get(figure.key)
                if mine and theirs:
                    row.append(describe_ratios(paired_ratios(mine, theirs)))
                else:
                    row.append("-")
        rows.append(row)

    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.ljust(width) if index < 2 or number == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if number == 0:
            lines.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return lines


def report(
    results: dict[str, dict[str, list[float]]],
    settings: Settings,
    header: list[str],
) -> str:
    """Return the whole report: the header, the figures and client CPU."""
    lines = [*header, ""]
    lines += table(results, figures(settings))
    lines += ["", "Client CPU (the benchmark process, workers included):", ""]
    lines += table(results, cpu_figures(settings))
    lines += [
        "",
        "Values are medians over rounds; lower is better. A ratio is the median "
        "over rounds of pgjobs' value divided by the other's value in the same "
        "round, so above 1 means pgjobs is slower; the lowest and highest of "
        "those per-round ratios follow in brackets.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark pgjobs against raw procrastinate.",
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGJOBS_BENCH_DSN", DEFAULT_DSN),
        help="server to use, through a database that may be connected to "
        f"(default: $PGJOBS_BENCH_DSN or {DEFAULT_DSN})",
    )
    parser.add_argument(
        "--database",
        default="pgjobs_bench",
        help="scratch database created and dropped by the run (default: %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="default: %(default)s")
    parser.add_argument(
        "--sends", type=int, default=1000, help="sends per round (default: %(default)s)"
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=50,
        help="send_many calls per round (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="jobs per send_many call (default: %(default)s)",
    )
    parser.add_argument(
        "--drain-jobs",
        type=int,
        default=10_000,
        help="jobs per drain (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-samples",
        type=int,
        default=200,
        help="jobs per latency round (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-gap",
        type=float,
        default=0.01,
        help="seconds between latency jobs, so the worker is idle again "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[
            "pgjobs",
            "raw default",
            "raw tuned pool",
            "raw tuned pool, pgjobs schema",
        ],
        help="run only this contender (repeatable)",
    )
    parser.add_argument(
        "--schema-check",
        action="store_true",
        help="add raw procrastinate (tuned pool) on a schema made by pgjobs' "
        "migrations, to tell the database's share of pgjobs' cost from Python's",
    )
    parser.add_argument(
        "--step",
        action="append",
        choices=["send", "send_many", "drain_c1", "drain_c10", "latency"],
        help="run only this measurement (repeatable)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write raw values here")
    parser.add_argument(
        "--keep-database", action="store_true", help="do not drop the database"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        rounds=args.rounds,
        sends=args.sends,
        batches=args.batches,
        batch_size=args.batch_size,
        drain_jobs=args.drain_jobs,
        latency_samples=args.latency_samples,
        latency_gap=args.latency_gap,
    )
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=args.database)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    asyncio.run(create_database(args.dsn, args.database))
    try:
        results, server_version = asyncio.run(
            measure(
                dsn,
                settings,
                only=args.only,
                steps=args.step,
                schema_check=args.schema_check,
            )
        )
    finally:
        if not args.keep_database:
            asyncio.run(drop_database(args.dsn, args.database))
    minutes = (time.perf_counter() - started) / 60
    header = [
        f"PostgreSQL {server_version}; Python {platform.python_version()}; "
        f"{os.cpu_count()} CPUs; load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after",
        f"pgjobs {pgjobs.__version__}; procrastinate "
        f"{metadata.version('procrastinate')}; psycopg {psycopg.__version__} "
        f"({psycopg.pq.__impl__} libpq wrapper); psycopg_pool "
        f"{metadata.version('psycopg-pool')}",
        f"{settings.rounds} rounds in {minutes:.1f} min",
        f"send: {settings.sends} calls/round; send_many: {settings.batches} calls "
        f"of {settings.batch_size}/round; drain: {settings.drain_jobs} jobs; "
        f"latency: {settings.latency_samples} jobs/round, "
        f"{settings.latency_gap * 1e3:g} ms apart",
    ]
    print(report(results, settings, header))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as output:
            json.dump(
                {"header": header, "settings": asdict(settings), "results": results},
                output,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
