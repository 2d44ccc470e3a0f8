"""Soak benchmark: 100,000 jobs through one worker process, with its memory.

Run with `.venv/bin/python bench/soak.py [--dsn DSN] [--jobs N]`. The script
creates a scratch database (`pgjobs_soak`) on the server that `--dsn`
names and queues every job with `send_many`. Then it starts one worker
process (`bench/soak.py worker`, which runs the workers until SIGTERM) and
samples that process's resident set size (VmRSS in /proc) while it drains
the queue: when it is ready, after the first 1,000 jobs, and at each tenth.
At the end it stops the worker with SIGTERM and drops the database.

The handler does little, so pgjobs and procrastinate dominate the memory
and time: every 10th job returns a result (stored in pgjobs_attempts) and
every 100th fails on its first attempt and is retried (an error, its
traceback and a retry recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import sql

import pgjobs

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "pgjobs_soak"
QUEUE = "soak"
BATCH = 5_000
WARM_UP_JOBS = 1_000


def build_jobs(dsn: str, concurrency: int) -> pgjobs.JobSystem:
    """Return the job system that both the driver and the worker use."""
    return pgjobs.create_job_system(
        {
            "dsn": dsn,
            "queues": {QUEUE: pgjobs.queue(concurrency=concurrency, retry_limit=1)},
            "worker": {"polling_interval": 0.5},
        }
    )


class SoakFailure(Exception):
    """The failure that every 100th job raises on its first attempt."""


async def handle(payload: dict[str, Any], context: pgjobs.JobContext) -> Any:
    """Run one soak job: fail the first try of every 100th, return every 10th."""
    number = int(payload["n"])
    if number % 100 == 0 and context.attempt == 1:
        raise SoakFailure(f"job {number} fails its first attempt")
    if number % 10 == 0:
        return {"n": number}
    return None


async def run_worker(dsn: str, concurrency: int) -> None:
    """Run the worker until SIGTERM, then stop gracefully."""
    jobs = build_jobs(dsn, concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await jobs.init_jobs({QUEUE: handle})
    print("ready", flush=True)
    await stop.wait()
    await jobs.stop()


def rss_kib(pid: int) -> int:
    """Return the resident set size of process `pid`, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS line for process {pid}")


@dataclass(frozen=True)
class Sample:
    """The worker's memory after `finished` jobs, `seconds` into the drain."""

    label: str
    finished: int
    seconds: float
    rss_mib: float


def reset_database(server_dsn: str) -> str:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        name = sql.Identifier(DATABASE)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    return psycopg.conninfo.make_conninfo(server_dsn, dbname=DATABASE)


def drop_database(server_dsn: str) -> None:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(DATABASE)
            )
        )


def finished_jobs(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pgjobs.procrastinate_jobs WHERE status = 'succeeded'"
    ).fetchone()
    assert row is not None
    return int(row[0])


async def enqueue(dsn: str, count: int, concurrency: int) -> None:
    jobs = build_jobs(dsn, concurrency)
    await jobs.migrate()
    for start in range(0, count, BATCH):
        stop = min(start + BATCH, count)
        await jobs.send_many(QUEUE, [{"n": n} for n in range(start, stop)])
    await jobs.stop()
    # Autovacuum would analyze the table soon after such a bulk insert, but
    # it may be off on a test server. With the statistics of an empty table,
    # PostgreSQL 15 plans procrastinate's fetch as a sort of every queued
    # job (about 0.1 s per fetch at 90,000 jobs) instead of an index scan.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE pgjobs.procrastinate_jobs")


def start_worker(dsn: str, concurrency: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "worker",
            "--dsn",
            dsn,
            "--concurrency",
            str(concurrency),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        raise RuntimeError(f"the worker did not start: {line!r}")
    return process


def drain(dsn: str, process: subprocess.Popen[str], total: int) -> list[Sample]:
    """Sample the worker's RSS while it runs `total` jobs; return the samples."""
    marks = sorted({WARM_UP_JOBS, *(total * tenth // 10 for tenth in range(1, 11))})
    samples = [Sample("ready", 0, 0.0, rss_kib(process.pid) / 1024)]
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while marks:
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited with {process.returncode}")
            done = finished_jobs(conn)
            while marks and done >= marks[0]:
                label = "first 1,000" if marks[0] == WARM_UP_JOBS else f"{marks[0]:,}"
                seconds = time.monotonic() - started
                samples.append(
                    Sample(label, done, seconds, rss_kib(process.pid) / 1024)
                )
                print(f"{label:>12}: {samples[-1].rss_mib:7.1f} MiB", flush=True)
                marks.pop(0)
            time.sleep(0.2)
    return samples


def server_settings(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), "
            "current_setting('autovacuum'), current_setting('fsync')"
        ).fetchone()
    assert row is not None
    return f"PostgreSQL {row[0]} (autovacuum {row[1]}, fsync {row[2]})"


def report(samples: list[Sample], total: int, concurrency: int, server: str) -> str:
    lines = [
        f"{total:,} jobs, one worker process, concurrency {concurrency}; "
        f"Python {platform.python_version()}, pgjobs {pgjobs.__version__}, "
        f"{server}",
        "",
        "| jobs finished | seconds | worker RSS (MiB) |",
        "|---:|---:|---:|",
    ]
    for sample in samples:
        lines.append(
            f"| {sample.label} | {sample.seconds:.0f} | {sample.rss_mib:.1f} |"
        )
    last = samples[-1]
    warm = next(sample for sample in samples if sample.finished >= WARM_UP_JOBS)
    rate = (last.finished - warm.finished) / max(last.seconds - warm.seconds, 1e-9)
    lines.append("")
    lines.append(
        f"Growth after the first 1,000 jobs: {last.rss_mib - warm.rss_mib:+.1f} MiB; "
        f"throughput {rate:.0f} jobs/s."
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=["drive", "worker"], default="drive")
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL", DEFAULT_DSN))
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print samples as JSON")
    args = parser.parse_args()

    if args.mode == "worker":
        asyncio.run(run_worker(args.dsn, args.concurrency))
        return 0

    dsn = reset_database(args.dsn)
    server = server_settings(dsn)
    try:
        asyncio.run(enqueue(dsn, args.jobs, args.concurrency))
        process = start_worker(dsn, args.concurrency)
        try:
            samples = drain(dsn, process, args.jobs)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    finally:
        drop_database(args.dsn)

    if args.json:
        print(json.dumps([asdict(sample) for sample in samples], indent=2))
    print(report(samples, args.jobs, args.concurrency, server))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
