"""Dashboard speed at a million jobs, and what its indexes cost writers.

Run with one command (the local PostgreSQL by default):

    .venv/bin/python bench/dashboard.py [--dsn DSN] [--jobs 1000000]

The script creates the database `pgjobs_bench_dashboard` on the server that
`--dsn` names, installs two schemas, fills each with `--jobs` jobs across five
queues and every state, with procrastinate events and pgjobs attempt
records, then:

1. measures the write path in two schemas filled alike, one without the
   objects of migration 0002 and one with them, alternating between them
   for `--rounds` rounds: `send` latency, the worker's claim
   (procrastinate_fetch_job_v2) and finish (procrastinate_finish_job_v1)
   called in a loop as a worker calls them, and a real pgjobs worker
   draining no-op jobs;
2. times each dashboard method over `--repeat` calls and prints medians;
3. prints EXPLAIN (ANALYZE, BUFFERS) summaries of the main queries;

and drops the database unless `--keep` is given.

The fill writes rows with INSERT ... SELECT over generate_series and
triggers off (session_replication_role = replica). The rows look like what
pgjobs and procrastinate write themselves; the counters of migration 0002
are rebuilt from them when the migration is applied.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, LiteralString

import psycopg
import psycopg.conninfo
from psycopg import sql

import pgjobs
from pgjobs import _dashboard_args, _dashboard_queries

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "pgjobs_bench_dashboard"
# Two copies of the same jobs: one schema with migration 0002, one without.
DASHBOARD_SCHEMA = "with_dashboard"
PLAIN_SCHEMA = "without_dashboard"
SCHEMAS = (PLAIN_SCHEMA, DASHBOARD_SCHEMA)
BENCH_QUEUE = "bench"
# Above every filled job's priority, so that the claim query finds the bench
# jobs first, as it would on a system whose other queues are drained.
BENCH_PRIORITY = 10

QUEUES = ("emails", "reports", "images", "webhooks", "exports")

# One row per job: its state, queue and times. The oldest 90% of the ids are
# finished; the newest 10% mix every state, as on a busy system where the
# waiting and running jobs are the recent ones.
PLAN_SQL = """
CREATE TEMP TABLE bench_plan AS
WITH base AS (
    SELECT g AS id,
           abs(hashint4(g)) %% 1000 AS dice,
           g > %(jobs)s * 0.9 AS recent,
           now() - make_interval(secs => (%(jobs)s - g) * 2.0) AS created_at
      FROM generate_series(1, %(jobs)s) AS g
)
SELECT id,
       created_at,
       (%(queues)s::text[])[1 + abs(hashint4(id + 7)) %% 5] AS queue_name,
       CASE
           WHEN NOT recent THEN CASE
               WHEN dice < 900 THEN 'succeeded'
               WHEN dice < 950 THEN 'failed'
               WHEN dice < 975 THEN 'cancelled'
               ELSE 'aborted'
           END
           WHEN dice < 500 THEN 'succeeded'
           WHEN dice < 530 THEN 'failed'
           WHEN dice < 540 THEN 'cancelled'
           WHEN dice < 550 THEN 'aborted'
           WHEN dice < 850 THEN 'queued'
           WHEN dice < 930 THEN 'scheduled'
           WHEN dice < 998 THEN 'retrying'
           ELSE 'running'
       END AS state,
       CASE WHEN abs(hashint4(id + 11)) %% 50 = 0 THEN 'key-' || id END AS singleton,
       CASE WHEN abs(hashint4(id + 13)) %% 20 = 0 THEN 5 ELSE 0 END AS priority
  FROM base
"""

JOBS_SQL = """
INSERT INTO procrastinate_jobs (
    id, queue_name, task_name, priority, lock, queueing_lock, args, status,
    scheduled_at, attempts, abort_requested, worker_id
)
SELECT id,
       queue_name,
       queue_name,
       priority,
       NULL,
       singleton,
       jsonb_build_object(
           'payload',
           jsonb_build_object(
               'user', 'user-' || id % 50000,
               'email', 'user' || id % 50000 || '@example.com',
               'n', id
           )
       ),
       CASE state
           WHEN 'queued' THEN 'todo'
           WHEN 'scheduled' THEN 'todo'
           WHEN 'retrying' THEN 'todo'
           WHEN 'running' THEN 'doing'
           ELSE state
       END::procrastinate_job_status,
       CASE state
           WHEN 'scheduled' THEN now() + interval '1 day'
           WHEN 'retrying' THEN now() + interval '10 minutes'
       END,
       CASE state
           WHEN 'failed' THEN 3
           WHEN 'retrying' THEN 1
           WHEN 'queued' THEN 0
           WHEN 'scheduled' THEN 0
           ELSE 1
       END,
       state = 'aborted',
       NULL
  FROM bench_plan
