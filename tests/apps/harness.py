"""Start worker subprocesses of `tests.apps.worker_app` and read their runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]

CREATE_RUNS_SQL = """
CREATE TABLE IF NOT EXISTS public.runs (
    id serial PRIMARY KEY,
    job_id bigint NOT NULL,
    attempt integer NOT NULL,
    pid integer NOT NULL,
    event text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def create_runs_table(dsn: str) -> None:
    """Create `public.runs`, where the app's handler records its runs."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(CREATE_RUNS_SQL)


def record_run(dsn: str, context: Any, event: str) -> None:
    """Insert a row into `public.runs` for a job run in the test process."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO public.runs (job_id, attempt, pid, event) "
            "VALUES (%s, %s, %s, %s)",
            (context.job_id, context.attempt, os.getpid(), event),
        )


def runs(dsn: str, job_id: int | None = None) -> list[tuple[Any, ...]]:
    """Return (job_id, attempt, pid, event) rows in insertion order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(
            "SELECT job_id, attempt, pid, event FROM public.runs "
            "WHERE %(job)s::bigint IS NULL OR job_id = %(job)s ORDER BY id",
            {"job": job_id},
        )
        return cursor.fetchall()


def start_worker(
    dsn: str,
    *,
    cli: bool = False,
    retry_limit: int = 2,
    graceful: float = 5.0,
) -> subprocess.Popen[bytes]:
    """Start a worker process of the app; `cli` runs it through `pgjobs worker`."""
    env = {
        **os.environ,
        "WORKER_APP_DSN": dsn,
        "WORKER_APP_RETRY_LIMIT": str(retry_limit),
        "WORKER_APP_GRACEFUL": str(graceful),
        "PYTHONPATH": str(ROOT),
    }
    if cli:
        command = ["-m", "pgjobs", "worker", "tests.apps.worker_app:jobs"]
    else:
        command = ["-m", "tests.apps.worker_app"]
    return subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    """Kill `process` if it still runs and reap it."""
    if process.poll() is None:
        process.kill()
    process.communicate()


def start_init_process(dsn: str) -> subprocess.Popen[str]:
    """Start `tests.apps.init_only`, which runs init_jobs once on `dsn`."""
    env = {**os.environ, "WORKER_APP_DSN": dsn, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.apps.init_only"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
