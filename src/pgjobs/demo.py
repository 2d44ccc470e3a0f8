"""The demo: one job per file of a real directory tree, on a real PostgreSQL.

Each job reads one file and stores its SHA-256 digest and line counts. A file
that is not UTF-8 text raises, is retried, then fails, so the summary always
has a failure to show when the tree has one. A cron schedule with a seconds
field sends a heartbeat job every two seconds while the files are processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sys
import sysconfig
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg import sql
from pydantic import BaseModel

from pgjobs import embedded
from pgjobs._cli_output import job_detail, stats_table
from pgjobs.config import DSN_ENV_VAR, queue
from pgjobs.errors import PgJobsError
from pgjobs.system import JobSystem, create_job_system
from pgjobs.types import JobContext

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 2000
DEFAULT_TIMEOUT = 300.0
DEFAULT_SCHEMA = "pgjobs_demo"
DEMO_DATABASE = "pgjobs_demo"
BATCH_SIZE = 500
FILES_QUEUE = "files"
HEARTBEAT_QUEUE = "heartbeat"
# Folders of the standard library that hold installed packages or bytecode,
# not the library's own files.
SKIPPED_FOLDERS = frozenset({"__pycache__", "site-packages", "dist-packages"})

COUNT_SQL = """
SELECT status, count(*) FROM procrastinate_jobs
 WHERE queue_name = %(queue)s
 GROUP BY status
"""
TOTALS_SQL = """
SELECT count(*), sum((a.result ->> 'lines')::bigint),
       sum((a.result ->> 'bytes')::bigint)
  FROM pgjobs_attempts AS a
  JOIN procrastinate_jobs AS j ON j.id = a.job_id
 WHERE j.queue_name = %(queue)s AND a.outcome = 'succeeded'
"""


class FileJob(BaseModel):
    """Payload of the files queue: the absolute path of one file."""

    path: str


FILES = queue(FileJob, retry_limit=2, retry_delay=0.5, concurrency=4, timeout=60)
HEARTBEAT = queue(None, retry_limit=0, timeout=10)


def summarize_file(payload: FileJob) -> dict[str, Any]:
    """Return the SHA-256 digest, size and line counts of one UTF-8 file.

    Raises:
        UnicodeDecodeError: the file is not UTF-8 text.
        OSError: the file cannot be read.
    """
    data = Path(payload.path).read_bytes()
    text = data.decode("utf-8")
    lines = text.splitlines()
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "lines": len(lines),
        "blank_lines": sum(1 for line in lines if not line.strip()),
    }


async def record_heartbeat(payload: dict[str, Any], context: JobContext) -> float:
    """Return how late, in seconds, the heartbeat ran after its cron tick."""
    scheduled = context.scheduled_for or time.time()
    return round(time.time() - scheduled, 3)


def default_directory() -> Path:
    """Return the folder of the Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def list_files(root: Path, limit: int) -> list[Path]:
    """Return up to `limit` regular files under `root`, spread over the tree.

    Bytecode caches, installed packages and hidden folders are skipped. When
    the tree has more files than `limit`, an evenly spaced sample is taken
    from the sorted list, so every part of the tree is represented.
    """
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(
            name
            for name in subfolders
            if name not in SKIPPED_FOLDERS and not name.startswith(".")
        )
        for name in sorted(names):
            path = Path(folder, name)
            if path.is_file():
                found.append(path)
    if len(found) <= limit:
        return found
    step = len(found) / limit
    return [found[int(index * step)] for index in range(limit)]


@dataclass(frozen=True)
class DemoOptions:
    """Settings of a demo run: directory, file limit, schema and timeout."""

    directory: Path = field(default_factory=default_directory)
    limit: int = DEFAULT_LIMIT
    schema: str = DEFAULT_SCHEMA
    timeout: float = DEFAULT_TIMEOUT
    verbose: bool = False


class DemoError(PgJobsError, RuntimeError):
    """The demo could not run or did not finish."""


@contextlib.contextmanager
def database_url(stream: TextIO) -> Iterator[str]:
    """Yield `DATABASE_URL`, or the URL of a database on the embedded server.

    The embedded server is started for the demo and stopped when it ends.
    """
    dsn = os.environ.get(DSN_ENV_VAR)
    if dsn:
        yield dsn
        return
    print("Starting the embedded PostgreSQL server...", file=stream, flush=True)
    server = embedded.start()
    try:
        print(f"Server data: {server.data_dir}", file=stream, flush=True)
        yield server.ensure_database(DEMO_DATABASE)
    finally:
        server.stop()


def build_system(dsn: str, schema: str) -> JobSystem:
    """Return the demo's job system: a files queue and a heartbeat schedule."""
    jobs = create_job_system(
        {
            "dsn": dsn,
            "schema": schema,
            "queues": {FILES_QUEUE: FILES, HEARTBEAT_QUEUE: HEARTBEAT},
            "schedules": {
                HEARTBEAT_QUEUE: {"queue": HEARTBEAT_QUEUE, "cron": "*/2 * * * * *"}
            },
            # procrastinate sends NOTIFY for new jobs only, so a worker finds a
            # retry at its next poll; a short poll keeps retries prompt.
            "worker": {"polling_interval": 0.5, "graceful_timeout": 10.0},
        }
    )
    jobs.handler(FILES)(summarize_file)
    jobs.handler(HEARTBEAT)(record_heartbeat)
    return jobs


