"""Measure what pgjobs' schema adds to each job inside PostgreSQL.

Run `.venv/bin/python bench/db_cost.py [--dsn DSN]`. It installs several
schemas in a scratch database and, in each, calls procrastinate's own SQL
functions for N jobs, as pgjobs and procrastinate do:

- defer: `procrastinate_defer_jobs_v1`, one call per job;
- fetch + finish: `procrastinate_fetch_job_v2`, then
  `procrastinate_finish_job_v1(..., 'succeeded', false)`, one job at a time.

The schemas are procrastinate's tables alone, the tables as pgjobs'
migrations leave them, and that pgjobs schema less one kind of addition
each: its indexes on `procrastinate_jobs`, its triggers on it, and the
pinned search path of the functions. Additions are found in the catalog
by their `pgjobs_` prefix, so the script follows the migrations as they
change.

Each call commits, as a worker's does, with `synchronous_commit` off: the
figure is the server's time per job without the wait for the disk flush.
It moves with the machine's load, so the schemas take turns in a rotating
order and medians over rounds are shown. WAL volume is left out: on
PostgreSQL 15 it can only be read server-wide, where other sessions' writes
and full-page images after each checkpoint swamp it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import procrastinate.schema
import psycopg
import psycopg.conninfo
import run
from psycopg import sql

import pgjobs

DEFER_SQL = """
DO $defer$
BEGIN
    FOR i IN 1..{count} LOOP
        PERFORM procrastinate_defer_jobs_v1(ARRAY[
            ROW('cost', 'cost', 0, NULL, NULL,
                jsonb_build_object('payload', jsonb_build_object('n', i)), NULL
            )::procrastinate_job_to_defer_v1
        ]);
        COMMIT;
    END LOOP;
END
$defer$
"""

RUN_SQL = """
DO $run$
DECLARE
    worker bigint := procrastinate_register_worker_v1();
    job_id bigint;
BEGIN
    COMMIT;
    FOR i IN 1..{count} LOOP
        SELECT id INTO job_id
          FROM procrastinate_fetch_job_v2(ARRAY['cost']::varchar[], worker);
        COMMIT;
        PERFORM procrastinate_finish_job_v1(job_id, 'succeeded', false);
        COMMIT;
    END LOOP;
    PERFORM procrastinate_unregister_worker_v1(worker);
END
$run$
"""

DROP_INDEXES_SQL = """
DO $drop$
DECLARE
    name text;
BEGIN
    FOR name IN
        SELECT indexrelid::regclass::text FROM pg_index
         WHERE indrelid = 'procrastinate_jobs'::regclass
           AND indexrelid::regclass::text LIKE 'pgjobs\\_%'
    LOOP
        EXECUTE format('DROP INDEX %s', name);
    END LOOP;
END
$drop$
"""

DROP_TRIGGERS_SQL = """
DO $drop$
DECLARE
    name text;
BEGIN
    FOR name IN
        SELECT tgname FROM pg_trigger
         WHERE tgrelid = 'procrastinate_jobs'::regclass
           AND tgname LIKE 'pgjobs\\_%'
    LOOP
        EXECUTE format('DROP TRIGGER %I ON procrastinate_jobs', name);
    END LOOP;
END
$drop$
"""

UNPIN_SQL = """
DO $unpin$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT oid::regprocedure FROM pg_proc
         WHERE pronamespace = current_schema()::regnamespace
           AND proconfig IS NOT NULL
    LOOP
        EXECUTE format('ALTER FUNCTION %s RESET search_path', fn);
    END LOOP;