"""

# Events as procrastinate's triggers would have written them.
EVENTS_SQL = """
INSERT INTO procrastinate_events (job_id, type, at)
SELECT id, 'deferred'::procrastinate_job_event_type, created_at FROM bench_plan
UNION ALL
SELECT id, 'scheduled', now() + interval '1 day'
  FROM bench_plan WHERE state = 'scheduled'
UNION ALL
SELECT id, 'started', created_at + interval '1 second'
  FROM bench_plan
 WHERE state IN ('succeeded', 'failed', 'aborted', 'running', 'retrying')
UNION ALL
SELECT id, 'succeeded', created_at + interval '1.5 seconds'
  FROM bench_plan WHERE state = 'succeeded'
UNION ALL
SELECT id, t.type::procrastinate_job_event_type, created_at + t.offset_
  FROM bench_plan
 CROSS JOIN (VALUES
     ('deferred_for_retry', interval '2 seconds'),
     ('started', interval '3 seconds'),
     ('deferred_for_retry', interval '4 seconds'),
     ('started', interval '5 seconds'),
     ('failed', interval '6 seconds')
 ) AS t(type, offset_)
 WHERE state = 'failed'
UNION ALL
SELECT id, 'deferred_for_retry', created_at + interval '2 seconds'
  FROM bench_plan WHERE state = 'retrying'
UNION ALL
SELECT id, 'cancelled', created_at + interval '30 seconds'
  FROM bench_plan WHERE state = 'cancelled'
UNION ALL
SELECT id, t.type::procrastinate_job_event_type, created_at + t.offset_
  FROM bench_plan
 CROSS JOIN (VALUES
     ('abort_requested', interval '10 seconds'),
     ('aborted', interval '11 seconds')
 ) AS t(type, offset_)
 WHERE state = 'aborted'
"""

ATTEMPTS_SQL = """
INSERT INTO pgjobs_attempts (
    job_id, attempt, outcome, worker_id, worker_name, started_at, finished_at,
    result, error_type, error_message, traceback
)
SELECT id, n, 'failed', 1, 'bench-worker',
       created_at + make_interval(secs => 2 * n - 1),
       created_at + make_interval(secs => 2 * n),
       NULL, 'ConnectionError', 'connection reset by peer (attempt ' || n || ')',
       repeat('  File "app/tasks.py", line 42, in handler' || chr(10), 12)
  FROM bench_plan
 CROSS JOIN generate_series(1, 3) AS n
 WHERE state = 'failed' OR (state = 'retrying' AND n = 1)
UNION ALL
SELECT id, 1, 'succeeded', 1, 'bench-worker',
       created_at + interval '1 second', created_at + interval '1.5 seconds',
       jsonb_build_object('ok', true, 'n', id), NULL, NULL, NULL
  FROM bench_plan
 WHERE state = 'succeeded' AND abs(hashint4(id + 17)) % 10 = 0
UNION ALL
SELECT id, 1, 'aborted', 1, 'bench-worker',
       created_at + interval '1 second', created_at + interval '11 seconds',
       NULL, 'asyncio.exceptions.CancelledError', '', NULL
  FROM bench_plan WHERE state = 'aborted'