async def reset_schema(dsn: str, schema: str) -> None:
    """Drop the demo's schema, so that each run starts from an empty queue."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


class Progress:
    """A progress line: rewritten in place on a terminal, else printed now and then."""

    def __init__(self, stream: TextIO, total: int, *, every: float = 2.0) -> None:
        self.stream = stream
        self.total = total
        self.every = every
        self.in_place = stream.isatty()
        self.started = time.monotonic()
        self._last_print = 0.0
        self._last_line = ""

    def show(self, counts: dict[str, int], *, final: bool = False) -> None:
        """Print the counts, unless the stream is not a terminal and it is too soon."""
        failed = counts.get("failed", 0)
        processed = (
            sum(counts.values()) - counts.get("todo", 0) - counts.get("doing", 0)
        )
        remaining = self.total - processed
        elapsed = time.monotonic() - self.started
        rate = processed / elapsed if elapsed > 0 else 0.0
        line = (
            f"files: {processed}/{self.total} processed, {failed} failed, "
            f"{remaining} remaining ({rate:.0f} files/s, {elapsed:.1f} s)"
        )
        if self.in_place:
            end = "\n" if final else ""
            self.stream.write(f"\r{line}\x1b[K{end}")
            self.stream.flush()
            return
        now = time.monotonic()
        if line != self._last_line and (final or now - self._last_print >= self.every):
            print(line, file=self.stream, flush=True)
            self._last_print = now
            self._last_line = line


async def count_statuses(jobs: JobSystem, queue_name: str) -> dict[str, int]:
    """Return the number of jobs of `queue_name` in each status."""
    async with jobs.pool.connection() as conn:
        cursor = await conn.execute(COUNT_SQL, {"queue": queue_name})
        return {str(status): int(count) for status, count in await cursor.fetchall()}


async def send_files(jobs: JobSystem, files: Sequence[Path]) -> int:
    """Send one job per file, in batches of `BATCH_SIZE`; return how many."""
    sent = 0
    for start in range(0, len(files), BATCH_SIZE):
        batch = files[start : start + BATCH_SIZE]
        ids = await jobs.send_many(FILES, [FileJob(path=str(path)) for path in batch])
        sent += len(ids)
    return sent


async def wait_until_done(
    jobs: JobSystem, sending: asyncio.Task[int], progress: Progress
) -> None:
    """Show progress until every file job is finished."""
    while True:
        # Read before counting: every job is in the table once this is true.
        sent_all = sending.done()
        counts = await count_statuses(jobs, FILES_QUEUE)
        if sent_all:
            await sending
            if not counts.get("todo") and not counts.get("doing"):
                progress.show(counts, final=True)
                return
        progress.show(counts)
        await asyncio.sleep(0.2 if progress.in_place else 0.5)


async def describe_totals(jobs: JobSystem) -> str:
    """Return the files read and lines counted by the succeeded jobs."""
    async with jobs.pool.connection() as conn:
        cursor = await conn.execute(TOTALS_SQL, {"queue": FILES_QUEUE})
        row = await cursor.fetchone()
    files, lines, size = row if row is not None else (0, None, None)
    return (
        f"Read {files} text files: {lines or 0:,} lines, "
        f"{(size or 0) / 1_000_000:.1f} MB"
    )


async def describe_failed_job(jobs: JobSystem, *, tracebacks: bool) -> str:
    """Return the details of one failed file job, with its errors."""
    page = await jobs.dashboard.get_recent_jobs(
        queue=FILES_QUEUE, state="failed", per_page=1
    )
    if not page.jobs:
        return "No file job failed: every file was UTF-8 text."
    detail = await jobs.dashboard.get_job_by_id(page.jobs[0].id)
    if detail is None:
        return f"Failed job {page.jobs[0].id} was deleted before it could be shown."
    return "One of the failed jobs:\n\n" + job_detail(detail, tracebacks=tracebacks)


async def run(dsn: str, options: DemoOptions, *, out: TextIO, err: TextIO) -> None:
    """Run the demo on the database at `dsn`; print progress to `err`.

    Raises:
        DemoError: the directory has no files, or the jobs did not finish.
    """
    directory = options.directory.expanduser().resolve()
    if not directory.is_dir():
        raise DemoError(f"directory {str(directory)!r} not found; pass a folder")
    files = list_files(directory, options.limit)
    if not files:
        raise DemoError(f"directory {str(directory)!r} has no files to process")

    await reset_schema(dsn, options.schema)
    jobs = build_system(dsn, options.schema)
    try:
        await jobs.migrate()
        await jobs.init_jobs()
        print(
            f"Processing {len(files)} files of {directory} "
            f"(schema {options.schema!r}, heartbeat every 2 s)",
            file=err,
            flush=True,
        )
        progress = Progress(err, len(files))
        sending = asyncio.create_task(send_files(jobs, files), name="demo-send")
        try:
            async with asyncio.timeout(options.timeout):
                await wait_until_done(jobs, sending, progress)
        except TimeoutError:
            if progress.in_place:
                print(file=err)
            raise DemoError(
                f"the file jobs did not finish within {options.timeout:g} s; "
                "raise --timeout or lower --limit"
            ) from None
        finally:
            if not sending.done():
                sending.cancel()
        elapsed = time.monotonic() - progress.started

        print(f"\nDone in {elapsed:.1f} s.\n", file=out)
        print(stats_table(await jobs.dashboard.get_stats()), file=out)
        print(f"\n{await describe_totals(jobs)}", file=out)
        print(
            f"\n{await describe_failed_job(jobs, tracebacks=options.verbose)}",
            file=out,
            flush=True,
        )
    finally:
        await jobs.stop()


def main(options: DemoOptions) -> None:
    """Run the demo on `DATABASE_URL`, or else on the embedded server."""
    with database_url(sys.stderr) as dsn:
        asyncio.run(run(dsn, options, out=sys.stdout, err=sys.stderr))