END
$unpin$
"""

# Schema name, and the statement that removes one kind of addition (None
# keeps pgjobs' schema whole). The first entry has procrastinate's alone.
VARIANTS: dict[str, tuple[str, str | None]] = {
    "procrastinate": ("cost_procrastinate", None),
    "pgjobs": ("cost_pgjobs", None),
    "pgjobs, no pgjobs indexes": ("cost_no_indexes", DROP_INDEXES_SQL),
    "pgjobs, no pgjobs triggers": ("cost_no_triggers", DROP_TRIGGERS_SQL),
    "pgjobs, no pinned search path": ("cost_no_pins", UNPIN_SQL),
}


async def install(dsn: str, admin: psycopg.AsyncConnection[Any]) -> None:
    """Create one schema per variant."""
    for label, (schema, removal) in VARIANTS.items():
        identifier = sql.Identifier(schema)
        if label == "procrastinate":
            async with admin.transaction():
                await admin.execute(sql.SQL("CREATE SCHEMA {}").format(identifier))
                await admin.execute(
                    sql.SQL("SET LOCAL search_path = {}").format(identifier)
                )
                await admin.execute(procrastinate.schema.SchemaManager.get_schema())
            continue

        system = pgjobs.create_job_system({"dsn": dsn, "schema": schema})
        await system.migrate()
        await system.stop()
        if removal is not None:
            async with admin.transaction():
                await admin.execute(
                    sql.SQL("SET LOCAL search_path = {}").format(identifier)
                )
                await admin.execute(sql.SQL(removal))  # type: ignore[arg-type]


async def phase(conn: psycopg.AsyncConnection[Any], template: str, count: int) -> float:
    """Run one phase for `count` jobs; return µs per job."""
    query = sql.SQL(template).format(count=sql.Literal(count))  # type: ignore[arg-type]
    start = time.perf_counter()
    await conn.execute(query)
    return (time.perf_counter() - start) / count * 1e6


async def measure(
    dsn: str, rounds: int, count: int
) -> dict[str, dict[str, list[float]]]:
    """Run every round; return the values per variant and figure."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await install(dsn, admin)
    connections = {
        label: await psycopg.AsyncConnection.connect(
            dsn,
            autocommit=True,
            # Commits do not wait for the disk, whose flush time depends on
            # everything else the server does, not on the schema.
            options=f"-c search_path={schema} -c synchronous_commit=off",
        )
        for label, (schema, _) in VARIANTS.items()
    }
    results: dict[str, dict[str, list[float]]] = {label: {} for label in VARIANTS}
    labels = list(VARIANTS)
    try:
        for round_number in range(rounds + 1):
            shift = round_number % len(labels)
            for label in labels[shift:] + labels[:shift]:
                conn = connections[label]
                await conn.execute("TRUNCATE procrastinate_jobs CASCADE")
                defer = await phase(conn, DEFER_SQL, count)
                await conn.execute("VACUUM ANALYZE procrastinate_jobs")
                work = await phase(conn, RUN_SQL, count)
                if round_number == 0:
                    continue  # the first round warms caches and is not counted

                values = {"defer": defer, "run": work}
                for key, value in values.items():
                    results[label].setdefault(key, []).append(value)
                line = ", ".join(f"{k} {v:.1f}" for k, v in values.items())
                run.log(f"  {label:<30} {line}")
    finally:
        for conn in connections.values():
            await conn.close()
    return results


def report(results: dict[str, dict[str, list[float]]]) -> list[str]:
    """Render medians per variant, and the ratio to procrastinate's schema."""
    columns = [("defer, µs", "defer"), ("fetch + finish, µs", "run")]
    base = {key: statistics.median(results["procrastinate"][key]) for _, key in columns}
    lines = [
        "| schema | " + " | ".join(title for title, _ in columns) + " |",
        "|--------|"
        + "|".join("-" * (len(title) + 1) + ":" for title, _ in columns)
        + "|",
    ]
    for label, values in results.items():
        cells = []
        for _, key in columns:
            value = statistics.median(values[key])
            cells.append(f"{value:.0f} ({value / base[key]:.2f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=run.DEFAULT_DSN)
    parser.add_argument("--database", default="pgjobs_bench_db_cost")
    parser.add_argument("--rounds", type=int, default=5, help="default: %(default)s")
    parser.add_argument(
        "--jobs", type=int, default=3000, help="jobs per phase (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=args.database)
    asyncio.run(run.create_database(args.dsn, args.database))
    try:
        results = asyncio.run(measure(dsn, args.rounds, args.jobs))
    finally:
        asyncio.run(run.drop_database(args.dsn, args.database))

    print(
        f"{args.jobs} jobs per phase; medians of {args.rounds} rounds, per job; "
        "in brackets, the ratio to procrastinate's schema"
    )
    print()
    print("\n".join(report(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