"""


def fill(conn: psycopg.Connection[Any], jobs: int) -> None:
    """Write `jobs` jobs with events and attempts; the schema is on the path."""
    with conn.transaction():
        # replica mode skips triggers, including foreign-key checks.
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(PLAN_SQL, {"jobs": jobs, "queues": list(QUEUES)})
        conn.execute(JOBS_SQL)
        conn.execute(EVENTS_SQL)
        conn.execute(ATTEMPTS_SQL)
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('procrastinate_jobs', 'id'), %s)",
            [jobs],
        )
        conn.execute("DROP TABLE bench_plan")


# Everything migration 0002 creates, for the schema that goes without it.
DROP_DASHBOARD_SQL = """
DROP TRIGGER pgjobs_count_inserted_job ON procrastinate_jobs;
DROP TRIGGER pgjobs_count_updated_job ON procrastinate_jobs;
DROP TRIGGER pgjobs_count_deleted_jobs ON procrastinate_jobs;
DROP TRIGGER pgjobs_reset_job_counts ON procrastinate_jobs;
DROP FUNCTION pgjobs_count_finished_job();
DROP FUNCTION pgjobs_count_deleted_jobs();
DROP FUNCTION pgjobs_reset_job_counts();
DROP FUNCTION pgjobs_rebuild_job_counts();
DROP FUNCTION pgjobs_add_job_count(varchar, procrastinate_job_status, bigint);
DROP FUNCTION pgjobs_job_state(procrastinate_job_status, timestamptz, integer);
DROP TABLE pgjobs_job_counts;
DROP INDEX pgjobs_jobs_live_idx;
DROP INDEX pgjobs_jobs_finished_idx;
DROP INDEX pgjobs_jobs_singleton_key_idx;
DROP INDEX pgjobs_jobs_payload_idx;
"""


def migration_sql() -> LiteralString:
    folder = resources.files("pgjobs.sql") / "migrations"
    text: LiteralString = (folder / "0002_dashboard_indexes.sql").read_text(
        encoding="utf-8"
    )
    return text


def connect(dsn: str, schema: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    return conn


def recreate_database(server: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        name = sql.Identifier(DATABASE)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    return psycopg.conninfo.make_conninfo(server, dbname=DATABASE)


def drop_database(server: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        name = sql.Identifier(DATABASE)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def milliseconds(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p95_ms": p95 * 1000,
        "n": len(ordered),
    }


def config(dsn: str, schema: str) -> dict[str, Any]:
    queues: dict[str, Any] = {name: pgjobs.queue() for name in QUEUES}
    queues[BENCH_QUEUE] = pgjobs.queue(priority=BENCH_PRIORITY, concurrency=10)
    return {
        "dsn": dsn,
        "schema": schema,
        "queues": queues,
        "clean_orphans": False,
        "worker": {"polling_interval": 0.1, "graceful_timeout": 5},
    }


async def noop(payload: dict[str, Any]) -> None:
    return None


# -- write path ---------------------------------------------------------


async def time_sends(jobs: pgjobs.JobSystem, count: int) -> list[float]:
    samples = []
    for n in range(count):
        started = time.perf_counter()
        await jobs.send(BENCH_QUEUE, {"n": n, "user": f"bench-{n}"})
        samples.append(time.perf_counter() - started)
    return samples


def time_claims_and_finishes(
    dsn: str, schema: str, count: int
) -> tuple[list[float], list[float]]:
    """Claim and finish the bench queue's jobs one by one, as a worker does.

    One job in ten ends as failed, the rest as succeeded.
    """
    claims, finishes = [], []
    with connect(dsn, schema) as conn:
        worker = conn.execute("SELECT procrastinate_register_worker_v1()").fetchone()
        assert worker is not None
        for n in range(count):
            started = time.perf_counter()
            row = conn.execute(
                "SELECT id FROM procrastinate_fetch_job_v2(%s, %s)",
                [[BENCH_QUEUE], worker[0]],
            ).fetchone()
            claimed = time.perf_counter()
            if row is None or row[0] is None:
                break
            status = "failed" if n % 10 == 0 else "succeeded"
            conn.execute(
                "SELECT procrastinate_finish_job_v1(%s, %s, false)", [row[0], status]
            )
            finished = time.perf_counter()
            claims.append(claimed - started)
            finishes.append(finished - claimed)
        conn.execute("SELECT procrastinate_unregister_worker_v1(%s)", worker)
    return claims, finishes


async def time_drain(dsn: str, schema: str, count: int) -> float:
    """Return the seconds a pgjobs worker (concurrency 10) takes for `count` jobs."""
    jobs = pgjobs.create_job_system(config(dsn, schema))
    try:
        await jobs.send_many(BENCH_QUEUE, [{"n": n} for n in range(count)])
        started = time.perf_counter()
        await jobs.init_jobs(
            {**{name: noop for name in QUEUES}, BENCH_QUEUE: noop},
            queues=[BENCH_QUEUE],
        )
        # Polled with plain SQL: the schema without migration 0002 has no
        # dashboard.
        table = sql.Identifier(schema, "procrastinate_jobs")
        query = sql.SQL(
            "SELECT count(*) FROM {} WHERE queue_name = %s "
            "AND status IN ('todo', 'doing')"
        ).format(table)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while True:
                cursor = await conn.execute(query, [BENCH_QUEUE])
                row = await cursor.fetchone()
                if row is not None and row[0] == 0:
                    break
                await asyncio.sleep(0.02)
        return time.perf_counter() - started
    finally:
        await jobs.stop()


async def measure_writes(
    dsn: str, rounds: int, count: int
) -> dict[str, dict[str, Any]]:
    """Time the write path of both schemas, alternating in every round.

    Alternating puts both schemas under the same load from the rest of the
    machine, round after round; the order within a round flips each time.
    """
    samples: dict[str, dict[str, list[float]]] = {
        schema: {"send": [], "claim": [], "finish": [], "drain": []}
        for schema in SCHEMAS
    }
    for round_number in range(rounds):
        order = SCHEMAS if round_number % 2 == 0 else SCHEMAS[::-1]
        print(f"write round {round_number + 1}/{rounds}", flush=True)
        for schema in order:
            jobs = pgjobs.create_job_system(config(dsn, schema))
            try:
                samples[schema]["send"] += await time_sends(jobs, count)
            finally:
                await jobs.stop()
            claims, finishes = await asyncio.to_thread(
                time_claims_and_finishes, dsn, schema, count
            )
            samples[schema]["claim"] += claims
            samples[schema]["finish"] += finishes
            samples[schema]["drain"].append(await time_drain(dsn, schema, count))
    report = {}
    for schema, steps in samples.items():
        report[schema] = {
            "send": milliseconds(steps["send"]),
            "claim": milliseconds(steps["claim"]),
            "finish": milliseconds(steps["finish"]),
            "drain": {
                "jobs_per_second": count / statistics.median(steps["drain"]),
                "rounds": len(steps["drain"]),
            },
        }
    return report


def prepare_schemas(dsn: str, jobs: int) -> dict[str, float]:
    """Fill both schemas; then apply migration 0002 to the dashboard one."""
    timings = {}
    for schema in SCHEMAS:
        with connect(dsn, schema) as conn:
            with conn.transaction():
                conn.execute(DROP_DASHBOARD_SQL)
            print(f"filling {schema} with {jobs} jobs", flush=True)
            started = time.perf_counter()
            fill(conn, jobs)
            timings[f"fill_{schema}_seconds"] = time.perf_counter() - started
    with connect(dsn, DASHBOARD_SCHEMA) as conn:
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(migration_sql())
        timings["migration_0002_seconds"] = time.perf_counter() - started
    # The CHECKPOINT writes out what the fill and the index build left dirty,
    # so that the measurements do not compete with that I/O for commits.
    with connect(dsn, DASHBOARD_SCHEMA) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    return timings


# -- dashboard reads ----------------------------------------------------


def read_cases(dsn: str) -> dict[str, Callable[[pgjobs.JobSystem], Awaitable[Any]]]:
    """Return the dashboard calls to time, by label."""
    with connect(dsn, DASHBOARD_SCHEMA) as conn:
        row = conn.execute(
            "SELECT min(id) FILTER (WHERE status = 'failed' AND attempts = 3), "
            "max(id) FROM procrastinate_jobs"
        ).fetchone()
        key = conn.execute(
            "SELECT queueing_lock FROM procrastinate_jobs "
            "WHERE queueing_lock IS NOT NULL AND status = 'succeeded' LIMIT 1"
        ).fetchone()
    assert row is not None
    assert key is not None
    failed_id, last_id = row
    # A cursor as deep as the tenth of the table from its oldest end.
    deep = _dashboard_args.encode_cursor(max(2, last_id // 10), 18_001)
    return {
        "get_stats()": lambda jobs: jobs.dashboard.get_stats(),
        "get_recent_jobs() first page": lambda jobs: jobs.dashboard.get_recent_jobs(),
        "get_recent_jobs(cursor=deep)": lambda jobs: jobs.dashboard.get_recent_jobs(
            cursor=deep
        ),
        "get_recent_jobs(page=200), OFFSET 9950": (
            lambda jobs: jobs.dashboard.get_recent_jobs(page=200)
        ),
        "get_recent_jobs(queue)": lambda jobs: jobs.dashboard.get_recent_jobs(
            queue="emails"
        ),
        "get_recent_jobs(queue, cursor=deep)": (
            lambda jobs: jobs.dashboard.get_recent_jobs(queue="emails", cursor=deep)
        ),
        "get_recent_jobs(state=failed)": lambda jobs: jobs.dashboard.get_recent_jobs(
            state="failed"
        ),
        "get_recent_jobs(state=failed, cursor=deep)": (
            lambda jobs: jobs.dashboard.get_recent_jobs(state="failed", cursor=deep)
        ),
        "get_recent_jobs(state=retrying)": (
            lambda jobs: jobs.dashboard.get_recent_jobs(state="retrying")
        ),
        "get_recent_jobs(queue, state=queued)": (
            lambda jobs: jobs.dashboard.get_recent_jobs(queue="emails", state="queued")
        ),
        "get_recent_jobs(queue, state=failed, cursor=deep)": (
            lambda jobs: jobs.dashboard.get_recent_jobs(
                queue="emails", state="failed", cursor=deep
            )
        ),
        "get_recent_jobs(search=payload value)": (
            lambda jobs: jobs.dashboard.get_recent_jobs(search="user-4242")
        ),
        "get_recent_jobs(search=singleton key)": (
            lambda jobs: jobs.dashboard.get_recent_jobs(search=key[0])
        ),
        "get_recent_jobs(search=job id)": (
            lambda jobs: jobs.dashboard.get_recent_jobs(search=str(failed_id))
        ),
        "get_data()": lambda jobs: jobs.dashboard.get_data(),
        "get_job_by_id(failed, 3 attempts)": (
            lambda jobs: jobs.dashboard.get_job_by_id(failed_id)
        ),
    }


async def measure_reads(dsn: str, repeat: int) -> dict[str, dict[str, float]]:
    jobs = pgjobs.create_job_system(config(dsn, DASHBOARD_SCHEMA))
    results = {}
    try:
        for label, call in read_cases(dsn).items():
            for _ in range(2):
                await call(jobs)
            samples = []
            for _ in range(repeat):
                started = time.perf_counter()
                await call(jobs)
                samples.append(time.perf_counter() - started)
            results[label] = milliseconds(samples)
    finally:
        await jobs.stop()
    return results


# -- EXPLAIN ------------------------------------------------------------


def explain_cases(dsn: str) -> dict[str, tuple[LiteralString, dict[str, Any]]]:
    with connect(dsn, DASHBOARD_SCHEMA) as conn:
        row = conn.execute("SELECT max(id) FROM procrastinate_jobs").fetchone()
    assert row is not None
    deep_before = max(2, row[0] // 10)

    def page(before: int, **filters: Any) -> dict[str, Any]:
        query = _dashboard_args.page_query(
            page=1,
            per_page=50,
            queue=filters.get("queue"),
            state=filters.get("state"),
            task=None,
            search=filters.get("search"),
            cursor=None,
        )
        return query.params(limit=51, offset=0, before=before)

    q = _dashboard_queries
    return {
        "stats": (q.STATS_SQL, {}),
        "page, no filter": (q._page_sql("latest"), page(2**63 - 1)),
        "page, queue, deep": (
            q._page_sql("filtered"),
            page(deep_before, queue="emails"),
        ),
        "page, state=failed": (
            q._page_sql("filtered"),
            page(2**63 - 1, state="failed"),
        ),
        "page, queue + state=queued": (
            q._page_sql("filtered"),
            page(2**63 - 1, queue="emails", state="queued"),
        ),
        "page, search": (q._page_sql("search"), page(2**63 - 1, search="user-4242")),
        "count, no filter": (q.COUNT_SQL, page(2**63 - 1)),
        "count, state=retrying": (q.COUNT_SQL, page(2**63 - 1, state="retrying")),
        "job detail": (q.JOB_DETAIL_SQL, {"job_id": deep_before}),
    }


def _walk(plan: dict[str, Any]) -> list[str]:
    nodes = []
    node = plan["Node Type"]
    if "Index Name" in plan:
        node += f" using {plan['Index Name']}"
    elif "Relation Name" in plan:
        node += f" on {plan['Relation Name']}"
    if "Index Name" in plan or ("Scan" in node and "Relation Name" in plan):
        nodes.append(node)
    for child in plan.get("Plans", []):
        nodes.extend(_walk(child))
    return nodes


def explain(dsn: str) -> dict[str, dict[str, Any]]:
    """Summarise EXPLAIN (ANALYZE, BUFFERS) of the main queries, as run."""
    summaries = {}
    with connect(dsn, DASHBOARD_SCHEMA) as conn:
        for label, (statement, params) in explain_cases(dsn).items():
            # The same settings as _dashboard_queries.read_snapshot.
            with conn.transaction():
                conn.execute("SET LOCAL jit = off")
                conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                row = conn.execute(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement,
                    params,
                    prepare=False,
                ).fetchone()
            assert row is not None
            result = row[0][0]
            plan = result["Plan"]
            summaries[label] = {
                "execution_ms": result["Execution Time"],
                "planning_ms": result["Planning Time"],
                "shared_hit": plan.get("Shared Hit Blocks", 0),
                "shared_read": plan.get("Shared Read Blocks", 0),
                "scans": sorted(set(_walk(plan))),
            }
    return summaries


# -- report -------------------------------------------------------------


def sizes(dsn: str) -> dict[str, Any]:
    with connect(dsn, DASHBOARD_SCHEMA) as conn:
        states = conn.execute(
            "SELECT pgjobs_job_state(status, scheduled_at, attempts), count(*) "
            "FROM procrastinate_jobs GROUP BY 1 ORDER BY 1"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexrelid::regclass::text, "
            "pg_size_pretty(pg_relation_size(indexrelid)) FROM pg_index "
            "WHERE indrelid = 'procrastinate_jobs'::regclass AND "
            "indexrelid::regclass::text LIKE '%pgjobs_jobs%' ORDER BY 1"
        ).fetchall()
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM procrastinate_events), "
            "(SELECT count(*) FROM pgjobs_attempts)"
        ).fetchone()
        server = conn.execute("SHOW server_version").fetchone()
    assert counts is not None
    assert server is not None
    return {
        "states": dict(states),
        "events": counts[0],
        "attempts": counts[1],
        "dashboard_indexes": dict(indexes),
        "server_version": server[0],
    }


def print_report(report: dict[str, Any]) -> None:
    print(json.dumps(report, indent=2, default=str))
    print("\n## Dashboard reads (ms)\n")
    print("| call | median | p95 |")
    print("|---|---:|---:|")
    for label, figures in report["reads"].items():
        print(f"| `{label}` | {figures['median_ms']:.2f} | {figures['p95_ms']:.2f} |")
    print("\n## Write path without / with migration 0002\n")
    print("| step | without | with | change |")
    print("|---|---:|---:|---:|")
    writes = report["writes"]
    for step, key, unit in (
        ("send", "median_ms", "median ms"),
        ("claim", "median_ms", "median ms"),
        ("finish", "median_ms", "median ms"),
        ("send", "p95_ms", "p95 ms"),
        ("claim", "p95_ms", "p95 ms"),
        ("finish", "p95_ms", "p95 ms"),
        ("drain", "jobs_per_second", "jobs/s"),
    ):
        without = writes[PLAIN_SCHEMA][step][key]
        with_ = writes[DASHBOARD_SCHEMA][step][key]
        change = (with_ - without) / without * 100
        print(f"| {step} ({unit}) | {without:.3f} | {with_:.3f} | {change:+.1f}% |")
    print("\n## EXPLAIN (ANALYZE, BUFFERS)\n")
    print("| query | execution ms | planning ms | buffers hit/read | scans |")
    print("|---|---:|---:|---:|---|")
    for label, item in report["explain"].items():
        print(
            f"| {label} | {item['execution_ms']:.2f} | {item['planning_ms']:.2f} | "
            f"{item['shared_hit']}/{item['shared_read']} | {'; '.join(item['scans'])} |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="server to use")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs per schema")
    parser.add_argument(
        "--writes", type=int, default=500, help="jobs per write step and round"
    )
    parser.add_argument("--rounds", type=int, default=6, help="write rounds")
    parser.add_argument("--repeat", type=int, default=30, help="calls per read")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()

    dsn = recreate_database(args.dsn)
    report: dict[str, Any] = {
        "jobs": args.jobs,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        # Other processes on the machine skew every figure; these show how
        # busy it was (1-minute load averages at each phase).
        "load_average": {"start": os.getloadavg()[0]},
    }
    try:
        for schema in SCHEMAS:
            setup = pgjobs.create_job_system(config(dsn, schema))
            await setup.migrate()
            await setup.stop()
        report.update(prepare_schemas(dsn, args.jobs))

        report["load_average"]["writes"] = os.getloadavg()[0]
        report["writes"] = await measure_writes(dsn, args.rounds, args.writes)

        print("dashboard reads", flush=True)
        report["load_average"]["reads"] = os.getloadavg()[0]
        report["reads"] = await measure_reads(dsn, args.repeat)
        report["load_average"]["end"] = os.getloadavg()[0]
        report["explain"] = explain(dsn)
        report.update(sizes(dsn))
    finally:
        if not args.keep:
            drop_database(args.dsn)
    print_report(report)


if __name__ == "__main__":
    asyncio.run(main())
